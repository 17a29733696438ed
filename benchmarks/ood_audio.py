"""FSDD spoken digits (in-distribution) vs espeak-ng speech of the same words and vs noise: AUROC,
AUPRC and FPR at 95% TPR of the four detectors of pipelines/detection/detectors.py, per recording.

    apt-get install -y espeak-ng
    TOKAR_DATA_DIR=../shared/data python benchmarks/ood_audio.py --seconds 600

- model: an unconditional mu-law WaveNet (recipes/fsdd/mulaw_wavenet.yaml, made smaller for a
  CPU budget: one block of 10 dilated layers, 32 residual / 64 skip channels, windows of 2,048
  samples, batch 4), trained on FSDD's training recordings (index 5-49) for `--seconds`;
  thresholds calibrated on the 10% of those held out as its validation split;
- background (likelihood ratio): the same recipe with data.augment.mutate=0.2;
- in-distribution test: a uniform subsample of `--n` of FSDD's official test recordings (index
  0-4), never trained or calibrated on;
- OOD speech: espeak-ng saying "zero" ... "nine" in 6 English voices x 2 voice variants (120
  clips), each scaled to FSDD's median peak amplitude (0.285) so that loudness alone gives
  nothing away; OOD noise: 100 clips of white Gaussian noise at FSDD's median RMS (0.049),
  0.3-0.8 s long. Both written at 22,050 Hz and resampled to 8 kHz by the tokenizer;
- typicality on groups of 5 recordings; complexity with FLAC (8-bit mu-law codes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, budget_overrides, emit, ood_table, subsample  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from pipelines.detection.data import read_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "fsdd" / "mulaw_wavenet.yaml"
SMALL = ["data.label=none", "data.validation=split", "prior.n_classes=0", "prior.n_block=1",
         "prior.n_residual=32", "prior.n_skip=64", "train.batch_size=4", "train.warmup_steps=50",
         "train.eval_batches=5", "sample.n=1", "sample.max_new_tokens=800"]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbcwmd"]
VARIANTS = ["+m3", "+f2"]
FSDD_PEAK, FSDD_RMS, RATE = 0.285, 0.049, 22050


def espeak_set(out: Path) -> None:
    for voice in VOICES:
        for variant in VARIANTS:
            for word in WORDS:
                path = out / f"{word}_{voice}{variant}.wav"
                subprocess.run(["espeak-ng", "-v", voice + variant, "-w", str(path), word], check=True,
                               capture_output=True)
                x, rate = sf.read(path)
                sf.write(path, x * (FSDD_PEAK / max(np.abs(x).max(), 1e-9)), rate, subtype="PCM_16")


def noise_set(out: Path, n: int = 100) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        x = rng.normal(0, FSDD_RMS, int(rng.uniform(0.3, 0.8) * RATE)).clip(-1, 1)
        sf.write(out / f"noise_{i:03d}.wav", x, RATE, subtype="PCM_16")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600, help="training wall time per model")
    p.add_argument("--n", type=int, default=100, help="FSDD test recordings (uniform subsample)")
    p.add_argument("--keep", type=Path, help="keep (and reuse) the runs here")
    args = p.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed: apt-get install -y espeak-ng")
    recordings = Path(os.environ.get("TOKAR_DATA_DIR", "data")) / "fsdd" / "recordings"
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        sets = {"fsdd_test": work / "fsdd_test", "espeak": work / "espeak", "noise": work / "noise"}
        for folder in sets.values():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        for f in sorted(recordings.glob("*.wav")):
            if int(f.stem.split("_")[2]) < 5:  # FSDD's official test split
                shutil.copy(f, sets["fsdd_test"] / f.name)
        espeak_set(sets["espeak"])
        noise_set(sets["noise"])

        runs, info, steps = {}, {}, None
        for name, extra in (("fsdd", []), ("background", ["data.augment.mutate=0.2"])):
            run = work / name
            if not (run / "prior").is_dir():
                steps = steps or budget_overrides(RECIPE, args.seconds, work, SMALL)
                shutil.rmtree(run, ignore_errors=True)
                with Stopwatch() as sw:
                    result = Pipeline.from_recipe(RECIPE, [*steps, *extra]).train(run, progress=False)
                info[name] = {"steps": result.steps, "seconds": round(result.seconds, 1),
                              "cpu_share": sw.cpu_share,
                              "val_bits_per_sample": result.val.bits_per_unit}
            runs[name] = run
        pipe = Pipeline.load(runs["fsdd"])
        data = {k: read_data(v, pipe.tokenizer) for k, v in sets.items()}
        data["fsdd_test"] = subsample(*data["fsdd_test"], args.n, 0)
        results, r = ood_table(pipe, data["fsdd_test"], {k: data[k] for k in ('espeak', 'noise')},
                               runs["background"], info)
        emit({**results, "budget_seconds_per_model": args.seconds,
              "calibration_recordings": r["calibration_examples"], "runs": info})


if __name__ == "__main__":
    main()
