"""`tokar`: the command line.

    tokar train RECIPE [key=value ...] [~key ...] [--run-dir DIR]
    tokar train --resume RUN_DIR [key=value ...]
    tokar sample RUN_DIR [-n N] [--temperature T] [--top-k K] [--seed S] [--class C] [--out PATH]
    tokar score RUN_DIR [DATA]
    tokar validate RECIPE [key=value ...]
    tokar codes verify RUN_DIR [--split S] [--limit N]
    tokar plot RUN_DIR [--out PATH]
    tokar plugins

Errors tokar raises on purpose are printed as one short message (exit status 2), not a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from plugins.errors import DataError, TokarError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before or after options (`train R --run-dir D a.b=1`): argparse leaves
    # the later ones over, and they are accepted when they look like overrides.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in x or x.startswith("~") for x in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("datasets", "accelerate", "huggingface_hub", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args) or 0
    except TokarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokar", description="Two-stage tokenized generation "
                                     "with autoregressive models.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a recipe (or resume a run); prints the run directory")
    p.add_argument("recipe", nargs="?", help="a YAML recipe, e.g. recipes/shakespeare/char_gpt.yaml")
    p.add_argument("overrides", nargs="*", help="key.path=value or ~key.path")
    p.add_argument("--run-dir", help="where to write the run (default: runs/<recipe>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest "
                   "complete checkpoint (overrides may extend train.max_steps)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained run")
    p.add_argument("run_dir")
    p.add_argument("-n", type=int, help="number of samples (default: the recipe's sample.n)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float, help="nucleus sampling: smallest set with this mass")
    p.add_argument("--min-p", type=float, help="drop tokens below P x the most likely one")
    p.add_argument("--repetition-penalty", type=float)
    p.add_argument("--greedy", action="store_true", help="always the most likely token")
    p.add_argument("--beam-size", type=int, help="beam search with this many beams")
    p.add_argument("--length-penalty", type=float, help="beam scores / length**this (default 1)")
    p.add_argument("--max-new-tokens", type=int, help="length of text samples")
    p.add_argument("--prompt", help="text to continue")
    p.add_argument("--stop", action="append", help="a one-token string that ends a sample "
                   "(repeatable)")
    p.add_argument("--draft", metavar="DRAFT", help="speculative decoding: a smaller run "
                   "(same tokenizer) as the draft, 'ngram[:N]' (prompt lookup, no model) or "
                   "'layers:M' (the target's own first M layers)")
    p.add_argument("--draft-tokens", type=int, help="tokens per draft (default 4)")
    p.add_argument("--seed", type=int)
    p.add_argument("--class", dest="label", metavar="LABEL",
                   help="class for conditional priors: its index or its name (e.g. Sneaker)")
    p.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32",
                   help="weights for CPU inference (int8: dynamic quantization)")
    p.add_argument("--out", help="output file (.png for images, .txt for text) or folder "
                   "(default: RUN_DIR/samples)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("score", help="bits per data unit of some data under a trained run")
    p.add_argument("run_dir")
    p.add_argument("data", nargs="?", help="a text file, an image or a folder of images "
                   "(default: the run's validation split)")
    p.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32")
    p.add_argument("--class", dest="label", metavar="LABEL",
                   help="class of DATA (conditional priors): index or name")
    p.add_argument("--per-example", metavar="OUT.jsonl", help="also write one JSON line per "
                   "example: id, tokens, units, nats, bits per unit")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("validate", help="check a recipe without training")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plot", help="write a PNG of a run's training and validation curves")
    p.add_argument("run_dir")
    p.add_argument("--out", help="output PNG (default: RUN_DIR/curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("codes", help="inspect a run's cached codes (two-stage image runs)")
    codes = p.add_subparsers(dest="codes_command", required=True, metavar="ACTION")
    p = codes.add_parser("verify", help="decode the cached codes and report the reconstruction "
                         "error against the original images (MSE, PSNR) as JSON")
    p.add_argument("run_dir")
    p.add_argument("--split", default="validation", help="train or validation (default)")
    p.add_argument("--limit", type=int, help="only the first N images of the split")
    p.set_defaults(func=cmd_codes_verify)

    p = sub.add_parser("plugins", help="list every registered tokenizer, prior and source")
    p.set_defaults(func=cmd_plugins)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines.pipeline import Pipeline
    from pipelines.train import process_state

    if args.resume:
        if args.run_dir:
            raise TokarError("--resume continues RUN_DIR in place: leave out --run-dir.")
        overrides = [x for x in [args.recipe, *args.overrides] if x is not None]
        pipe, result = Pipeline.resume(args.resume, overrides, progress=not args.no_progress)
    else:
        if not args.recipe:
            raise TokarError("tokar train needs a RECIPE (or --resume RUN_DIR).")
        pipe = Pipeline.from_recipe(args.recipe, args.overrides)
        result = pipe.train(args.run_dir, progress=not args.no_progress)
    if not process_state().is_main_process:
        return 0
    if result.val is not None:
        print(f"validation: {result.val.bits_per_unit:.4f} bits/{result.val.unit} "
              f"({result.val.nats_per_token:.4f} nats/token) after {result.steps} steps "
              f"in {result.seconds:.0f}s", file=sys.stderr)
    print(pipe.run_dir)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from pipelines.pipeline import Pipeline
    from pipelines.samples import write_samples

    pipe = Pipeline.load(args.run_dir, precision=args.precision)
    decoding = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                    repetition_penalty=args.repetition_penalty, greedy=args.greedy or None,
                    num_beams=args.beam_size, length_penalty=args.length_penalty,
                    stop=args.stop, num_draft_tokens=args.draft_tokens)
    n = args.n if args.n is not None else (1 if args.draft else None)
    result = pipe.generate(n, seed=args.seed, cond=args.label, prompt=args.prompt,
                           draft=args.draft, **decoding)
    samples = pipe.decode(result, prompt=args.prompt)
    if result.acceptance_rate is not None:
        print(f"speculative decoding: {result.accepted}/{result.proposed} draft tokens accepted "
              f"({result.acceptance_rate:.1%})", file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.run_dir) / "samples"
    for path in write_samples(samples, out, pipe.grid_columns(args.label), tokenizer=pipe.tokenizer):
        print(path)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from pipelines.pipeline import Pipeline
    from pipelines.rundir import write_text_atomically
    from pipelines.train import process_state

    pipe = Pipeline.load(args.run_dir, precision=args.precision)
    ids, examples = (None, None) if args.data is None else \
        read_examples(Path(args.data), pipe.tokenizer.modality)
    label = None if args.label is None else pipe.class_index(args.label)
    score = pipe.score(examples, labels=label, ids=ids)
    if not process_state().is_main_process:  # data-parallel scoring: the main process reports
        return 0
    if args.per_example:
        lines = [json.dumps(e.to_dict(score.unit)) for e in score.per_example or []]
        write_text_atomically(Path(args.per_example), "".join(line + "\n" for line in lines))
    print(json.dumps(score.to_dict()))
    return 0


def read_examples(path: Path, modality: str) -> tuple[list[str], list[Any]]:
    """(ids, examples) of DATA: one file, or the files of a folder, named by their path."""
    files, examples = _read_examples(path, modality)
    return [str(f) for f in files], examples


def _read_examples(path: Path, modality: str) -> tuple[list[Path], list[Any]]:
    if not path.exists():
        raise DataError(f"{path} does not exist.")
    if modality == "text":
        if path.is_dir():
            raise DataError(f"{path} is a folder; `tokar score` reads one text file for text runs.")
        return [path], [path.read_text(encoding="utf-8")]
    if modality == "image":
        from PIL import Image

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg",
                       ".bmp", ".gif", ".webp"}) if path.is_dir() else [path]
        if not files:
            raise DataError(f"no images (.png, .jpg...) in {path}.")
        return files, [Image.open(p).copy() for p in files]
    if modality == "audio":  # paths: the tokenizer reads (and resamples) them
        from pipelines.audio_sources import AUDIO_SUFFIXES

        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES) \
            if path.is_dir() else [path]
        if not files:
            raise DataError(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in {path}.")
        return files, [str(p) for p in files]
    raise DataError(f"`tokar score DATA` does not read {modality} files yet; score the run's "
                    "validation split by leaving DATA out.")


def cmd_plot(args: argparse.Namespace) -> int:
    from pipelines.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


def cmd_codes_verify(args: argparse.Namespace) -> int:
    from pipelines.pipeline import Pipeline
    from pipelines.stage1 import verify_codes

    if args.limit is not None and args.limit < 1:
        raise TokarError(f"--limit must be at least 1, got {args.limit}.")
    print(json.dumps(verify_codes(Pipeline.load(args.run_dir), args.split, args.limit)))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from pipelines.recipe import load_recipe
    from pipelines.stage1 import tokenizer_dir

    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.tokenizer.pretrained:
        tokenizer_dir(recipe.tokenizer.pretrained)  # the folder must hold a saved tokenizer
    print(f"ok: {args.recipe}: data={recipe.data.name} tokenizer={recipe.tokenizer.name} "
          f"prior={recipe.prior.name} ({recipe.train.max_steps} steps)")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from plugins.manager import get_registries

    registries = get_registries()
    rows = [(kind, e.name, e.provider, f"{e.component.__module__}.{e.component.__qualname__}")
            for kind, reg in (("tokenizer", registries.tokenizers), ("prior", registries.priors),
                              ("source", registries.sources), ("head", registries.heads),
                              ("processor", registries.processors))
            for e in reg]
    widths = [max(len(r[i]) for r in rows + [("KIND", "NAME", "PROVIDED BY", "CLASS")])
              for i in range(4)]
    for row in [("KIND", "NAME", "PROVIDED BY", "CLASS"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
