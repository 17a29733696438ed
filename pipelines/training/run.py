"""Running a training: the life of a run directory, from `tokar train` to "complete".

    RUN_DIR/
      recipe.yaml      the resolved recipe (every default filled in)
      run.json         status ("running" / "complete") and the tokar version that wrote it
      tokenizer/       config.json (+ tokenizer.safetensors)
      prior/           config.json + model.safetensors (final weights)
      checkpoints/     step_NNNNNNN/ written atomically during training
      metrics.jsonl    one JSON object per log line / evaluation
      samples/         samples written at the end of training and by `tokar sample`

A `TrainingRun` claims the directory, loads and tokenizes the data, fits the tokenizer when it
needs fitting, trains the prior with the one loop (pipelines/training/trainer.py) and writes the results;
`TrainingRun.resume` continues an interrupted run exactly, through the very same steps.
`Pipeline.train` / `Pipeline.resume` are the front doors: they hand down the tokenizer and the
prior; what a trained pipeline does afterwards (sample, score) is in pipeline.py.
Under `accelerate launch` / `torchrun` every process runs this; only the main one writes files.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import datasets
from accelerate.utils import broadcast_object_list
from PIL import Image

from pipelines.data import sources
from pipelines.data.augment import Mutation
from pipelines.data.order import Ordering
from pipelines.io.atomic import write_atomically, write_json_atomically, write_text_atomically
from pipelines.recipe.limits import check_training_memory, check_training_window
from pipelines.recipe.loader import Recipe, load_recipe
from pipelines.runs.lock import lock_run_dir
from pipelines.runs.rundir import (
    CLASSES_FILE,
    RECIPE_FILE,
    RESUMABLE,
    RUN_FILE,
    abandon_run_dir,
    claim_run_dir,
    diff,
    require_run_dir,
)
from pipelines.runs.samples import write_samples
from pipelines.training import stage1
from pipelines.training.causality import check_causal
from pipelines.training.resume import ResumePlan, plan_resume
from pipelines.training.trainer import Trainer, TrainResult, make_accelerator, process_state
from plugins.errors import DataError, RecipeError, TokarError
from plugins.manager import tokar_version
from plugins.registry import Registries
from plugins.resources import use_threads
from priors.base import Prior
from tokenizers_ar.base import Tokenizer

logger = logging.getLogger(__name__)

FIT_EXAMPLES = 10_000  # how much of a streamed training split fits a tokenizer


class Sampler(Protocol):
    """What a run needs to write samples (Pipeline is one): decoded examples, the grid's
    columns, and the tokenizer that knows their form."""

    tokenizer: Tokenizer

    def sample(self, n: int | None = None, progress: bool = False) -> list[Any]: ...

    def grid_columns(self) -> int | None: ...


@dataclass
class Prepared:
    """What a run trains on: the tokenizer (fitted), the tokenized splits in the prior's order
    of positions, and the class names when the data has them."""

    tokenizer: Tokenizer
    tokens: dict[str, sources.TokenData]
    class_names: list[str] | None


class TrainingRun:
    """One training of `recipe` into `run_dir`. A new run and a resumed one share every step
    after the run directory is claimed (start) or checked (resume): `prepare` the data, `check`
    the prior against it, `train`. Pipeline.train / Pipeline.resume drive them and hand down the
    tokenizer and the prior; this module never builds a Pipeline."""

    def __init__(self, recipe: Recipe, run_dir: Path, plan: ResumePlan | None = None):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.plan = plan  # None: a new run
        self.created = False  # a new run whose folder tokar created

    @classmethod
    def start(cls, recipe: Recipe, run_dir: str | Path | None = None) -> TrainingRun:
        """A new run: claim (create, lock and mark) its directory; nothing else is written yet."""
        ps = process_state()
        created = run_dir is None or not Path(run_dir).exists()
        if ps.is_main_process:  # may it be written? then create, lock and mark it (rundir.py)
            run_dir = claim_run_dir(run_dir, Path(recipe.source).stem if recipe.source else "run")
        if ps.num_processes > 1:  # the main process names the run for everyone
            run_dir = broadcast_object_list([str(run_dir) if run_dir is not None else None])[0]
        ps.wait_for_everyone()
        run = cls(recipe, Path(run_dir))
        run.created = created
        return run

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Around everything before training starts: a new run that fails there (Ctrl-C
        included) leaves no folder marked "preparing" behind (removed if tokar created it,
        emptied if it was the user's empty folder); a resume is left exactly as it was."""
        try:
            yield
        except BaseException:
            if self.plan is None and process_state().is_main_process:
                abandon_run_dir(self.run_dir, self.created)
            raise

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[str] | tuple = (),
               registries: Registries | None = None) -> TrainingRun:
        """An interrupted run, to continue from its newest intact checkpoint, exactly: the
        result equals an uninterrupted run. Overrides may change only how long and how verbosely
        it trains (train.max_steps, eval/log/checkpoint intervals...), never the model or data.
        Everything is checked before the run changes (pipelines/training/resume.py); `plan.done`
        says a complete run has nothing to do unless train.max_steps grows."""
        run_dir = Path(run_dir)
        require_run_dir(run_dir)
        if process_state().is_main_process:
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
        # `train.max_seconds=N` on resume grants N more seconds, even when N is the saved value
        more_time = any(o.split("=", 1)[0].strip().lstrip("+") == "train.max_seconds"
                        for o in overrides if "=" in o)
        return cls(recipe, run_dir, plan_resume(run_dir, saved, recipe, more_time))

    # -- the steps every run takes -------------------------------------------------------------
    def prepare(self, tokenizer: Tokenizer) -> Prepared:
        """Load the data, fit the tokenizer if it needs it (a new run; the main process fits and
        saves, the others load what it saved), tokenize in the recipe's order of positions, and
        check the memory training will need before any model is built."""
        ps = process_state()
        use_threads(self.recipe.train.threads, "train.threads")  # tokenizer fitting counts too
        splits = self._load_splits()
        with ps.main_process_first():
            if self.plan is None:
                if ps.is_main_process:
                    if not tokenizer.is_fitted:
                        logger.info("fitting tokenizer '%s'", self.recipe.tokenizer.name)
                        tokenizer.fit(_fit_examples(splits["train"]))
                    write_atomically(self.run_dir / "tokenizer", tokenizer.save)
                    if stage1.needs_health(tokenizer):  # check the code before stage 2 uses it
                        stage1.write_health(tokenizer, stage1.held_out(splits), self.run_dir)
                else:
                    tokenizer = type(tokenizer).from_pretrained(self.run_dir / "tokenizer")
            tokens = self._tokenize(splits, tokenizer)
        check_training_memory(self.recipe, tokenizer.vocab_size, tokenizer.layout)
        return Prepared(tokenizer, tokens, sources.class_names(splits["train"]))

    def check(self, prior: Prior, prepared: Prepared) -> None:
        """What the prior must fit before a step is taken: the training window and the labels
        of every split."""
        check_training_window(self.recipe, prior)
        check_causal(prior, self.recipe.prior.name)  # one cheap probe, before any step
        for split in ("train", "validation"):
            _check_labels(prior, prepared.tokens.get(split))

    def train(self, prior: Prior, prepared: Prepared, sampler: Sampler,
              progress: bool = True) -> TrainResult:
        """Train `prior` (a new run: after writing the recipe and marking the run "running"; a
        resume: from the verified checkpoint, committing the resume only as training
        continues), then save it, mark the run complete and write its samples."""
        ps = process_state()
        ckpt = None
        if self.plan is not None:
            ckpt = self.plan.choose_checkpoint(prior, ps.num_processes)  # verified; nothing changed
        elif ps.is_main_process:  # only now is this a run: a recipe that failed left none behind
            write_text_atomically(self.run_dir / RECIPE_FILE, self.recipe.dump())
            if prepared.class_names is not None:
                write_json_atomically(self.run_dir / CLASSES_FILE, prepared.class_names)
            self._write_run_file("running")
        cfg = self.recipe.train
        tokenizer, tokens = prepared.tokenizer, prepared.tokens
        accelerator = make_accelerator(cfg, self.run_dir)
        if cfg.log_with:
            accelerator.init_trackers(self.run_dir.name, config=_flat(self.recipe.to_dict()))
        logger.info("prior '%s': %.2fM parameters", self.recipe.prior.name, prior.num_parameters() / 1e6)
        trainer = Trainer(prior, tokens["train"], tokens.get("validation"), cfg,
                          self.run_dir, tokenizer.unit, accelerator, progress,
                          on_eval=(lambda step: self._write_eval_samples(step, sampler))
                          if cfg.eval_samples else None,
                          offset_nats=tokenizer.discretization_nats(),
                          augment=self._augment(tokenizer.vocab_size, accelerator.process_index))
        if ckpt is not None:
            trainer.resume_from(ckpt)
        if self.plan is not None:  # a resume changes the run only now that training continues
            if accelerator.is_main_process:
                self.plan.commit()
            accelerator.wait_for_everyone()
        result = trainer.fit()
        prior.eval()
        if accelerator.is_main_process:
            write_atomically(self.run_dir / "prior", prior.save)
            self._write_run_file("complete", result={
                "steps": result.steps, "seconds": result.seconds, "train_loss": result.train_loss,
                "val_bits_per_unit": result.val.bits_per_unit if result.val else None,
                "best_val_loss": result.best_val_loss, "stopped_early": result.stopped_early,
                "stopped_by": result.stopped_by,
                "unit": tokenizer.unit})
            try:  # after the result is recorded: a sample that fails costs nothing of the run
                write_samples(sampler.sample(self.recipe.sample.n, progress=progress),
                              self.run_dir / "samples", sampler.grid_columns(), tokenizer=tokenizer)
            except TokarError as exc:
                logger.warning("could not write the final samples: %s", exc)
        accelerator.wait_for_everyone()
        return result

    # -- helpers --------------------------------------------------------------------------------
    def _augment(self, vocab_size: int, process_index: int) -> Mutation | None:
        """The training-batch perturbation the recipe asks for (data.augment), if any."""
        augment = getattr(self.recipe.data.config, "augment", None)
        if augment is None or augment.mutate == 0:
            return None
        return Mutation(augment.mutate, vocab_size, self.recipe.train.seed, process_index)

    def _write_eval_samples(self, step: int, sampler: Sampler) -> None:
        """A quick look at what the model makes at this point of training."""
        examples = sampler.sample(self.recipe.train.eval_samples)
        # a grid image, a text file, or (audio) a folder of WAVs and their plot
        first = examples[0]
        ext = ".png" if isinstance(first, Image.Image) else ".txt" if isinstance(first, str) else ""
        write_samples(examples, self.run_dir / "samples" / f"step_{step:07d}{ext}",
                      sampler.grid_columns(), tokenizer=sampler.tokenizer)

    def _load_splits(self):
        recipe = self.recipe
        splits = recipe.data.cls(recipe.data.config).load()
        train = splits["train"]
        if not isinstance(train, datasets.IterableDataset) and len(train) == 0:
            raise DataError(f"data source '{recipe.data.name}' gave an empty training split.")
        return splits

    def _tokenize(self, splits, tokenizer: Tokenizer) -> dict[str, Any]:
        config = self.recipe.data.config
        # in the prior's order of positions (recipe `order:`); the cache key names the order
        ordered = Ordering(self.recipe.order, tokenizer.layout).wrap(tokenizer)
        return sources.tokenize(splits, ordered, getattr(config, "num_proc", None),
                                getattr(config, "shuffle_buffer", 10_000))

    def _write_run_file(self, status: str, **extra: Any) -> None:
        payload = {"status": status, "tokar_version": tokar_version(), **extra}
        write_json_atomically(self.run_dir / RUN_FILE, payload)


def _check_labels(prior: Prior, split: sources.TokenData | None) -> None:
    n_classes = prior.num_classes
    if not n_classes or not isinstance(split, sources.TokenData) or len(split) == 0:
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


def _fit_examples(train) -> Any:
    """The examples a tokenizer fits on: all of them, or the head of a stream."""
    if isinstance(train, datasets.IterableDataset):
        return (row["example"] for row in train.take(FIT_EXAMPLES))
    return train["example"]


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
