"""The one training loop: teacher-forced maximum likelihood on Hugging Face Accelerate.

The same code runs on a CPU, one GPU, several GPUs and several machines (`accelerate launch`,
`torchrun`): Accelerate places the model, shards batches across processes, averages gradients and
handles mixed precision and gradient accumulation. `train.batch_size` is per process.

- AdamW (fused: one kernel per step over all tensors, on the CPU as on CUDA) with decoupled
  weight decay, none on biases, norms and embeddings; linear warmup then cosine decay to
  `min_lr`; gradient clipping.
- Validation every `eval_every` steps, reported in the data's own units (bits per character, per
  subpixel...), reduced across processes; early stopping on it if asked.
- Exact resume: a checkpoint holds weights, optimizer, scheduler, every process's RNG state and the
  number of batches consumed; the batch order depends only on the seed (pipelines/data/batches.py), so
  a resumed run reaches the weights an uninterrupted one would.
- Opt-in scheduled sampling (`train.scheduled_sampling`, pipelines/training/scheduled_sampling.py): the
  loss of a batch whose inputs are partly the model's own samples.
- Guards: a NaN/inf loss stops the run naming the step and the last good checkpoint; a failed save
  (disk full) never touches earlier checkpoints; what an evaluation writes (samples) runs after
  that step's checkpoint, so it can never cost the step.
Only the main process writes metrics.jsonl, trackers, checkpoints (plus one RNG file per process).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import GradientAccumulationPlugin, set_seed
from torch import nn
from tqdm.contrib.logging import logging_redirect_tqdm

from pipelines.data import batches
from pipelines.data.sources import TokenData
from pipelines.data.streaming import StreamBatches, TokenStream
from pipelines.io import atomic
from pipelines.io.atomic import finite
from pipelines.io.progress import budget_total, progress_bar
from pipelines.io.safe import writing
from pipelines.recipe.loader import TrainConfig
from pipelines.scoring import LN2, Score, score_batches
from pipelines.training import checkpoint
from pipelines.training.scheduled_sampling import ScheduledSampling
from plugins.errors import DataError, TokarError
from priors.base import Prior
from priors.likelihood import token_nll

logger = logging.getLogger(__name__)
__all__ = ["LN2", "TrainResult", "Trainer", "make_accelerator", "process_state"]


def process_state() -> PartialState:
    """This process's place in a launch (`torchrun`, `accelerate launch`, or none).

    Launched as several processes on a machine without GPUs, Accelerate joins them into one
    process group (gloo) only when told to use the CPU (ACCELERATE_USE_CPU=1); without it each
    process would silently train alone. tokar asks for it, then checks the group really formed.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cpu = world > 1 and not torch.cuda.is_available()
    if cpu:
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")  # read again by AcceleratorState
    state = PartialState(cpu=cpu)
    if world > 1 and state.num_processes != world:
        raise TokarError(
            f"launched as {world} processes but Accelerate sees {state.num_processes}; on CPUs "
            "set ACCELERATE_USE_CPU=1 (or pass --multi_gpu to accelerate launch on GPUs)."
        )
    return state


def make_accelerator(cfg: TrainConfig, run_dir: Path | None = None) -> Accelerator:
    """An Accelerator for `cfg`. The distributed state (process group) is kept; the per-run
    settings (mixed precision, accumulation) may differ from an earlier run in this process."""
    process_state()
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(
        mixed_precision=cfg.mixed_precision,
        # An optimizer step every grad_accum micro-batches, never forced at the end of an epoch:
        # steps then stay aligned with the schedule and with checkpoints (exact resume).
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=cfg.grad_accum, sync_with_dataloader=False),
        log_with=cfg.log_with or None,
        project_dir=str(run_dir / "logs") if run_dir is not None and cfg.log_with else None,
    )


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay the weight matrices of Linear/conv layers; never biases, norms or embeddings."""
    no_decay_types = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))  # a tied weight (GPT's lm_head = wte) counts once, as an embedding
            if isinstance(module, no_decay_types) or name.endswith("bias") or p.dim() < 2:
                no_decay.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Multiplier of `lr` at each step: linear warmup, then cosine decay to min_lr."""
    min_ratio = (cfg.min_lr if cfg.min_lr is not None else cfg.lr / 10) / cfg.lr

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass
class TrainResult:
    steps: int
    train_loss: float  # nats per token, mean of the last logging interval
    val: Score | None
    seconds: float
    tokens_per_second: float
    best_val_loss: float | None = None
    stopped_early: bool = False
    # the limit that ended the run: "max_steps", "max_seconds" (its time budget) or
    # "early_stopping"
    stopped_by: str = "max_steps"


