"""Lossless compression: the container, the arithmetic-coding loop, data <-> token streams,
and the files of `tokar compress` / `tokar decompress`."""
