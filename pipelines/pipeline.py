"""Pipeline = tokenizer + prior: train, sample, score, save, load.

A run directory holds everything needed to use the result with no recipe file at hand:

    RUN_DIR/
      recipe.yaml      the resolved recipe (every default filled in)
      run.json         status ("running" / "complete") and the tokar version that wrote it
      tokenizer/       config.json (+ tokenizer.safetensors)
      prior/           config.json + model.safetensors (final weights)
      checkpoints/     step_NNNNNNN/ written atomically during training
      metrics.jsonl    one JSON object per log line / evaluation
      samples/         samples written at the end of training and by `tokar sample`
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from PIL import Image
from pydantic import ValidationError

from pipelines import data as data_lib
from pipelines import stage1
from pipelines.checkpoint import Checkpoint, list_checkpoints, newest_loadable, write_atomically
from pipelines.limits import check_decode_memory, check_training_memory
from pipelines.recipe import Recipe, load_recipe
from pipelines.resume import plan_resume
from pipelines.rundir import (
    CLASSES_FILE,
    RECIPE_FILE,
    RESUMABLE,
    RUN_FILE,
    claim_run_dir,
    diff,
    load_saved,
    mark_saved_dir,
    read_class_names,
    require_run_dir,
    write_json_atomically,
    write_text_atomically,
)
from pipelines.runlock import lock_run_dir, releases_run_locks
from pipelines.samples import write_samples
from pipelines.scoring import Score, stream_nll
from pipelines.train import LN2, Trainer, TrainResult, make_accelerator, process_state
from plugins.errors import DataError, LayoutError, RecipeError, RunDirError, TokarError, did_you_mean
from plugins.registry import Registries
from priors.base import Prior
from priors.quantize import to_precision
from priors.sampling import DecodeConfig, Generation, generate
from tokenizers_ar.base import Tokenizer

logger = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, prior: Prior | None = None,
                 run_dir: Path | None = None):
        self.recipe = recipe
        self.tokenizer = tokenizer
        self._prior = prior
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.class_names: list[str] | None = None  # from the data's ClassLabel, when it has one

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_recipe(cls, recipe: str | Path | dict[str, Any], overrides: list[str] | tuple = (),
                    registries: Registries | None = None) -> Pipeline:
        r = load_recipe(recipe, overrides, registries)
        return cls(r, stage1.build_tokenizer(r.tokenizer))

    @property
    def prior(self) -> Prior:
        if self._prior is None:
            raise TokarError("this pipeline has no prior yet: call train() or Pipeline.load(run_dir).")
        return self._prior

    def build_prior(self) -> Prior:
        """A fresh prior for the (fitted) tokenizer, after checking it can model its layout."""
        spec = self.recipe.prior
        layout = self.tokenizer.layout
        problems = spec.cls.check_layout(layout, spec.config)
        if problems:
            raise LayoutError(
                f"tokenizer '{self.recipe.tokenizer.name}' and prior '{spec.name}' do not fit: "
                + " ".join(problems)
            )
        torch.manual_seed(self.recipe.train.seed)
        return spec.cls(spec.config, vocab_size=self.tokenizer.vocab_size, layout=layout)

    # -- training --------------------------------------------------------------------------------
    @releases_run_locks
    def train(self, run_dir: str | Path | None = None, progress: bool = True) -> TrainResult:
        """Fit the tokenizer if it needs it, train the prior, save everything under `run_dir`.
        Under `accelerate launch` / `torchrun` every process calls this; only the main one
        writes files."""
        ps = process_state()
        self.run_dir = self._claim_run_dir(run_dir, ps)
        splits = self._load_splits()
        self.class_names = data_lib.class_names(splits["train"])
        # The main process fits the tokenizer (fitting may be random: VQ codebooks) and fills the
        # tokenized cache; the others then load exactly what it saved.
        with ps.main_process_first():
            if ps.is_main_process:
                if not self.tokenizer.is_fitted:
                    logger.info("fitting tokenizer '%s'", self.recipe.tokenizer.name)
                    self.tokenizer.fit(_fit_examples(splits["train"]))
                write_atomically(self.run_dir / "tokenizer", self.tokenizer.save)
                if stage1.needs_health(self.tokenizer):  # check the code before stage 2 uses it
                    stage1.write_health(self.tokenizer, stage1.held_out(splits), self.run_dir)
            else:
                self.tokenizer = type(self.tokenizer).from_pretrained(self.run_dir / "tokenizer")
            tokens = self._tokenize(splits)
        check_training_memory(self.recipe, self.tokenizer.vocab_size, self.tokenizer.layout)
        self._prior = self.build_prior()
        self._check_labels(tokens["train"])
        self._check_labels(tokens.get("validation"))
        # Only now is this a run: a recipe that fails before this point leaves no run behind.
        if ps.is_main_process:
            write_text_atomically(self.run_dir / RECIPE_FILE, self.recipe.dump())
            if self.class_names is not None:
                write_json_atomically(self.run_dir / CLASSES_FILE, self.class_names)
            self._write_run_file("running")
        return self._run(tokens, None, progress)

    @classmethod
    @releases_run_locks
    def resume(cls, run_dir: str | Path, overrides: list[str] | tuple = (), progress: bool = True,
               registries: Registries | None = None) -> tuple[Pipeline, TrainResult]:
        """Continue an interrupted run from its newest intact checkpoint, exactly: the result
        equals an uninterrupted run. Overrides may change only how long and how verbosely it
        trains (train.max_steps, eval/log/checkpoint intervals...), never the model or data.
        Everything is checked before the run changes (pipelines/resume.py); a complete run is
        left as it is unless train.max_steps grows."""
        run_dir = Path(run_dir)
        require_run_dir(run_dir)
        ps = process_state()
        if ps.is_main_process:
            lock_run_dir(run_dir)  # one writer per run, from before anything is read
        saved = load_recipe(run_dir / RECIPE_FILE, registries=registries)
        recipe = load_recipe(run_dir / RECIPE_FILE, overrides, registries)
        changed = [k for k in diff(saved.to_dict(), recipe.to_dict())
                   if not any(k == a or k.startswith(a + ".") for a in RESUMABLE)]
        if changed:
            raise RecipeError([
                f"resuming {run_dir} cannot change {', '.join(changed)}: the checkpoint was "
                f"trained with other values. Only {', '.join(RESUMABLE)} may change on resume; "
                "start a new run for anything else."])
        plan = plan_resume(run_dir, saved, recipe)
        if plan.done:
            loaded = cls.load(run_dir, registries)
            return loaded, plan.recorded_result(loaded.tokenizer.unit)
        pipe = cls(recipe, load_saved(recipe.tokenizer.cls, run_dir / "tokenizer", "tokenizer"),
                   run_dir=run_dir)
        splits = pipe._load_splits()
        with ps.main_process_first():
            tokens = pipe._tokenize(splits)
        check_training_memory(recipe, pipe.tokenizer.vocab_size, pipe.tokenizer.layout)
        pipe._prior = pipe.build_prior()
        pipe._check_labels(tokens["train"])
        ckpt = plan.choose_checkpoint(pipe._prior, ps.num_processes)  # verified; nothing changed yet
        return pipe, pipe._run(tokens, ckpt, progress, before_fit=plan.commit)

    def _run(self, tokens: dict[str, data_lib.TokenData], ckpt: Checkpoint | None,
             progress: bool, before_fit: Any = None) -> TrainResult:
        cfg = self.recipe.train
        accelerator = make_accelerator(cfg, self.run_dir)
        if cfg.log_with:
            accelerator.init_trackers(self.run_dir.name, config=_flat(self.recipe.to_dict()))
        logger.info("prior '%s': %.2fM parameters", self.recipe.prior.name,
                    self._prior.num_parameters() / 1e6)
        trainer = Trainer(self._prior, tokens["train"], tokens.get("validation"), cfg,
                          self.run_dir, self.tokenizer.unit, accelerator, progress,
                          on_eval=self._write_eval_samples if cfg.eval_samples else None)
        if ckpt is not None:
            trainer.resume_from(ckpt)
        if before_fit is not None:  # a resume changes the run only now that training continues
            if accelerator.is_main_process:
                before_fit()
            accelerator.wait_for_everyone()
        result = trainer.fit()
        self._prior.eval()
        if accelerator.is_main_process:
            write_atomically(self.run_dir / "prior", self._prior.save)
            self._write_run_file("complete", result={
                "steps": result.steps, "seconds": result.seconds, "train_loss": result.train_loss,
                "val_bits_per_unit": result.val.bits_per_unit if result.val else None,
                "best_val_loss": result.best_val_loss, "stopped_early": result.stopped_early,
                "unit": self.tokenizer.unit})
            try:  # after the result is recorded: a sample that fails costs nothing of the run
                write_samples(self.sample(self.recipe.sample.n), self.run_dir / "samples",
                              self.grid_columns(), tokenizer=self.tokenizer)
            except TokarError as exc:
                logger.warning("could not write the final samples: %s", exc)
        accelerator.wait_for_everyone()
        return result

    def _write_eval_samples(self, step: int) -> None:
        """A quick look at what the model makes at this point of training."""
        examples = self.sample(self.recipe.train.eval_samples)
        # a grid image, a text file, or (audio) a folder of WAVs and their plot
        first = examples[0]
        ext = ".png" if isinstance(first, Image.Image) else ".txt" if isinstance(first, str) else ""
        write_samples(examples, self.run_dir / "samples" / f"step_{step:07d}{ext}",
                      self.grid_columns(), tokenizer=self.tokenizer)

    def _load_splits(self):
        splits = self.recipe.data.cls(self.recipe.data.config).load()
        train = splits["train"]
        if not isinstance(train, datasets.IterableDataset) and len(train) == 0:
            raise DataError(f"data source '{self.recipe.data.name}' gave an empty training split.")
        return splits

    def _tokenize(self, splits) -> dict[str, Any]:
        config = self.recipe.data.config
        return data_lib.tokenize(splits, self.tokenizer, getattr(config, "num_proc", None),
                                 getattr(config, "shuffle_buffer", 10_000))

    def _claim_run_dir(self, run_dir: str | Path | None, ps: PartialState) -> Path:
        if ps.is_main_process:  # may it be written? then create, lock and mark it (rundir.py)
            stem = Path(self.recipe.source).stem if self.recipe.source else "run"
            run_dir = claim_run_dir(run_dir, stem)
        if ps.num_processes > 1:  # the main process names the run for everyone
            run_dir = broadcast_object_list([str(run_dir) if run_dir is not None else None])[0]
        ps.wait_for_everyone()
        return Path(run_dir)

    def _write_run_file(self, status: str, **extra: Any) -> None:
        from plugins.manager import _tokar_version

        payload = {"status": status, "tokar_version": _tokar_version(), **extra}
        write_json_atomically(self.run_dir / RUN_FILE, payload)

    def _check_labels(self, split: data_lib.TokenData | None) -> None:
        n_classes = self._prior.num_classes
        if not n_classes or not isinstance(split, data_lib.TokenData) or len(split) == 0:
            return  # a stream's labels are checked as they arrive, by the embedding lookup
        if split.labels is None:
            raise DataError(
                f"prior.n_classes={n_classes} asks for class conditioning, but the data has no "
                "labels; set data.label_column (hf source) or prior.n_classes=0."
            )
        if split.labels.min() < 0 or split.labels.max() >= n_classes:
            raise DataError(
                f"labels range over [{split.labels.min()}, {split.labels.max()}] but "
                f"prior.n_classes={n_classes}; set prior.n_classes={split.labels.max() + 1}."
            )

    # -- using a trained pipeline ----------------------------------------------------------------
    def grid_columns(self, cond: int | list[int] | None = None) -> int | None:
        """One column per class when samples cycle through the classes (a row shows each)."""
        return self.prior.num_classes if self.prior.num_classes and cond is None else None

    def generate(self, n: int | None = None, *, cond: int | list[int] | None = None,
                 prompt: str | None = None, draft: Pipeline | str | Path | None = None,
                 seed: int | None = None, **decoding: Any) -> Generation:
        """Sample token ids: `decoding` overrides the recipe's `sample:` settings (temperature,
        top_k, top_p, min_p, repetition_penalty, greedy, num_beams, length_penalty,
        max_new_tokens, stop, num_draft_tokens). `draft`: a pipeline (or run directory) with
        the same tokenizer for speculative decoding. The prompt's ids are not in the result."""
        s = self.recipe.sample
        settings = {**s.model_dump(), **{k: v for k, v in decoding.items() if v is not None}}
        n = settings.pop("n") if n is None else n
        if n < 1:
            raise TokarError(f"the number of samples must be at least 1, got {n}.")
        seed = s.seed if seed is None else seed
        prompt = prompt if prompt is not None else settings.pop("prompt", None)
        stop = settings.pop("stop", [])
        for key in ("n", "seed", "prompt"):
            settings.pop(key, None)
        prior = self.prior
        device = next(prior.parameters()).device
        layout = self.tokenizer.layout
        check_decode_memory(prior, n, settings if layout.kind == "seq" else
                            {**settings, "max_new_tokens": layout.length}, len(prompt or ""))
        prompt_ids = None
        if prompt:
            if self.tokenizer.modality != "text":
                raise TokarError(f"--prompt continues text; this run models {self.tokenizer.modality}.")
            prompt_ids = self.tokenizer.encode(prompt).reshape(1, -1).repeat(n, 1).to(device)
        if layout.kind == "grid":
            settings["max_new_tokens"] = layout.length
            if stop or settings.get("stop_tokens") or (settings.get("num_beams") or 1) > 1:
                raise TokarError("stop tokens and beam search apply to sequences; this run "
                                 "models fixed-size grids.")
        settings["stop_tokens"] = [*settings.get("stop_tokens", []), *self._stop_ids(stop)]
        try:
            config = DecodeConfig(**settings)
        except ValidationError as exc:
            raise TokarError(f"invalid decoding settings: {exc.errors()[0]['loc'][0]}: "
                             f"{exc.errors()[0]['msg']}") from exc
        draft_prior = None
        if draft is not None:
            draft_pipe = draft if isinstance(draft, Pipeline) else Pipeline.load(draft)
            if draft_pipe.tokenizer.fingerprint() != self.tokenizer.fingerprint():
                raise TokarError("the draft run uses a different tokenizer: speculative decoding "
                                 "needs the very same token ids (train both on the same data).")
            draft_prior = draft_pipe.prior.to(device)
        labels = self._labels(n, cond)
        gen = torch.Generator().manual_seed(seed)
        return generate(prior, n, config, cond=labels.to(device) if labels is not None else None,
                        prompt=prompt_ids, generator=gen, draft=draft_prior,
                        processors=_resolve_processors(config.processors))

    def sample(self, n: int | None = None, **kwargs: Any) -> list[Any]:
        """Draw samples and decode them to data (str, PIL image...). Takes the arguments of
        `generate`; text samples include their prompt."""
        return self.decode(self.generate(n, **kwargs), kwargs.get("prompt"))

    def decode(self, result: Generation, prompt: str | None = None) -> list[Any]:
        """Generated ids -> data; text samples start with their prompt."""
        prompt = prompt if prompt is not None else (self.recipe.sample.prompt or "")
        layout = self.tokenizer.layout
        if layout.kind == "grid":
            return self.tokenizer.decode_batch(result.tokens.view(-1, *layout.shape).cpu())
        if self.tokenizer.modality != "text":  # audio: waveforms, no text prompt to prepend
            return [self.tokenizer.decode(ids.cpu()) for ids in result.sequences()]
        return [prompt + self.tokenizer.decode(ids.cpu()) for ids in result.sequences()]

    def class_index(self, label: int | str) -> int:
        """A class label as its index: an int already, or one of the data's class names."""
        if not isinstance(label, str) or label.lstrip("-").isdigit():
            index, classes = int(label), self.prior.num_classes
            if classes and not 0 <= index < classes:
                raise TokarError(f"class {label} is out of range: this run has classes 0 to "
                                 f"{classes - 1}" + (f" ({', '.join(self.class_names)})."
                                                     if self.class_names else "."))
            return index
        names = self.class_names or []
        lowered = [name.lower() for name in names]
        if label.lower() in lowered:
            return lowered.index(label.lower())
        if not names:
            raise TokarError(f"class {label!r}: this run's data has no class names; pass the "
                             f"class index (0 to {self.prior.num_classes - 1}).")
        raise TokarError(f"unknown class {label!r}; the classes are {', '.join(names)}."
                         + did_you_mean(label, names))

    def _labels(self, n: int, cond: int | str | list[int | str] | None) -> torch.Tensor | None:
        classes = self.prior.num_classes
        if not classes:
            if cond is not None:
                raise TokarError("this prior is unconditional (n_classes=0): it takes no class label.")
            return None
        if cond is None:  # one of each class, in turn
            cond = [i % classes for i in range(n)]
        if isinstance(cond, torch.Tensor):
            cond = cond.tolist()
        cond = [self.class_index(c) for c in cond] if isinstance(cond, list) else self.class_index(cond)
        labels = torch.as_tensor([cond] * n if isinstance(cond, int) else cond).long()
        if labels.numel() != n or labels.min() < 0 or labels.max() >= classes:
            raise TokarError(f"class labels must be {n} values in [0, {classes}).")
        return labels

    def _stop_ids(self, stop: list[str]) -> list[int]:
        if stop and self.tokenizer.modality != "text":
            raise TokarError(f"--stop takes text; this run models {self.tokenizer.modality}.")
        ids = []
        for text in stop:
            encoded = self.tokenizer.encode(text).reshape(-1)
            if encoded.numel() != 1:
                raise TokarError(f"stop string {text!r} is {encoded.numel()} tokens; a stop string "
                                 "must be exactly one token of this tokenizer.")
            ids.append(int(encoded[0]))
        return ids

    @torch.no_grad()
    def score(self, examples: list[Any] | None = None, batch_size: int = 64,
              labels: list[int] | int | None = None) -> Score:
        """Exact negative log-likelihood of `examples` (default: the validation split), in bits
        per data unit. Sequences longer than the prior's context are scored with a sliding
        window (stride half the context), so every token is predicted from at least half a
        context of real history."""
        if examples is None:
            splits = self.recipe.data.cls(self.recipe.data.config).load()
            examples = list(splits["validation"]["example"])
            if "label" in splits["validation"].column_names:
                labels = list(splits["validation"]["label"])
        elif isinstance(labels, int):
            labels = [labels] * len(examples)
        keep = [i for i, x in enumerate(examples) if self.tokenizer.count_units(x) > 0]
        examples = [examples[i] for i in keep]
        labels = [labels[i] for i in keep] if labels is not None else None
        if not examples:
            raise DataError("nothing to score: the data is empty.")
        prior = self.prior.eval()
        device = next(prior.parameters()).device
        total_nats, total_tokens, total_units = 0.0, 0, 0
        encoded = [self.tokenizer.encode(x).reshape(-1) for x in examples]
        counts: dict[str, int] = {}
        for x in examples:
            for unit, c in self.tokenizer.unit_counts(x).items():
                counts[unit] = counts.get(unit, 0) + c
        total_units = counts[self.tokenizer.unit]
        if self.tokenizer.layout.kind == "grid":
            rows = torch.stack(encoded)
            cond = torch.as_tensor(labels) if (labels is not None and prior.num_classes) else None
            if prior.num_classes and cond is None:
                raise DataError("this prior is class-conditional: scoring needs labelled data "
                                "(tokar score RUN_DIR DATA --class C).")
            for i in range(0, len(rows), batch_size):
                c = cond[i : i + batch_size].to(device) if cond is not None else None
                total_nats -= prior.log_prob(rows[i : i + batch_size].to(device), c).sum().item()
            total_tokens = rows.numel()
        else:
            if prior.num_classes and labels is None:
                raise DataError("this prior is class-conditional: scoring needs labelled data "
                                "(tokar score RUN_DIR DATA --class C).")
            for i, ids in enumerate(encoded):
                c = torch.tensor([labels[i]], device=device) if prior.num_classes else None
                total_nats += stream_nll(prior, ids.to(device), batch_size, c)
                total_tokens += ids.numel()
        nats_per_token = total_nats / max(total_tokens, 1)
        bits_per = {u: total_nats / max(c, 1) / LN2 for u, c in counts.items()}
        return Score(self.tokenizer.unit, bits_per[self.tokenizer.unit], nats_per_token,
                     total_tokens, total_units, len(examples), bits_per)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        mark_saved_dir(directory)  # never among someone else's files
        write_text_atomically(directory / RECIPE_FILE, self.recipe.dump())
        write_atomically(directory / "tokenizer", self.tokenizer.save)
        write_atomically(directory / "prior", self.prior.save)
        return directory

    @classmethod
    def load(cls, run_dir: str | Path, registries: Registries | None = None,
             precision: str = "fp32") -> Pipeline:
        """A trained run. `precision` "bf16" or "int8" shrinks the prior's weights for CPU
        inference (priors/quantize.py); the scores it gives change slightly (BENCHMARKS.md)."""
        run_dir = Path(run_dir)
        require_run_dir(run_dir)
        recipe = load_recipe(run_dir / RECIPE_FILE, registries=registries)
        tokenizer = load_saved(recipe.tokenizer.cls, run_dir / "tokenizer", "tokenizer")
        if (run_dir / "prior").is_dir():
            prior = load_saved(recipe.prior.cls, run_dir / "prior", "prior")
        else:
            ckpts = list_checkpoints(run_dir / "checkpoints")
            if not ckpts:
                raise RunDirError(
                    f"{run_dir} has no trained prior: training did not finish and left no "
                    "checkpoint. Train again."
                )
            pipe = cls(recipe, tokenizer, run_dir=run_dir)
            prior = pipe.build_prior()
            used = newest_loadable(ckpts, prior)  # a damaged newest one falls back, with a warning
            logger.warning("%s: training did not finish; using checkpoint %s", run_dir, used.path.name)
            prior.eval()
        if precision != "fp32":
            try:
                prior = to_precision(prior, precision)
            except ValueError as exc:
                raise TokarError(str(exc)) from exc
        pipe = cls(recipe, tokenizer, prior, run_dir)
        pipe.class_names = read_class_names(run_dir)
        return pipe


FIT_EXAMPLES = 10_000  # how much of a streamed training split fits a tokenizer


def _fit_examples(train) -> Any:
    """The examples a tokenizer fits on: all of them, or the head of a stream."""
    if isinstance(train, datasets.IterableDataset):
        return (row["example"] for row in train.take(FIT_EXAMPLES))
    return train["example"]


def _resolve_processors(specs: list[dict]) -> list:
    """[{name: ..., **settings}] -> processors, through the plugin registry."""
    from plugins.manager import get_registries

    registry = get_registries().processors
    out = []
    for spec in specs:
        settings = dict(spec)
        name = settings.pop("name", None)
        if name is None:
            raise TokarError(f"sample.processors entry {spec} needs a 'name' (one of "
                             f"{', '.join(registry.names())}).")
        factory = registry.get(str(name))
        try:
            out.append(factory(**settings))
        except (TypeError, ValueError) as exc:
            raise TokarError(f"logits processor '{name}' with {settings}: {exc}") from exc
    return out


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested recipe -> {"train.lr": ...} with scalar values (what trackers accept)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


__all__ = ["Pipeline", "Score"]
