"""Pipeline = tokenizer + prior: a trained pair used as one model of the data.

    pipe = Pipeline.from_recipe("recipes/digits/pixel_gpt.yaml")
    pipe.train("runs/digits")                 # pipelines/training/run.py: claim, fit, train, save
    pipe = Pipeline.load("runs/digits")       # later, anywhere
    pipe.sample(10, cond=3)                   # decoded data: PIL images, text, waveforms
    pipe.score().bits_per_unit                # pipelines/scoring.py: exact, in data units

Running a training (the run directory's life, resume) lives in pipelines/training/run.py; this module is
what a trained pipeline does: load, generate and decode, score.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from pipelines.compression.codecs import Codec, build_codec, find_codec, load_codec
from pipelines.compression.codecs import freeze as freeze_codec
from pipelines.compression.container import (
    Settings,
    check_float_model,
    codec_model,
    compress,
    decompress,
    float_model,
)
from pipelines.compression.lossless import compress_mode
from pipelines.data.order import Ordering
from pipelines.detection.detectors import DetectResult, detect
from pipelines.io.atomic import write_atomically, write_text_atomically
from pipelines.io.progress import progress_bar
from pipelines.recipe.limits import check_decode_memory
from pipelines.recipe.loader import Recipe, load_recipe
from pipelines.runs.lock import releases_run_locks
from pipelines.runs.rundir import RECIPE_FILE, load_saved, mark_saved_dir, read_class_names, require_run_dir
from pipelines.scoring import Score, score_examples
from pipelines.training import stage1
from pipelines.training.checkpoint import list_checkpoints, newest_loadable
from pipelines.training.run import TrainingRun
from pipelines.training.trainer import TrainResult, process_state
from plugins.errors import (
    CompressionError,
    DataError,
    LayoutError,
    RunDirError,
    TokarError,
    did_you_mean,
)
from plugins.registry import Registries, Registry
from priors import DecodeConfig, Generation, generate
from priors.base import Prior, construct
from priors.drafts import is_draft_spec
from priors.quantize import to_precision
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
        self._ordering: Ordering | None = None
        self._codec: tuple[str, Codec] | None = None  # (prior fingerprint, its codec)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_recipe(cls, recipe: str | Path | dict[str, Any], overrides: list[str] | tuple = (),
                    registries: Registries | None = None) -> Pipeline:
        r = load_recipe(recipe, overrides, registries)
        return cls(r, stage1.build_tokenizer(r.tokenizer))

    @property
    def ordering(self) -> Ordering:
        """The recipe's order of positions (`order:`) over the tokenizer's layout."""
        layout = self.tokenizer.layout
        if self._ordering is None or self._ordering.layout != layout:
            self._ordering = Ordering(self.recipe.order, layout)
        return self._ordering

    @property
    def ordered_tokenizer(self) -> Any:
        """The tokenizer as the prior sees it: `encode` returns ids in the recipe's order,
        `decode` takes them back to data order. Everything that feeds the prior encodes through
        it (training data, scoring, `encode`); for raster order it is the tokenizer itself."""
        return self.ordering.wrap(self.tokenizer)

    def encode(self, example: Any) -> torch.Tensor:
        """One example as the prior reads it: encoded, in the recipe's order of positions."""
        return self.ordered_tokenizer.encode(example)

    @property
    def heads(self) -> Registry | None:
        """The head registry the recipe was resolved in (plugins' heads included)."""
        return _heads(self.recipe)

    @property
    def processors(self) -> Registry | None:
        """The logits-processor registry the recipe was resolved in."""
        return self.recipe.registries.processors if self.recipe.registries is not None else None

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
        return construct(spec.cls, spec.config, self.tokenizer.vocab_size, layout, self.heads)

    # -- training (pipelines/training/run.py) -----------------------------------------------------------
    @releases_run_locks
    def train(self, run_dir: str | Path | None = None, progress: bool = True) -> TrainResult:
        """Fit the tokenizer if it needs it, train the prior, save everything under `run_dir`.
        Under `accelerate launch` / `torchrun` every process calls this; only the main one
        writes files."""
        return self._train(TrainingRun.start(self.recipe, run_dir), progress)

    @classmethod
    @releases_run_locks
    def resume(cls, run_dir: str | Path, overrides: list[str] | tuple = (), progress: bool = True,
               registries: Registries | None = None) -> tuple[Pipeline, TrainResult]:
        """Continue an interrupted run exactly (see TrainingRun.resume): the same steps as a new
        run, from its newest intact checkpoint."""
        run = TrainingRun.resume(run_dir, overrides, registries)
        if run.plan.done:  # a complete run stays as it is
            loaded = cls.load(run.run_dir, registries)
            return loaded, run.plan.recorded_result(loaded.tokenizer.unit)
        tokenizer = load_saved(run.recipe.tokenizer.cls, run.run_dir / "tokenizer", "tokenizer")
        pipe = cls(run.recipe, tokenizer, run_dir=run.run_dir)
        return pipe, pipe._train(run, progress)

    def _train(self, run: TrainingRun, progress: bool) -> TrainResult:
        """The path every training takes, new or resumed: prepare the data (and the tokenizer),
        build the prior, check it against the data, train."""
        self.run_dir = run.run_dir
        with run.preparing():
            prepared = run.prepare(self.tokenizer)
            self.tokenizer, self.class_names = prepared.tokenizer, prepared.class_names
            self._prior = self.build_prior()
            run.check(self._prior, prepared)
        return run.train(self._prior, prepared, self, progress)

    # -- using a trained pipeline ----------------------------------------------------------------
    def grid_columns(self, cond: int | list[int] | None = None) -> int | None:
        """One column per class when samples cycle through the classes (a row shows each)."""
        return self.prior.num_classes if self.prior.num_classes and cond is None else None

    def generate(self, n: int | None = None, *, cond: int | list[int] | None = None,
                 prompt: str | None = None, draft: Pipeline | str | Path | None = None,
                 seed: int | None = None, progress: bool = False, **decoding: Any) -> Generation:
        """Sample token ids: `decoding` overrides the recipe's `sample:` settings (temperature,
        top_k, top_p, min_p, repetition_penalty, greedy, num_beams, length_penalty,
        max_new_tokens, stop, num_draft_tokens, compile). `draft`: a pipeline (or run directory) with
        the same tokenizer for speculative decoding, or "ngram[:N]" (prompt lookup, no model)
        or "layers:M" (the target's first M layers). The prompt's ids are not in the result.
        `progress`: a bar over the positions drawn (pipelines/io/progress.py)."""
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
        if is_draft_spec(draft) and not Path(draft).is_dir():
            draft_prior = draft  # "ngram[:N]" or "layers:M": built from the target itself
        elif draft is not None:
            draft_pipe = draft if isinstance(draft, Pipeline) else Pipeline.load(draft)
            if draft_pipe.tokenizer.fingerprint() != self.tokenizer.fingerprint():
                raise TokarError("the draft run uses a different tokenizer: speculative decoding "
                                 "needs the very same token ids (train both on the same data).")
            mine, theirs = self.prior.num_classes, draft_pipe.prior.num_classes
            if mine != theirs:  # the draft would be asked for classes it never learned, or none
                what = lambda k: f"{k} classes" if k else "no classes"  # noqa: E731
                raise TokarError(f"the draft run {draft_pipe.run_dir or draft} conditions on "
                                 f"{what(theirs)} and this run on {what(mine)}: speculative "
                                 "decoding needs a draft conditioned like its target; train the "
                                 "draft with the same classes.")
            draft_prior = draft_pipe.prior.to(device)
        labels = self._labels(n, cond)
        gen = torch.Generator().manual_seed(seed)
        with progress_bar(total=config.max_new_tokens, desc="sampling", unit="token",
                          disable=not progress, leave=False) as bar:
            return generate(prior, n, config, cond=labels.to(device) if labels is not None else None,
                            prompt=prompt_ids, generator=gen, draft=draft_prior,
                            registry=self.processors, on_step=lambda: bar.update(1))

    def sample(self, n: int | None = None, **kwargs: Any) -> list[Any]:
        """Draw samples and decode them to data (str, PIL image...). Takes the arguments of
        `generate`; text samples include their prompt."""
        return self.decode(self.generate(n, **kwargs), kwargs.get("prompt"))

    def decode(self, result: Generation, prompt: str | None = None) -> list[Any]:
        """Generated ids -> data; text samples start with their prompt."""
        prompt = prompt if prompt is not None else (self.recipe.sample.prompt or "")
        layout = self.tokenizer.layout
        if layout.kind == "grid":
            # the prior generates in its order; samples go back to data order
            return self.ordered_tokenizer.decode_batch(result.tokens.view(-1, *layout.shape).cpu())
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

    def score(self, examples: list[Any] | None = None, batch_size: int = 64,
              labels: list[int] | int | None = None, ids: list[str] | None = None,
              per_token: bool = False, progress: bool = False, ensemble: int | None = None) -> Score:
        """Exact negative log-likelihood of `examples` (default: the validation split), in bits
        per data unit, with one ExampleScore per example (`per_token`: each position's nats
        too, in the data's order of positions whatever the recipe's `order`). Sequences longer
        than the prior's context are scored with a sliding window (priors/likelihood.py).
        `ensemble=N`: each example by the prior's test-time ensemble of its first N orderings
        (MADE's masks), -log of the mean likelihood; totals only, no per-token values.
        Under a multi-process launch each process scores a shard. `progress`: a bar over the
        tokens scored."""
        if examples is None:
            splits = self.recipe.data.cls(self.recipe.data.config).load()
            examples = list(splits["validation"]["example"])
            if "label" in splits["validation"].column_names:
                labels = list(splits["validation"]["label"])
            ids = ids or [f"validation/{i}" for i in range(len(examples))]
        elif isinstance(labels, int):
            labels = [labels] * len(examples)
        ids = list(ids) if ids is not None else [str(i) for i in range(len(examples))]
        keep = [i for i, x in enumerate(examples) if self.tokenizer.count_units(x) > 0]
        if not keep:
            raise DataError("nothing to score: the data is empty.")
        score = score_examples(self.prior, self.ordered_tokenizer, [examples[i] for i in keep],
                               [labels[i] for i in keep] if labels is not None else None,
                               [ids[i] for i in keep], batch_size, per_token, process_state(),
                               progress=progress, ensemble=ensemble)
        if per_token and not self.ordering.identity:  # surprise maps are drawn in data order
            for e in score.per_example or []:
                if e.token_nats is not None:
                    e.token_nats = self.ordering.unpermute(torch.tensor(e.token_nats)).tolist()
        return score

    # -- lossless compression (pipelines/compression/container.py) ------------------------------------------
    def compress(self, data: Any, cond: int | str | None = None, *, block_length: int | None = None,
                 batch_size: int | None = None, threads: int | None = None, portable: bool = True,
                 progress: Callable[[int, int], None] | None = None) -> bytes:
        """One example (text as str or bytes, an image, audio for mu-law runs) -> the bytes of a
        compressed file that `decompress` turns back into it exactly (mu-law: its codes).
        `cond`: its class, for class-conditional priors. `block_length` tokens per block and
        `batch_size` blocks coded in parallel trade context for speed (BENCHMARKS.md).
        `portable` (default): the integer-exact coder, so the file decodes on any machine, with
        this run's frozen codec (RUN/codecs/) even after further training; False: the float
        prior (the same kind of machine, these very weights). `threads`: torch threads while
        coding (portable: default all of this process's; float: default 1, and decoding uses the
        same). `progress(tokens, total)` as coding goes (after each position)."""
        return self.compress_all([data], None if cond is None else [cond], block_length=block_length,
                                 batch_size=batch_size, threads=threads, portable=portable,
                                 progress=progress, _many=False)

    def compress_all(self, examples: list[Any], labels: list[int | str] | None = None, *,
                     block_length: int | None = None, batch_size: int | None = None,
                     threads: int | None = None, portable: bool = True,
                     progress: Callable[[int, int], None] | None = None, _many: bool = True) -> bytes:
        """Several examples in one file (one header; images coded `batch_size` at a time)."""
        conds = None if labels is None else [self.class_index(c) for c in labels]
        settings = Settings(block_length, batch_size, threads)
        self.prior.eval()
        compress_mode(self.tokenizer)  # a continuous or lossy tokenizer's refusal comes first
        model = codec_model(self.codec()) if portable else \
            float_model(self.prior, self.ordered_tokenizer)
        return compress(model, list(examples), conds, settings, many=_many,
                        run=self.run_dir.name if self.run_dir else None, progress=progress)

    def codec(self, freeze: bool = True) -> Codec:
        """The portable codec of the prior's current weights (pipelines/compression/codecs.py),
        frozen into RUN/codecs/<fingerprint>/ on first use (`freeze`, when the pipeline has a
        run directory)."""
        key = self.prior.fingerprint()
        if self._codec is None or self._codec[0] != key:
            self._codec = (key, build_codec(self.prior, self.ordered_tokenizer, self.recipe.order,
                                            self.run_dir.name if self.run_dir else None))
        codec = self._codec[1]
        if freeze and self.run_dir is not None:
            freeze_codec(codec, self.run_dir)
        return codec

    def decompress(self, blob: bytes, codes: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> Any:
        """The example a `compress` file holds (`codes`: its token ids instead)."""
        out, many = self._decompress(blob, codes, progress)
        if many:
            raise TokarError(f"this file holds a list of {len(out)} examples: use decompress_all.")
        return out[0]

    def decompress_all(self, blob: bytes, codes: bool = False) -> list[Any]:
        """Every example a compressed file holds, in order."""
        return self._decompress(blob, codes, None)[0]

    def _decompress(self, blob: bytes, codes: bool,
                    progress: Callable[[int, int], None] | None) -> tuple[list[Any], bool]:
        run = self.run_dir.name if self.run_dir else None

        def resolve(h: dict[str, Any]) -> Any:
            if not h["coder"]["portable"]:
                self.prior.eval()
                check_float_model(h, self.prior, self.ordered_tokenizer, run)
                return float_model(self.prior, self.ordered_tokenizer)
            wanted = h["coder"]["codec"]
            found = find_codec(self.run_dir, wanted) if self.run_dir is not None else None
            if found is not None:
                return codec_model(load_codec(found))
            current = self.codec(freeze=False)
            if current.fingerprint == wanted:
                return codec_model(current)
            where = f" (run '{h['run']}')" if h.get("run") else ""
            raise CompressionError(
                f"this file was compressed with another model{where}: its codec {wanted} is not "
                f"in {run or 'this pipeline'} (RUN/codecs/; this prior's codec is "
                f"{current.fingerprint}). Decompress it with the run that compressed it or the "
                "folder `tokar export-codec` wrote.")

        return decompress(blob, resolve, codes, progress)

    # -- anomaly detection (pipelines/detection/detectors.py) -----------------------------------------------
    def detect(self, examples: list[Any], method: str = "likelihood", *,
               ids: list[str] | None = None, background: Pipeline | str | Path | None = None,
               fpr: float = 0.05, group_size: int = 5, compressor: str | None = None,
               per_token: bool = False, calibration_examples: int = 1000) -> DetectResult:
        """Flag anomalous (out-of-distribution) examples by their exact likelihood: `method`
        likelihood, ratio (against a `background` run trained on mutated inputs), typicality
        (groups of `group_size`) or complexity (a generic `compressor`); thresholds at `fpr`
        calibrated on the validation split and kept in the run directory
        (pipelines/detection/detectors.py)."""
        return detect(self, examples, method, ids=ids, background=self.load_background(background),
                      fpr=fpr,
                      group_size=group_size, compressor=compressor, per_token=per_token,
                      calibration_examples=calibration_examples)

    def load_background(self, background: Pipeline | str | Path | None) -> Pipeline | None:
        """The background run of the likelihood ratio (a run directory or a loaded pipeline),
        on this prior's device; None stays None."""
        if background is None:
            return None
        bg = background if isinstance(background, Pipeline) else Pipeline.load(background)
        bg.prior.to(next(self.prior.parameters()).device)  # in place: nn.Module.to
        return bg

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
            prior = load_saved(recipe.prior.cls, run_dir / "prior", "prior", heads=_heads(recipe))
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


__all__ = ["Pipeline", "Score"]


def _heads(recipe: Recipe) -> Registry | None:
    return recipe.registries.heads if recipe.registries is not None else None
