"""The DATA of `tokar detect` and `tokar detect-eval`, read as the run's tokenizer expects it.

- images: one image file, a folder of them (.png, .jpg, .bmp, .gif, .webp), or a `.npz` holding
  one uint8 array (N, H, W) (or (N, H, W, 3)) of 8-bit images. Each must have the run's size and
  mode (grayscale or colour): anything else is an error naming the file and both shapes, rather
  than a silent resize or conversion that would make an outlier look normal.
- text: one UTF-8 file or every UTF-8 file under a folder, cut into passages of `passage`
  characters (non-overlapping; a shorter remainder is left out, since bits per character depend
  on the length); `passage` 0 keeps whole files.
- audio: one file or every .wav/.flac/.ogg under a folder (the tokenizer reads and resamples).
Ids name the file (and `@offset` of a passage, `[i]` of an array's image).

`tokar score DATA` reads its images and audio through the same functions.

Not here: Hugging Face data sets as DATA (score those through a recipe), video.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data.audio import AUDIO_SUFFIXES
from pipelines.io.safe import check_regular_file, read_image, read_text
from plugins.errors import DataError
from tokenizers_ar.images import is_colour

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
DEFAULT_PASSAGE = 256  # characters per text passage


def read_data(path: str | Path, tokenizer: Any,
              passage: int | None = DEFAULT_PASSAGE) -> tuple[list[str], list[Any]]:
    """(ids, examples) of DATA for a run with `tokenizer`."""
    path = Path(path)
    if passage is not None and passage < 0:
        raise DataError(f"the passage length must be 0 (whole files) or more, got {passage}.")
    if not path.exists():
        raise DataError(f"{path} does not exist.")
    modality = tokenizer.modality
    if modality == "image":
        ids, examples = read_npz(path) if path.suffix == ".npz" else read_images(path)
        check_images(ids, examples, tokenizer)
        return ids, examples
    if modality == "text":
        ids, texts = read_texts(path)
        return cut_passages(ids, texts, passage)
    if modality == "audio":
        paths = read_audio_paths(path)
        return paths, paths
    raise DataError(f"detection does not read {modality} files.")


def read_images(path: Path) -> tuple[list[str], list[Any]]:
    """One image file or the images of a folder, each checked (a regular file, a header whose size
    fits in memory) before it is decoded."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
        if path.is_dir() else [path]
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))} or a .npz) in {path}.")
    return [str(f) for f in files], [read_image(f) for f in files]


def read_audio_paths(path: Path) -> list[str]:
    """One audio file or every audio file under a folder, as paths: the tokenizer reads (and
    resamples) them."""

    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES) \
        if path.is_dir() else [path]
    if not files:
        raise DataError(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in {path}.")
    return [str(check_regular_file(f, "audio file")) for f in files]


def read_npz(path: Path) -> tuple[list[str], list[Any]]:
    """The one uint8 array of an .npz as 8-bit PIL images."""
    from PIL import Image

    try:
        with np.load(path) as arrays:
            names = list(arrays.files)
            if len(names) != 1:
                raise DataError(f"{path} holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                                "detection reads an .npz with exactly one uint8 array (N, H, W).")
            array = arrays[names[0]]
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc}).") from exc
    if array.dtype != np.uint8:
        raise DataError(f"{path}: the array is {array.dtype}; expected uint8 images with values "
                        "0..255 (scale and cast them, e.g. (x * 255).astype(np.uint8)).")
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[-1] == 3)):
        raise DataError(f"{path}: an array of shape {array.shape}; expected (N, H, W) grayscale "
                        "or (N, H, W, 3) colour images.")
    if len(array) == 0:
        raise DataError(f"{path}: the array holds no images.")
    mode = "L" if array.ndim == 3 else "RGB"
    return ([f"{path}[{i}]" for i in range(len(array))],
            [Image.fromarray(a, mode=mode) for a in array])


def check_images(ids: list[str], examples: list[Any], tokenizer: Any) -> None:
    """Every image has the run's size and mode, or an error names the first that does not."""
    from PIL import Image


    height, width = getattr(tokenizer, "height", None), getattr(tokenizer, "width", None)
    channels = getattr(tokenizer, "channels", None)
    want_mode = {1: "grayscale", 3: "colour (RGB)"}.get(channels)
    for id_, image in zip(ids, examples, strict=True):
        if isinstance(image, Image.Image):
            background = getattr(getattr(tokenizer, "config", None), "background", "white")
            mode = "colour (RGB)" if is_colour(image, background) else "grayscale"
            size = image.size
        else:
            array = np.asarray(image)
            size = (array.shape[1], array.shape[0]) if array.ndim >= 2 else None
            mode = "colour (RGB)" if array.ndim == 3 and array.shape[-1] == 3 else "grayscale"
        if height is not None and size != (width, height):
            raise DataError(f"{id_}: a {size[0]}x{size[1]} image (width x height), but the run "
                            f"models {width}x{height} images; resize the images to {width}x{height}.")
        if want_mode is not None and mode != want_mode:
            raise DataError(f"{id_}: a {mode} image, but the run models {want_mode} images; "
                            f"convert the images (PIL: .convert('{'L' if channels == 1 else 'RGB'}')).")


def read_texts(path: Path) -> tuple[list[str], list[str]]:
    """One UTF-8 file, or every UTF-8 file under a folder (others are skipped)."""
    if not path.is_dir():
        return [str(path)], [read_text(path, "text file")]
    ids, texts = [], []
    for f in sorted(p for p in path.rglob("*") if p.is_file()):  # is_file: no FIFOs, no devices
        if any(part.startswith(".") for part in f.relative_to(path).parts):
            continue
        try:
            texts.append(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            logger.debug("skipping %s: not UTF-8 text", f)
            continue
        ids.append(str(f))
    if not ids:
        raise DataError(f"no UTF-8 text files in {path}.")
    return ids, texts


def cut_passages(ids: list[str], texts: list[str],
                 passage: int | None) -> tuple[list[str], list[str]]:
    """Non-overlapping passages of exactly `passage` characters (None or 0: whole texts)."""
    if not passage:
        keep = [i for i, t in enumerate(texts) if t]
        if not keep:
            raise DataError("the text is empty; there is nothing to check.")
        return [ids[i] for i in keep], [texts[i] for i in keep]
    out_ids, out = [], []
    for id_, text in zip(ids, texts, strict=True):
        for start in range(0, len(text) - passage + 1, passage):
            out_ids.append(f"{id_}@{start}")
            out.append(text[start : start + passage])
    if not out:
        longest = max((len(t) for t in texts), default=0)
        raise DataError(f"no text is {passage} characters long (the longest has {longest}); "
                        "use a shorter passage length (--passage).")
    return out_ids, out
