"""Training on corpora larger than memory: Hugging Face `datasets` streaming.

The training split stays an `IterableDataset`: examples are shuffled in a buffer (re-seeded each
epoch), split across processes by node (`datasets.distributed.split_dataset_by_node`), tokenized
on the fly and, for sequence layouts, concatenated (EOS between documents if the tokenizer has
one) and cut into windows of `seq_len` tokens. Nothing is tokenized ahead of time or cached.

Resuming is exact: the stream is replayed up to the number of batches already consumed (the cost
is reading that data again; `datasets`' own state_dict would lose the shuffle buffer).
The validation split is small and materialised, and goes through the ordinary cached path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node

from plugins.errors import DataError, TokenizerError
from tokenizers_ar.base import Layout, Tokenizer


@dataclass
class TokenStream:
    """A training split read lazily: the examples and the tokenizer that will encode them."""

    examples: datasets.IterableDataset  # column "example" (+ "label")
    tokenizer: Tokenizer
    layout: Layout
    shuffle_buffer: int = 10_000

    @property
    def is_sequence(self) -> bool:
        return self.layout.kind == "seq"


class StreamBatches:
    """Batches from a TokenStream for one process, forever, starting after `consumed`."""

    def __init__(self, stream: TokenStream, seq_len: int, batch_size: int, seed: int,
                 rank: int, world_size: int, device: torch.device):
        self.stream, self.seq_len, self.batch_size = stream, seq_len, batch_size
        self.seed, self.device = seed, device
        self.shard = split_dataset_by_node(stream.examples, rank=rank, world_size=world_size)

    def _items(self) -> Iterator[dict[str, torch.Tensor]]:
        """Training items (windows or rows), epoch after epoch."""
        tok, epoch, seen_any = self.stream.tokenizer, 0, False
        while True:
            ds = self.shard.shuffle(seed=self.seed, buffer_size=self.stream.shuffle_buffer)
            ds.set_epoch(epoch)
            buffer: list[np.ndarray] = []
            buffered = 0
            for example in ds:
                seen_any = True
                try:
                    encoded = tok.encode(example["example"])
                    # flat positions: (T,) ids, or (T, D) reals for continuous layouts
                    dims = self.stream.layout.dims
                    ids = (encoded.reshape(-1, dims) if dims else encoded.reshape(-1)).numpy()
                except TokenizerError as exc:
                    raise TokenizerError(
                        f"{exc} With streamed data the tokenizer is fitted on the head of the "
                        "stream only: give it a fixed vocabulary (tokenizer.vocab) or unk=true."
                    ) from exc
                if not self.stream.is_sequence:
                    item = {"ids": torch.from_numpy(ids)}
                    if "label" in example:
                        item["label"] = torch.tensor(example["label"])
                    yield item
                    continue
                buffer.append(ids)
                buffered += len(ids)
                if tok.eos_id is not None:
                    buffer.append(np.array([tok.eos_id]))
                    buffered += 1
                if buffered >= self.seq_len:
                    flat = np.concatenate(buffer)
                    n = len(flat) // self.seq_len
                    for i in range(n):
                        yield {"ids": torch.from_numpy(flat[i * self.seq_len : (i + 1) * self.seq_len])}
                    rest = flat[n * self.seq_len :]
                    buffer, buffered = [rest], len(rest)
            if not seen_any:
                raise DataError("the streamed training split yielded no examples for this process.")
            epoch += 1

    def iterate(self, consumed: int) -> Iterator[dict[str, torch.Tensor]]:
        items = self._items()
        batch: list[dict[str, torch.Tensor]] = []
        index = 0
        for item in items:
            batch.append(item)
            if len(batch) < self.batch_size:
                continue
            if index >= consumed:  # replaying up to the resume point costs reading, not training
                yield {k: torch.stack([b[k] for b in batch]).to(self.device) for k in batch[0]}
            index += 1
            batch = []
