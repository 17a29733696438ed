"""Tiny Shakespeare (in-distribution) vs other English text and vs Python code, per 256-character
passage: AUROC, AUPRC and FPR at 95% TPR of the four detectors of pipelines/detection/detectors.py.

    TOKAR_DATA_DIR=../shared/data python benchmarks/ood_text.py --seconds 600

- in-distribution: the last 10% of tinyshakespeare.txt, held out from training and calibration;
  the model (recipes/shakespeare/char_gpt.yaml, with tokenizer.unk=true so that characters
  Shakespeare never used get the <unk> id instead of an error) trains on the first 90%, of which
  its own last 10% is the validation split that thresholds are calibrated on;
- background (likelihood ratio): the same recipe with data.augment.mutate=0.2;
- OOD English: the licence texts every Debian system ships in /usr/share/common-licenses (GPL-3,
  Apache-2.0, MPL-2.0, GFDL-1.3, Artistic): English prose, of another era and register;
- OOD code: the Python sources of the standard library's json, email and logging packages;
- passages: non-overlapping 256-character windows, a uniform subsample of `--n` of each set;
  typicality on groups of 5 passages; complexity with xz (raw LZMA2).
Both models get `--seconds` of wall time (max_steps from a timed calibration).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, budget_overrides, emit, ood_table, subsample  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from pipelines.detection.data import read_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "shakespeare" / "char_gpt.yaml"
LICENSES = ["GPL-3", "Apache-2.0", "MPL-2.0", "GFDL-1.3", "Artistic"]
PACKAGES = ["json", "email", "logging"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600, help="training wall time per model")
    p.add_argument("--n", type=int, default=300, help="passages per set (uniform subsample)")
    p.add_argument("--passage", type=int, default=256)
    p.add_argument("--keep", type=Path, help="keep (and reuse) the runs here")
    args = p.parse_args()
    data_dir = Path(os.environ.get("TOKAR_DATA_DIR", "data"))
    text = (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        sets = {"shakespeare": work / "in", "english": work / "english", "code": work / "code"}
        for folder in sets.values():
            folder.mkdir(parents=True, exist_ok=True)
        (work / "train.txt").write_text(text[:cut], encoding="utf-8")
        (sets["shakespeare"] / "held_out.txt").write_text(text[cut:], encoding="utf-8")
        for name in LICENSES:
            shutil.copy(Path("/usr/share/common-licenses") / name, sets["english"] / name)
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        for package in PACKAGES:
            for f in sorted((stdlib / package).glob("*.py")):
                shutil.copy(f, sets["code"] / f"{package}_{f.name}")

        overrides = [f"data.path={work / 'train.txt'}", "tokenizer.unk=true", "train.eval_samples=0"]
        runs, info = {}, {}
        steps = None
        for name, extra in (("shakespeare", []), ("background", ["data.augment.mutate=0.2"])):
            run = work / name
            if not (run / "prior").is_dir():
                steps = steps or budget_overrides(RECIPE, args.seconds, work, overrides)
                shutil.rmtree(run, ignore_errors=True)
                with Stopwatch() as sw:
                    result = Pipeline.from_recipe(RECIPE, [*steps, *extra]).train(
                        run, progress=False)
                info[name] = {"steps": result.steps, "seconds": round(result.seconds, 1),
                              "cpu_share": sw.cpu_share, "val_bits_per_char": result.val.bits_per_unit}
            runs[name] = run
        pipe = Pipeline.load(runs["shakespeare"])
        data = {k: subsample(*read_data(v, pipe.tokenizer, args.passage), args.n, i)
                for i, (k, v) in enumerate(sets.items())}
        results, r = ood_table(pipe, data["shakespeare"], {k: data[k] for k in ('english', 'code')},
                               runs["background"], info)
        emit({**results, "passage_chars": args.passage, "budget_seconds_per_model": args.seconds,
              "calibration_passages": r["calibration_examples"], "runs": info})


if __name__ == "__main__":
    main()
