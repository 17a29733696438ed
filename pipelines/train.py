"""The one training loop: teacher-forced maximum likelihood on Hugging Face Accelerate.

The same code runs on a CPU, one GPU, several GPUs (`accelerate launch`) and several machines:
Accelerate places the model, shards the batches and handles mixed precision and gradient
accumulation. AdamW with decoupled weight decay (none on biases, norms and embeddings), linear
warmup then cosine decay to `min_lr`, gradient clipping. Every `eval_every` steps the validation
loss is reported in the data's own units (bits per character, per subpixel...); metrics go to
`metrics.jsonl`, checkpoints are written atomically (pipelines/checkpoint.py).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pipelines.checkpoint import save_checkpoint
from pipelines.data import TokenData
from pipelines.recipe import TrainConfig
from plugins.errors import DataError
from priors.base import Prior, token_nll

logger = logging.getLogger(__name__)
LN2 = math.log(2)


# -- batches -------------------------------------------------------------------------------------
class Windows(Dataset):
    """Every window of `seq_len` consecutive tokens of a stream (nanoGPT's random crops)."""

    def __init__(self, stream: np.ndarray, seq_len: int, starts: np.ndarray | None = None):
        self.stream = torch.from_numpy(stream)
        self.seq_len = seq_len
        self.starts = starts  # fixed window starts (evaluation), else every position

    def __len__(self) -> int:
        if self.starts is not None:
            return len(self.starts)
        return max(0, len(self.stream) - self.seq_len + 1)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        start = int(self.starts[i]) if self.starts is not None else i
        return {"ids": self.stream[start : start + self.seq_len]}


class Rows(Dataset):
    """One fixed-length row of tokens per example (grids), with its class label if any."""

    def __init__(self, data: TokenData, limit: int | None = None):
        n = len(data) if limit is None else min(limit, len(data))
        self.tokens = torch.from_numpy(data.tokens[:n])
        self.labels = torch.from_numpy(data.labels[:n]) if data.labels is not None else None

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"ids": self.tokens[i]}
        if self.labels is not None:
            item["label"] = self.labels[i]
        return item


def train_dataset(data: TokenData, seq_len: int) -> Dataset:
    ds = Windows(data.tokens, seq_len) if data.is_stream else Rows(data)
    if len(ds) == 0:
        raise DataError(
            f"the training split has {data.n_tokens} tokens: too few for one training window of "
            f"{seq_len}; use more data or a smaller train.seq_len / prior.block_size."
        )
    return ds


def eval_dataset(data: TokenData, seq_len: int, batch_size: int, batches: int | None) -> Dataset:
    """A fixed validation set, the same at every evaluation so that numbers compare."""
    if data.is_stream:
        n_windows = max(0, len(data.tokens) - seq_len + 1)
        if batches is None:  # non-overlapping windows covering the split
            starts = np.arange(0, n_windows, seq_len)
        else:  # evenly spread windows
            starts = np.linspace(0, max(n_windows - 1, 0), num=min(n_windows, batches * batch_size))
        return Windows(data.tokens, seq_len, starts.astype(np.int64))
    return Rows(data, None if batches is None else batches * batch_size)