@dataclass
class TrainState:
    """What a checkpoint must hold besides tensors to continue exactly."""

    step: int = 0
    batches_consumed: int = 0  # per process, micro-batches
    best_val_loss: float | None = None
    evals_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)  # validation results so far


def fusable(prior: torch.nn.Module, device: torch.device) -> bool:
    """Whether AdamW's fused kernel can take every parameter: a CPU or CUDA device and real
    floating-point weights. One kernel instead of the foreach path's dozen passes over every
    tensor saves a few percent of a step (benchmarks/optimizer_fused.py); the foreach path stays
    for anything else (complex weights, other devices)."""
    return device.type in ("cpu", "cuda") and all(
        p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) for p in prior.parameters())


class Trainer:
    def __init__(self, prior: Prior, train_data: TokenData | TokenStream, val_data: TokenData | None,
                 cfg: TrainConfig, run_dir: Path, unit: str, accelerator: Accelerator,
                 progress: bool = True, on_eval: Callable[[int], None] | None = None,
                 offset_nats: float = 0.0,
                 augment: Callable[[dict[str, torch.Tensor], int], dict[str, torch.Tensor]] | None = None):
        self.prior, self.cfg, self.run_dir, self.unit = prior, cfg, Path(run_dir), unit
        self.offset_nats = offset_nats  # continuous data: discretization, see pipelines/scoring.py
        self.accelerator, self.progress, self.on_eval = accelerator, progress, on_eval
        self.augment = augment  # (batch, batch number) -> batch: data.augment (pipelines/data/augment.py)
        self.is_main = accelerator.is_main_process
        self.ckpt_root = self.run_dir / "checkpoints"

        seq_len = cfg.seq_len or prior.max_length
        if train_data.is_sequence and seq_len is None:
            raise DataError(f"prior '{prior.name}' has no block_size: set train.seq_len.")
        if prior.max_length is not None and seq_len and seq_len > prior.max_length:
            raise DataError(f"train.seq_len={seq_len} exceeds the prior's block_size {prior.max_length}.")

        train_loader = None
        if isinstance(train_data, TokenStream):
            if cfg.num_workers:
                raise DataError("streamed data is read in the training process: set train.num_workers=0.")
            self.batches = StreamBatches(train_data, seq_len, cfg.batch_size, cfg.seed,
                                         accelerator.process_index, accelerator.num_processes,
                                         accelerator.device)
        else:
            train_ds = batches.train_dataset(train_data, seq_len)
            self.sampler = batches.EpochSampler(len(train_ds), cfg.seed)
            train_loader = batches.loader(train_ds, cfg.batch_size, self.sampler, cfg.num_workers,
                                    drop_last=len(train_ds) >= cfg.batch_size * accelerator.num_processes)
        val_loader = None
        if val_data is not None and len(val_data):
            val_ds = batches.eval_dataset(val_data, seq_len, cfg.batch_size, cfg.eval_batches,
                                    accelerator.num_processes)
            if len(val_ds):
                val_loader = batches.loader(val_ds, cfg.batch_size, workers=cfg.num_workers)
        self.units_per_token = val_data.n_units / val_data.n_tokens if val_loader is not None else 1.0

        self.optimizer = torch.optim.AdamW(
            param_groups(prior, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
            fused=fusable(prior, accelerator.device))
        # Counted in optimizer steps and stepped by hand: independent of the number of processes.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        model = torch.compile(prior) if cfg.compile else prior
        self.model, self.optimizer = accelerator.prepare(model, self.optimizer)
        if train_loader is not None:
            self.batches = batches.TrainBatches(accelerator, accelerator.prepare(train_loader), self.sampler)
        self.val_loader = accelerator.prepare(val_loader) if val_loader is not None else None
        self.state = TrainState()
        self._resumed: checkpoint.Checkpoint | None = None
        self._writer = atomic.writer_id(accelerator)  # temporary checkpoint folders are this writer's
        self.scheduled = None if cfg.scheduled_sampling is None else ScheduledSampling(
            cfg.scheduled_sampling, prior, accelerator.num_processes, cfg.seed, accelerator.process_index)

    # -- checkpoints -----------------------------------------------------------------------------
    def resume_from(self, ckpt: checkpoint.Checkpoint) -> None:
        """Continue from `ckpt`: weights, optimizer, scheduler, data position, history; the
        random state is restored when the loop starts."""
        saved = checkpoint.load_checkpoint(ckpt, self.prior, self.optimizer, self.scheduler)
        fields = TrainState.__dataclass_fields__
        self.state = TrainState(**{k: v for k, v in saved.items() if k in fields})
        self._resumed = ckpt
        logger.info("resuming from %s (step %d)", ckpt.path, self.state.step)

    def save(self) -> checkpoint.Checkpoint:
        acc, step = self.accelerator, self.state.step
        tmp = checkpoint.tmp_dir(self.ckpt_root, step, self._writer)
        final = self.ckpt_root / f"{checkpoint.PREFIX}{step:07d}"
        try:
            if self.is_main:
                checkpoint.shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            acc.wait_for_everyone()
            torch.save(checkpoint.rng_state(), tmp / f"rng_{acc.process_index}.pt")
            acc.wait_for_everyone()
            if self.is_main:
                checkpoint.write_checkpoint_files(tmp, self.prior, self.optimizer, self.scheduler,
                                          self._state_dict())
                atomic.publish(tmp, final)
                checkpoint.prune(self.ckpt_root, self.cfg.keep_checkpoints)
        except BaseException as exc:  # a full disk, a Ctrl-C mid-save: the temporary folder goes
            checkpoint.shutil.rmtree(tmp, ignore_errors=True)
            error = checkpoint.save_failure(exc, step, self.ckpt_root, self.run_dir,
                                    lambda: checkpoint.checkpoint_bytes(self.prior, self.optimizer))
            if error is None:
                raise
            raise error from exc
        acc.wait_for_everyone()
        return checkpoint.Checkpoint(final, step)

    def _state_dict(self) -> dict:
        state = asdict(self.state)
        last = self.state.history[-1] if self.state.history else None
        state["val_loss"] = last["loss"] if last and last["step"] == self.state.step else None
        return state

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self) -> Score:
        self.model.eval()
        try:
            return score_batches(self.model, self.prior, self.val_loader, self.accelerator,
                                 self.units_per_token, self.unit, self.offset_nats)
        finally:
            self.model.train()

    def _cond(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return batch.get("label") if self.prior.num_classes else None

    def _token_nll(self, ids: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The training loss per position: teacher forcing, or under scheduled sampling."""
        if self.scheduled is None:
            return token_nll(self.model, self.prior, ids, cond)
        return self.scheduled.token_nll(self.model, self.prior, ids, cond, self.state.step,
                                        self.state.batches_consumed)

    # -- the loop --------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        with logging_redirect_tqdm():
            return self._fit()

    def _log(self, record: dict) -> None:
        if self.is_main:
            path, line = self.run_dir / "metrics.jsonl", json.dumps(finite(record)) + "\n"
            with writing(path, len(line)), path.open("a") as f:
                f.write(line)
        if self.cfg.log_with:
            split = record["split"]
            self.accelerator.log({f"{split}/{k}": v for k, v in record.items()
                                  if k not in ("step", "split") and isinstance(v, (int, float))},
                                 step=record["step"])

    def _fit(self) -> TrainResult:
        cfg, acc, st = self.cfg, self.accelerator, self.state
        set_seed(cfg.seed)
        if self._resumed is not None:  # continue every process's random streams where they stopped
            checkpoint.load_rng(self._resumed, acc.process_index)
        batches = self.batches.iterate(st.batches_consumed)
        bar = progress_bar(total=cfg.max_steps, initial=st.step, disable=not (self.progress and self.is_main),
                           desc="training", unit="step", dynamic_ncols=True)
        first_step = st.step
        self.model.train()
        start = time.perf_counter()
        w_loss, w_batches, w_tokens, w_start = 0.0, 0, 0, start
        last_loss, total_tokens, val, stopped_early = float("nan"), 0, None, False
        stopped_by = "max_steps"
        while st.step < cfg.max_steps:
            for _ in range(cfg.grad_accum):
                batch = next(batches)
                if self.augment is not None:  # seeded by the batch number: exact resume holds
                    batch = self.augment(batch, st.batches_consumed)
                with acc.accumulate(self.model):
                    # Through model(...), not prior.loss: a DDP wrapper syncs gradients in forward.
                    ids = batch["ids"]
                    loss = self._token_nll(ids, self._cond(batch)).mean()
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.grad_clip is not None:
                        acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                st.batches_consumed += 1
                w_loss += loss.item()
                w_batches += 1
                w_tokens += ids.shape[0] * ids.shape[1] * acc.num_processes
            self.scheduler.step()
            st.step += 1
            if not math.isfinite(loss.item()):
                self._stop_on_nan(loss.item())

            if st.step % cfg.log_every == 0 or st.step == cfg.max_steps:
                now = time.perf_counter()
                mean = acc.reduce(torch.tensor(w_loss / w_batches, device=acc.device), "mean")
                last_loss, tps = mean.item(), w_tokens / max(now - w_start, 1e-9)
                total_tokens += w_tokens
                self._log({"step": st.step, "split": "train", "loss": last_loss,
                           "lr": self.scheduler.get_last_lr()[0], "tokens_per_s": tps,
                           "elapsed_s": now - start})
                bar.set_postfix(loss=f"{last_loss:.3f}", tok_s=f"{tps:,.0f}")
                w_loss, w_batches, w_tokens, w_start = 0.0, 0, 0, now

            is_eval = st.step % cfg.eval_every == 0 or st.step == cfg.max_steps
            if self.val_loader is not None and is_eval:
                val = self.evaluate()
                stopped_early = self._record_eval(val, time.perf_counter() - start)
            out_of_time = cfg.max_seconds is not None and bool(acc.reduce(torch.tensor(
                float(time.perf_counter() - start >= cfg.max_seconds), device=acc.device), "max"))
            if out_of_time and not is_eval and self.val_loader is not None:
                val = self.evaluate()  # the budget ends the run: report where it got to
                stopped_early = self._record_eval(val, time.perf_counter() - start)
            if st.step % (cfg.checkpoint_every or cfg.eval_every) == 0 or st.step == cfg.max_steps \
                    or stopped_early or out_of_time:
                self.save()
            if self.val_loader is not None and is_eval and self.on_eval is not None and self.is_main:
                self._after_eval(st.step)  # after the save: its failure can never cost this step
            # the bar's total (and so its ETA) is the step the time budget will end at, when sooner
            bar.total = budget_total(first_step, st.step, time.perf_counter() - start,
                                     cfg.max_steps, cfg.max_seconds)
            bar.update(1)
            if out_of_time:
                logger.info("time budget of %.0fs reached at step %d", cfg.max_seconds, st.step)
                stopped_by = "max_seconds"
                break
            if stopped_early:
                stopped_by = "early_stopping"
                logger.info("early stopping at step %d: no improvement in %d evaluations "
                            "(best %.4f nats/token)", st.step, cfg.early_stopping_patience,
                            st.best_val_loss)
                break
        bar.close()
        acc.wait_for_everyone()
        if cfg.log_with:
            acc.end_training()
        seconds = time.perf_counter() - start
        if val is None and st.history and st.history[-1]["step"] == st.step:  # nothing was left to train
            last = st.history[-1]
            bits = last.get("bits_per_unit", float("nan"))
            val = Score(self.unit, bits, last["loss"], 0, 0, 0, {self.unit: bits})
        return TrainResult(st.step, last_loss, val, seconds, total_tokens / max(seconds, 1e-9),
                           st.best_val_loss, stopped_early, stopped_by)

    def _record_eval(self, val: Score, elapsed: float) -> bool:
        """Log a validation result; True when early stopping says stop."""
        st, cfg = self.state, self.cfg
        record = {"step": st.step, "split": "val", "loss": val.nats_per_token,
                  f"bits_per_{val.unit}": val.bits_per_unit, "elapsed_s": elapsed}
        self._log(record)
        st.history.append({"step": st.step, "loss": val.nats_per_token,
                           "bits_per_unit": val.bits_per_unit})
        logger.info("step %d: validation %.4f nats/token, %.4f bits/%s", st.step,
                    val.nats_per_token, val.bits_per_unit, val.unit)
        if st.best_val_loss is None or val.nats_per_token < st.best_val_loss - cfg.early_stopping_min_delta:
            st.best_val_loss, st.evals_without_improvement = val.nats_per_token, 0
            return False
        st.evals_without_improvement += 1
        patience = cfg.early_stopping_patience
        return patience is not None and st.evals_without_improvement >= patience

    def _after_eval(self, step: int) -> None:
        try:
            self.on_eval(step)
        except TokarError as exc:  # a look at the model, not the model: training goes on
            logger.warning("step %d: could not write evaluation samples: %s", step, exc)

    def _stop_on_nan(self, value: float) -> None:
        previous = checkpoint.list_checkpoints(self.ckpt_root)
        last = f"the last good checkpoint is {previous[-1].path}" if previous else \
            "no checkpoint was written yet"
        # A resume may not change the optimiser (it would not be the same run), so the fix is a
        # new run from the same recipe.
        raise TokarError(
            f"training loss became {value} at step {self.state.step}; {last}. Start a new run "
            f"with a lower learning rate: `tokar train {self.run_dir / 'recipe.yaml'} "
            f"train.lr=<lower>` (or enable train.grad_clip, or train.mixed_precision=no)."
        )
