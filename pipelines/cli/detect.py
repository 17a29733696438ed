"""`tokar detect` and `tokar detect-eval`: the command line of pipelines/detection/detectors.py.

    tokar detect RUN_DIR DATA [--method likelihood|ratio|typicality|complexity]
                 [--background RUN_DIR2] [--fpr 0.05] [--out scores.jsonl] [--maps DIR]
    tokar detect-eval RUN_DIR --in IN --ood OOD [--background RUN_DIR2] [--plot hist.png]

`detect` writes one JSON line per input (id, unit, bits per unit, score, p-value, verdict; with
--out to a file, else to stdout) and a summary; `detect-eval` prints AUROC, AUPRC, FPR at 95% TPR
and the calibrated operating point of every method as JSON and draws the score histograms.
Imports stay inside the commands: building the parser costs nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines.cli.options import add_precision, add_threads
from pipelines.detection.data import read_data
from pipelines.detection.evaluate import evaluate, plot_histograms
from pipelines.detection.surprise import write_maps
from pipelines.io.atomic import is_stdout, write_json_atomically, write_text_atomically
from pipelines.pipeline import Pipeline
from pipelines.training.trainer import process_state

METHODS = ("likelihood", "ratio", "typicality", "complexity")  # pipelines.detection.detectors.METHODS


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--background", metavar="RUN_DIR2", help="likelihood ratio: a run with the "
                   "same tokenizer trained on mutated inputs (data.augment.mutate=0.2)")
    p.add_argument("--fpr", type=float, default=0.05, help="false-positive rate the threshold is "
                   "calibrated at on the run's validation split (default 0.05)")
    p.add_argument("--group-size", type=int, default=5, help="typicality: inputs tested together, "
                   "consecutive in DATA's order (default 5)")
    p.add_argument("--compressor", choices=("png", "flac", "xz"), help="complexity: the generic "
                   "compressor (default: png for images, flac for audio, xz for text)")
    p.add_argument("--passage", type=int, default=256, help="text: characters per passage, each "
                   "checked on its own (0: whole files; default 256)")
    p.add_argument("--calibration-examples", type=int, default=1000, help="validation examples "
                   "(a uniform subsample) that thresholds and p-values are calibrated on")
    add_precision(p)
    add_threads(p)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="flag anomalous (out-of-distribution) inputs by their exact "
                       "likelihood: one JSON line per input")
    p.add_argument("run_dir")
    p.add_argument("data", help="an image, a folder of images or an .npz of uint8 (N, H, W); a "
                   "text file or folder; an audio file or folder")
    p.add_argument("--method", choices=METHODS, default="likelihood")
    p.add_argument("--out", metavar="SCORES.jsonl", help="write the JSON lines here (default: stdout)")
    p.add_argument("--maps", metavar="DIR", help="also write a surprise map per input (bits per "
                   "pixel / character / sample) into DIR")
    _common(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("detect-eval", help="AUROC, AUPRC and FPR at 95%% TPR of every detection "
                       "method on in-distribution vs OOD data, and a histogram of their scores")
    p.add_argument("run_dir")
    p.add_argument("--in", dest="in_data", required=True, metavar="IN",
                   help="in-distribution data (held out from training)")
    p.add_argument("--ood", required=True, metavar="OOD", help="out-of-distribution data")
    p.add_argument("--methods", help="comma-separated (default: all; ratio needs --background)")
    p.add_argument("--plot", metavar="PNG", help="the score histograms (default: "
                   "RUN_DIR/detect/histogram.png)")
    p.add_argument("--out", metavar="REPORT.json", help="also write the report here")
    _common(p)
    p.set_defaults(func=cmd_detect_eval)


def cmd_detect(args: argparse.Namespace) -> int:
    pipe = Pipeline.load(args.run_dir, precision=args.precision)
    ids, examples = read_data(args.data, pipe.tokenizer, args.passage)
    result = pipe.detect(examples, args.method, ids=ids, background=args.background, fpr=args.fpr,
                         group_size=args.group_size, compressor=args.compressor,
                         per_token=bool(args.maps), calibration_examples=args.calibration_examples)
    if not process_state().is_main_process:
        return 0
    lines = "".join(json.dumps(d.to_dict(result.unit)) + "\n" for d in result.detections)
    summary = result.summary()
    if args.maps:
        titles = [f"{d.id}: {d.bits_per_unit:.3f} bits/{result.unit}, {result.method} score "
                  f"{d.score:.3f}, p={d.p_value:.3f} ({'anomalous' if d.anomalous else 'normal'})"
                  for d in result.detections]
        write_maps(pipe.tokenizer, ids, examples, [d.token_nats for d in result.detections],
                   args.maps, titles)
        summary["maps"] = str(args.maps)
    if args.out and args.out != "-":  # `--out -`: standard output, as without --out
        write_text_atomically(Path(args.out), lines)
        summary["out"] = str(args.out)
        print(json.dumps(summary))
    else:
        sys.stdout.write(lines)
        print(json.dumps(summary), file=sys.stderr)
    return 0


def cmd_detect_eval(args: argparse.Namespace) -> int:
    pipe = Pipeline.load(args.run_dir, precision=args.precision)
    in_ids, in_examples = read_data(args.in_data, pipe.tokenizer, args.passage)
    ood_ids, ood_examples = read_data(args.ood, pipe.tokenizer, args.passage)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    report = evaluate(pipe, in_examples, ood_examples, in_ids=in_ids, ood_ids=ood_ids,
                      methods=methods, background=pipe.load_background(args.background),
                      fpr=args.fpr,
                      group_size=args.group_size, compressor=args.compressor,
                      calibration_examples=args.calibration_examples)
    if not process_state().is_main_process:
        return 0
    plot = Path(args.plot) if args.plot else Path(args.run_dir) / "detect" / "histogram.png"
    payload = {**report.to_dict(), "plot": str(plot_histograms(report, plot, Path(args.in_data).name,
                                                               Path(args.ood).name))}
    if args.out and not is_stdout(args.out):  # `--out -`: the report printed once, below
        write_json_atomically(Path(args.out), payload)
    print(json.dumps(payload))
    return 0