def forever(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from loader


# -- optimisation ----------------------------------------------------------------------------------
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices of Linear/conv layers; never biases, norms or embeddings."""
    no_decay_types = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, no_decay_types) or name.endswith("bias") or p.dim() < 2:
                no_decay.append(p)
            else:
                decay.append(p)
    # Tied weights (GPT's lm_head = wte) were seen first as an embedding: no decay, like GPT-2's
    # embeddings in most reproductions.
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_lambda(cfg: TrainConfig):
    """Multiplier of `lr` at each step: linear warmup, then cosine decay to min_lr."""
    min_ratio = (cfg.min_lr if cfg.min_lr is not None else cfg.lr / 10) / cfg.lr

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return min_ratio + (1 - min_ratio) * cosine

    return factor


# -- the loop --------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    nats_per_token: float
    bits_per_unit: float
    unit: str
    tokens: int


@dataclass
class TrainResult:
    steps: int
    train_loss: float  # nats per token, mean of the last logging interval
    val: EvalResult | None
    seconds: float
    tokens_per_second: float


def _cond(batch: dict[str, torch.Tensor], prior: Prior) -> torch.Tensor | None:
    return batch.get("label") if prior.num_classes else None


@torch.no_grad()
def evaluate(accelerator: Accelerator, model: nn.Module, loader: DataLoader, prior: Prior,
             units_per_token: float, unit: str) -> EvalResult:
    was_training = model.training
    model.eval()
    total_nats = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    total_tokens = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for batch in loader:
        ids = batch["ids"]
        nats = token_nll(model(ids, _cond(batch, prior)), ids).sum(dim=1)  # (B,)
        nats, n = accelerator.gather_for_metrics((nats, torch.full_like(nats, ids.size(1))))
        total_nats += nats.double().sum()
        total_tokens += n.double().sum()
    model.train(was_training)
    nats_per_token = (total_nats / total_tokens.clamp(min=1)).item()
    return EvalResult(nats_per_token, nats_per_token / units_per_token / LN2, unit, int(total_tokens))


def train(
    prior: Prior,
    train_data: TokenData,
    val_data: TokenData | None,
    cfg: TrainConfig,
    run_dir: Path,
    unit: str,
    progress: bool = True,
) -> TrainResult:
    """Train `prior` in place; writes metrics.jsonl and checkpoints/ under `run_dir`."""
    run_dir = Path(run_dir)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision,
                              gradient_accumulation_steps=cfg.grad_accum)
    set_seed(cfg.seed)
    seq_len = cfg.seq_len or prior.max_length
    if train_data.is_stream and seq_len is None:
        raise DataError(f"prior '{prior.name}' has no block_size: set train.seq_len in the recipe.")
    if prior.max_length is not None and seq_len and seq_len > prior.max_length:
        raise DataError(f"train.seq_len={seq_len} exceeds the prior's block_size {prior.max_length}.")

    train_ds = train_dataset(train_data, seq_len)
    sampler = RandomSampler(train_ds, generator=torch.Generator().manual_seed(cfg.seed))
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler,
                              drop_last=len(train_ds) >= cfg.batch_size)
    val_loader = None
    if val_data is not None and len(val_data):
        val_ds = eval_dataset(val_data, seq_len, cfg.batch_size, cfg.eval_batches)
        if len(val_ds):
            val_loader = DataLoader(val_ds, batch_size=cfg.batch_size)
    units_per_token = (val_data.n_units / val_data.n_tokens) if val_loader is not None else 1.0

    use_fused = accelerator.device.type == "cuda"
    optimizer = torch.optim.AdamW(param_groups(prior, cfg.weight_decay), lr=cfg.lr,
                                  betas=cfg.betas, fused=use_fused)
    # The schedule counts optimizer steps; stepped by hand so it is independent of process count.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    model, optimizer, train_loader = accelerator.prepare(prior, optimizer, train_loader)
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)

    with logging_redirect_tqdm():
        return _loop(cfg, accelerator, prior, model, optimizer, scheduler, forever(train_loader),
                     val_loader, units_per_token, unit, run_dir, progress)


def _loop(cfg, accelerator, prior, model, optimizer, scheduler, batches, val_loader,
          units_per_token, unit, run_dir, progress) -> TrainResult:
    metrics_path = run_dir / "metrics.jsonl"
    ckpt_every = cfg.checkpoint_every or cfg.eval_every
    is_main = accelerator.is_main_process

    def log(record: dict) -> None:
        if is_main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    bar = tqdm(total=cfg.max_steps, disable=not (progress and is_main), desc="training",
               unit="step", dynamic_ncols=True)
    model.train()
    start = time.perf_counter()
    window_loss, window_batches, window_tokens, window_start = 0.0, 0, 0, start
    last_loss = float("nan")
    total_tokens, val_result = 0, None
    for step in range(1, cfg.max_steps + 1):
        for _ in range(cfg.grad_accum):
            batch = next(batches)
            with accelerator.accumulate(model):
                # Through model(...), not prior.loss: a DDP wrapper syncs gradients in forward.
                ids = batch["ids"]
                loss = token_nll(model(ids, _cond(batch, prior)), ids).mean()
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.grad_clip is not None:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            window_loss += loss.item()
            window_batches += 1
            window_tokens += batch["ids"].numel() * accelerator.num_processes
        scheduler.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(
                f"training loss became {loss.item()} at step {step}; lower train.lr or enable "
                "train.grad_clip. The last checkpoint in checkpoints/ is unaffected."
            )

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            now = time.perf_counter()
            last_loss = window_loss / window_batches
            tps = window_tokens / max(now - window_start, 1e-9)
            total_tokens += window_tokens
            log({"step": step, "split": "train", "loss": last_loss,
                 "lr": scheduler.get_last_lr()[0], "tokens_per_s": tps,
                 "elapsed_s": now - start})
            bar.set_postfix(loss=f"{last_loss:.3f}", tok_s=f"{tps:,.0f}")
            window_loss, window_batches, window_tokens, window_start = 0.0, 0, 0, now

        if val_loader is not None and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            val_result = evaluate(accelerator, model, val_loader, prior, units_per_token, unit)
            log({"step": step, "split": "val", "loss": val_result.nats_per_token,
                 f"bits_per_{unit}": val_result.bits_per_unit,
                 "elapsed_s": time.perf_counter() - start})
            logger.info("step %d: validation %.4f nats/token, %.4f bits/%s", step,
                        val_result.nats_per_token, val_result.bits_per_unit, unit)

        if (step % ckpt_every == 0 or step == cfg.max_steps) and is_main:
            save_checkpoint(run_dir / "checkpoints", step, accelerator.unwrap_model(model),
                            optimizer, scheduler,
                            {"val": asdict(val_result) if val_result else None},
                            keep=cfg.keep_checkpoints)
        bar.update(1)
    bar.close()
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - start
    return TrainResult(cfg.max_steps, last_loss, val_result, seconds, total_tokens / seconds)
