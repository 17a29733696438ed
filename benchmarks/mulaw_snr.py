"""Mu-law round-trip distortion on the FSDD test split (index 0-4: 300 recordings, 8 kHz).

    TOKAR_DATA_DIR=../shared/data python benchmarks/mulaw_snr.py [--mu 255] [--limit N]

SNR of decode(encode(x)) against x (the mono waveform at the tokenizer's rate), per recording
and over the whole split (total signal power / total noise power), in dB.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

from pipelines.data.audio import FSDDSource  # noqa: E402
from tokenizers_ar.mulaw import MuLawTokenizer, snr_db  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mu", type=int, default=255)
    p.add_argument("--limit", type=int, default=None, help="only the first N test recordings")
    args = p.parse_args()
    root = Path(os.environ.get("TOKAR_DATA_DIR", "data")) / "fsdd" / "recordings"
    files = FSDDSource(path=str(root), label="none").load()["validation"]["example"][: args.limit]
    tok = MuLawTokenizer(mu=args.mu, sample_rate=8000)
    snrs, signal, noise = [], 0.0, 0.0
    for f in files:
        x = tok.waveform(f)
        y = tok.decode(tok.encode(f)).astype(np.float64)
        snrs.append(snr_db(x, y))
        signal, noise = signal + float(np.sum(x**2)), noise + float(np.sum((x - y) ** 2))
    emit({"benchmark": "mulaw_snr", "data": "FSDD test split (index 0-4)", "recordings": len(files),
          "mu": args.mu, "sample_rate": 8000, "snr_db_overall": 10 * np.log10(signal / noise),
          "snr_db_mean": float(np.mean(snrs)), "snr_db_median": float(np.median(snrs)),
          "snr_db_min": float(np.min(snrs)), "snr_db_max": float(np.max(snrs))})


if __name__ == "__main__":
    main()
