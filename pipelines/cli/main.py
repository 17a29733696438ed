"""`tokar`: the command line.

    tokar init DATA [-o recipe.yaml] [--force]
    tokar train RECIPE [key=value ...] [~key ...] [--run-dir DIR]
    tokar train --resume RUN_DIR [key=value ...]
    tokar sample RUN_DIR [-n N] [--temperature T] [--top-k K] [--seed S] [--class C] [--out PATH]
    tokar score RUN_DIR [DATA] [--per-example OUT.jsonl] [--ensemble N]
    tokar validate RECIPE [key=value ...]
    tokar codes verify RUN_DIR [--split S] [--limit N]
    tokar plot RUN_DIR [--out PATH]
    tokar detect RUN_DIR DATA [--method likelihood|ratio|typicality|complexity] [--background RUN_DIR2]
                 [--fpr 0.05] [--out scores.jsonl] [--maps DIR]
    tokar detect-eval RUN_DIR --in IN --ood OOD [--background RUN_DIR2] [--plot PNG]
    tokar plugins
    tokar compress RUN_DIR INPUT [-o OUT] [--force] [--class C] [--no-portable]
    tokar decompress RUN_DIR|CODEC_DIR INPUT [-o OUT] [--force]
    tokar export-codec RUN_DIR DIR

One error boundary (`main`): every expected failure (a TokarError, or an error of the environment
such as a file the OS refused or memory that ran out) is printed as one `error: ...` message and
exits with status 2; an unexpected error is a bug: its one-line summary comes first, then the
traceback to report, exit status 1. Ctrl-C exits with 130, a closed output pipe quietly.
Every command that computes takes `--threads N` (torch's CPU threads; train: train.threads).
When stderr is not a terminal, progress is a plain line every 30 s instead of a redrawn bar.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch.distributed as dist

from pipelines.cli.detect import add_parsers as add_detect_parsers
from pipelines.cli.init import add_parser as add_init_parser
from pipelines.cli.options import add_no_progress, add_precision, add_threads
from pipelines.compression.codecs import CODECS_DIR, export_codecs, find_codec, is_codec_dir, load_codec
from pipelines.compression.container import codec_model, decompress, read_container
from pipelines.compression.files import (
    compressed_output,
    decompressed_output,
    read_input,
    write_bytes,
    write_output,
)
from pipelines.detection.data import read_audio_paths, read_images
from pipelines.io.atomic import is_stdout, write_text_atomically
from pipelines.io.progress import progress_bar, quiet_library_bars
from pipelines.io.safe import read_text
from pipelines.pipeline import Pipeline
from pipelines.recipe.limits import check_recipe_memory
from pipelines.recipe.loader import load_recipe
from pipelines.runs import plot
from pipelines.runs.samples import write_samples
from pipelines.training.stage1 import build_tokenizer, verify_codes
from pipelines.training.trainer import process_state
from plugins.errors import DataError, TokarError, environment_error
from plugins.manager import get_registries
from plugins.resources import check_fits, use_threads


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

    quiet_library_bars()
    try:
        return run_command(args.func, args)
    finally:
        leave_process_group()


def leave_process_group() -> None:
    """Under torchrun, take the process group down before the interpreter does, as PyTorch
    asks: left to interpreter exit, the teardown of gloo's threads aborted a worker once in a
    CI run ("terminate called without an active exception") after the command had finished."""

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_command(func: Any, args: argparse.Namespace) -> int:
    """The error boundary: exit status 0, 2 (an expected failure, one message) or 1 (a bug)."""
    try:
        if args.command != "train":  # train: the flag became train.threads (cmd_train)
            use_threads(getattr(args, "threads", None))
        return func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tokar ... | head`: the reader left; nothing more to say
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the exit flush cannot fail again
        return 141
    except Exception as exc:  # noqa: BLE001 - this is the boundary
        error = environment_error(exc)
        if error is not None:
            print(f"error: {error}", file=sys.stderr)
            return 2
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: internal error: {type(exc).__name__}: {first}", file=sys.stderr)
        print("This is a bug in tokar; please report it with the traceback below.", file=sys.stderr)
        traceback.print_exc()
        return 1


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
                   "complete checkpoint (overrides may extend train.max_steps; "
                   "train.max_seconds=N grants N more seconds)")
    add_no_progress(p, "without a terminal, progress is a plain line every "
                    "$TOKAR_PROGRESS_INTERVAL=30 s")
    add_threads(p, "; train: the recipe's train.threads")
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
    add_precision(p)
    p.add_argument("--compile", action="store_true", help="compile the one-token step (wavenet: "
                   "a native loop on a CPU, several times faster per sample)")
    p.add_argument("--out", help="output file (.png for images, .txt for text, .wav for one "
                   "audio clip), '-' for standard output, or folder (default: RUN_DIR/samples)")
    add_threads(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("score", help="bits per data unit of some data under a trained run")
    p.add_argument("run_dir")
    p.add_argument("data", nargs="?", help="a text file, an image or a folder of images "
                   "(default: the run's validation split)")
    add_precision(p)
    p.add_argument("--class", dest="label", metavar="LABEL",
                   help="class of DATA (conditional priors): index or name")
    p.add_argument("--per-example", metavar="OUT.jsonl", help="also write one JSON line per "
                   "example: id, tokens, units, nats, bits per unit ('-': standard output, the summary "
                   "then goes to stderr)")
    p.add_argument("--ensemble", type=int, metavar="N", help="score by the test-time ensemble "
                   "of the prior's first N orderings (made: its masks): each example's NLL is "
                   "-log of the mean of the N likelihoods. Per-token values are not defined "
                   "then: --per-example gives each example's totals only")
    add_threads(p)
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
    add_threads(p)
    p.set_defaults(func=cmd_codes_verify)

    p = sub.add_parser("compress", help="compress a file losslessly with a trained run "
                       "(arithmetic coding under the prior): INPUT -> INPUT.tkz")
    p.add_argument("run_dir")
    p.add_argument("input", help="a text file (any bytes), an image, or audio (mu-law runs: "
                   "lossless on the codes)")
    p.add_argument("-o", "--output", help="output file (default: INPUT.tkz)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--class", dest="label", metavar="LABEL", help="class of INPUT (conditional "
                   "priors): index or name; stored in the file")
    p.add_argument("--block-length", type=int, help="tokens per independently coded block "
                   "(default 2048; portable gpt: its context, longer slides the window; "
                   "images: one per block)")
    p.add_argument("--batch-size", type=int, help="blocks coded in parallel (default 64; "
                   "portable gpt: as many as 256 MB of its key/value cache holds, up to 1024)")
    add_threads(p, "; portable coding uses them all (files do not depend on them); "
                "--no-portable codes with N, default 1, stored: decompression uses the same")
    p.add_argument("--verify", action="store_true", help="decompress before writing and check")
    p.add_argument("--no-portable", dest="portable", action="store_false", help="code with the "
                   "float prior instead of its integer-exact coder: decodes only on the same kind "
                   "of machine, with these very weights (the default file decodes anywhere, with "
                   "the codec frozen in RUN_DIR/codecs/)")
    add_no_progress(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="decompress a file made by `tokar compress` with the "
                       "same run (or the codec `tokar export-codec` wrote): INPUT.tkz -> INPUT")
    p.add_argument("run_dir", help="the run that compressed INPUT, or a codec folder")
    p.add_argument("input")
    p.add_argument("-o", "--output", help="output file (default: INPUT without .tkz; images "
                   ".png, audio .wav; OUT.npy: the token ids)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    add_no_progress(p)
    add_threads(p)
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("export-codec", help="copy a run's frozen codecs (what decodes its portable "
                       "files) into DIR/<fingerprint>/: `tokar decompress DIR FILE` needs no run")
    p.add_argument("run_dir")
    p.add_argument("out", metavar="DIR")
    p.set_defaults(func=cmd_export_codec)

    add_detect_parsers(sub)  # tokar detect, tokar detect-eval (pipelines/cli/detect.py)
    add_init_parser(sub)  # tokar init (pipelines/cli/init.py)

    p = sub.add_parser("plugins", help="list every registered tokenizer, prior and source")
    p.set_defaults(func=cmd_plugins)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    if args.threads is not None:  # recorded in the run like any setting, and checked (>= 1) there
        use_threads(args.threads)
        args.overrides = [*args.overrides, f"train.threads={args.threads}"]
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
    limit = {"max_seconds": f"its time budget, train.max_seconds={pipe.recipe.train.max_seconds:g}"
             if pipe.recipe.train.max_seconds else "its time budget",
             "early_stopping": "early stopping"}.get(result.stopped_by,
                                                      f"train.max_steps={pipe.recipe.train.max_steps}")
    if result.val is not None:
        print(f"validation: {result.val.bits_per_unit:.4f} bits/{result.val.unit} "
              f"({result.val.nats_per_token:.4f} nats/token) after {result.steps} steps "
              f"in {result.seconds:.0f}s (stopped by {limit})", file=sys.stderr)
    print(pipe.run_dir)
    return 0


def check_sizes(args: argparse.Namespace) -> None:
    """Command-line sizes, before a run is even loaded: positive, and not absurd for memory."""
    for flag, value in (("-n", args.n), ("--beam-size", args.beam_size),
                        ("--max-new-tokens", args.max_new_tokens), ("--draft-tokens", args.draft_tokens),
                        ("--top-k", args.top_k)):
        if value is not None and value < 1:
            raise TokarError(f"{flag} must be at least 1, got {value}.")
    if args.seed is not None and not -(2**63) <= args.seed < 2**64:  # what torch.Generator takes
        raise TokarError(f"--seed must fit in 64 bits, got {args.seed}.")
    n, beams, tokens = args.n or 1, args.beam_size or 1, args.max_new_tokens or 1
    # 8 bytes per token id, before any model memory: a floor that already rules out typos
    check_fits(float(n) * beams * tokens * 8, f"-n {n} x --beam-size {beams} x --max-new-tokens {tokens}",
               "ask for fewer samples, beams or tokens.")


def cmd_sample(args: argparse.Namespace) -> int:
    check_sizes(args)
    pipe = Pipeline.load(args.run_dir, precision=args.precision)
    decoding = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                    repetition_penalty=args.repetition_penalty, greedy=args.greedy or None,
                    num_beams=args.beam_size, length_penalty=args.length_penalty,
                    stop=args.stop, num_draft_tokens=args.draft_tokens,
                    compile=args.compile or None)
    n = args.n if args.n is not None else (1 if args.draft else None)
    result = pipe.generate(n, seed=args.seed, cond=args.label, prompt=args.prompt,
                           draft=args.draft, progress=not args.quiet, **decoding)
    samples = pipe.decode(result, prompt=args.prompt)
    if result.acceptance_rate is not None:
        print(f"speculative decoding: {result.accepted}/{result.proposed} draft tokens accepted "
              f"({result.acceptance_rate:.1%})", file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.run_dir) / "samples"
    written = write_samples(samples, out, pipe.grid_columns(args.label), tokenizer=pipe.tokenizer)
    if not is_stdout(args.out):  # `--out -`: standard output holds the samples themselves
        for path in written:
            print(path)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    pipe = Pipeline.load(args.run_dir, precision=args.precision)
    ids, examples = (None, None) if args.data is None else \
        read_examples(Path(args.data), pipe.tokenizer.modality)
    label = None if args.label is None else pipe.class_index(args.label)
    score = pipe.score(examples, labels=label, ids=ids, progress=not args.quiet, ensemble=args.ensemble)
    if not process_state().is_main_process:  # data-parallel scoring: the main process reports
        return 0
    if args.per_example:
        lines = [json.dumps(e.to_dict(score.unit)) for e in score.per_example or []]
        write_text_atomically(Path(args.per_example), "".join(line + "\n" for line in lines))
    # `--per-example -`: standard output is the JSON lines; the summary goes beside them
    print(json.dumps(score.to_dict()), file=sys.stderr if is_stdout(args.per_example) else sys.stdout)
    return 0


def read_examples(path: Path, modality: str) -> tuple[list[str], list[Any]]:
    """(ids, examples) of `tokar score DATA`: a text file, an image or a folder of images, audio
    files, each id its file's path. Every file is checked to be a regular file (never a FIFO or a
    device) before it is opened; images and audio are read as `tokar detect` reads them."""

    if not path.exists():
        raise DataError(f"{path} does not exist.")
    if modality == "text":
        if path.is_dir():
            raise DataError(f"{path} is a folder; `tokar score` reads one text file for text runs.")
        return [str(path)], [read_text(path, "text file", DataError)]
    if modality == "image":
        return read_images(path)
    if modality == "audio":  # paths: the tokenizer reads (and resamples) them
        paths = read_audio_paths(path)
        return paths, paths
    raise DataError(f"`tokar score DATA` does not read {modality} files yet; score the run's "
                    "validation split by leaving DATA out.")


def cmd_compress(args: argparse.Namespace) -> int:
    source = Path(args.input)
    out = compressed_output(source, args.output, args.force)
    pipe = Pipeline.load(args.run_dir)
    data = read_input(source, pipe.tokenizer.modality)
    size = source.stat().st_size
    with byte_progress(args, size, "compress") as update:
        blob = pipe.compress(data, args.label, block_length=args.block_length,
                             batch_size=args.batch_size, portable=args.portable,
                             threads=args.threads if not args.portable else None,
                             progress=update)
    if args.verify:
        pipe.decompress(blob)  # checks the CRC32 of the original
    write_bytes(out, blob)
    print(f"{source}: {size:,} -> {len(blob):,} bytes ({8 * len(blob) / max(size, 1):.3f} bits "
          "per input byte)", file=sys.stderr)
    print(out)
    return 0


@contextlib.contextmanager
def byte_progress(args: argparse.Namespace, size: int, what: str) -> Iterator[Any]:
    """A bar of bytes done and KB/s (pipelines/io/progress.py: a plain line every 30 s when
    stderr is not a terminal), fed (tokens of each coded batch, all tokens)."""

    bar = progress_bar(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
                       disable=args.no_progress or args.quiet or not size)
    try:
        yield lambda n, total: bar.update(min(n * size / max(total, 1), bar.total - bar.n))
    finally:
        bar.close()


def cmd_decompress(args: argparse.Namespace) -> int:
    source = Path(args.input)
    if not source.is_file():
        raise DataError(f"{source} does not exist or is not a file.")
    blob = source.read_bytes()
    c = read_container(blob)
    items = c.header["items"]
    if len(items) != 1:
        raise TokarError(f"{source} holds {len(items)} examples; the command line writes one "
                         "(use Pipeline.decompress_all).")
    kind, modality = items[0]["kind"], items[0]["meta"].get("modality", "")
    out = decompressed_output(source, args.output, args.force, kind, modality)
    ids = out.suffix.lower() == ".npy" and kind != "array"
    where = Path(args.run_dir)
    with byte_progress(args, items[0]["length"], "decompress") as update:
        if is_codec_dir(where):  # a codec folder: no run, no float prior
            tokenizer = None

            def resolve(h: dict[str, Any]) -> Any:
                nonlocal tokenizer
                wanted = h["coder"]["codec"] if h["coder"]["portable"] else None
                found = find_codec(where, wanted) if wanted else None
                if found is None:
                    raise TokarError(f"{where} holds no codec for {source} ("
                                     + (f"it needs codec {wanted}" if wanted else "it was "
                                        "compressed with --no-portable, which needs its run")
                                     + "); pass the run that compressed it.")
                model = codec_model(load_codec(found))
                tokenizer = model.tokenizer
                return model

            data = decompress(blob, resolve, ids, update)[0][0]
        else:
            pipe = Pipeline.load(where)
            tokenizer = pipe.tokenizer
            data = pipe.decompress(blob, codes=ids, progress=update)
    write_output(out, data, kind, tokenizer)
    print(out)
    return 0


def cmd_export_codec(args: argparse.Namespace) -> int:
    run = Path(args.run_dir)
    if not (run / CODECS_DIR).is_dir():  # none frozen yet: freeze the current weights' codec
        Pipeline.load(run).codec()
    for path in export_codecs(run, Path(args.out)):
        print(path)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    print(plot.plot_run(args.run_dir, args.out))
    return 0


def cmd_codes_verify(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise TokarError(f"--limit must be at least 1, got {args.limit}.")
    print(json.dumps(verify_codes(Pipeline.load(args.run_dir), args.split, args.limit)))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    # what `tokar train` does next, short of reading data: a pretrained tokenizer must be one of
    # the recipe's kind, fitted, and the model and batch must fit in memory
    tokenizer = build_tokenizer(recipe.tokenizer)
    estimate = check_recipe_memory(recipe, tokenizer)
    size = f", ~{estimate.parameters / 1e6:.2f}M parameters" if estimate is not None else ""
    print(f"ok: {args.recipe}: data={recipe.data.name} tokenizer={recipe.tokenizer.name} "
          f"prior={recipe.prior.name} ({recipe.train.max_steps} steps{size})")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    registries = get_registries()
    rows = [(kind, e.name, e.provider, f"{getattr(e.component, '__module__', '?')}."
             f"{getattr(e.component, '__qualname__', type(e.component).__name__)}")
            for kind, reg in (("tokenizer", registries.tokenizers), ("prior", registries.priors),
                              ("source", registries.sources), ("head", registries.heads),
                              ("processor", registries.processors))
            for e in reg]
    widths = [max(len(r[i]) for r in rows + [("KIND", "NAME", "PROVIDED BY", "CLASS")])
              for i in range(4)]
    for row in [("KIND", "NAME", "PROVIDED BY", "CLASS"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())
    if registries.problems:  # refused registrations and clashing names: not available
        print(f"\n{len(registries.problems)} problem(s); these components are not available:")
        for problem in registries.problems:
            print(f"  - {problem}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
