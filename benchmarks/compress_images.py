"""Lossless image compression with a PixelCNN: Fashion-MNIST test images (8-bit, class-conditional)
and binarized MNIST test images, in bits per image next to PNG (Pillow, optimize=True) and WebP
lossless of the same images, side by side in one run.

    TOKAR_DATA_DIR=../shared/data python benchmarks/compress_images.py --seconds 300 --every 10 \\
        [--keep DIR] [--runs fashion_mnist=RUN binarized_mnist=RUN]

Each recipe (recipes/<dataset>/pixel_pixelcnn.yaml) is trained for `--seconds` (max_steps sized
from a timed calibration so the schedule ends with the budget), unless a trained run is given.
The test images are a uniform subsample (every `--every`-th of the 10,000) coded as one file
(`Pipeline.compress_all`, one header for all; images coded `--batch-size` at a time, one image
per block), decoded and checked pixel for pixel. Bits per image are the whole file's size divided
by the number of images; the payload alone (range-coder words) and the one-image header are
given too, and the model's own log-likelihood (Pipeline.score on the same images). PNG: grayscale
8-bit for Fashion-MNIST, 1-bit for binarized MNIST; WebP: lossless, method 6 (slowest, smallest).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, budget_overrides, emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from pipelines.compression.container import read_container  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["fashion_mnist", "binarized_mnist"]


def png_bytes(image: Image.Image) -> int:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.tell()


def webp_bytes(image: Image.Image) -> int:
    buf = io.BytesIO()
    image.save(buf, format="WEBP", lossless=True, quality=100, method=6)
    return buf.tell()


def evaluate(pipe: Pipeline, name: str, every: int, batch_size: int, portable: bool = False) -> dict:
    splits = pipe.recipe.data.cls(pipe.recipe.data.config).load()
    test = splits["validation"]
    index = list(range(0, len(test), every))
    images = [np.asarray(test[i]["example"], dtype=np.uint8) for i in index]
    labels = [int(test[i]["label"]) for i in index] if pipe.prior.num_classes else None
    with Stopwatch() as enc:
        blob = pipe.compress_all(images, labels, batch_size=batch_size, portable=portable)
    with Stopwatch() as dec:
        back = pipe.decompress_all(blob)
    exact = all(np.array_equal(a, b) for a, b in zip(images, back, strict=True))
    c = read_container(blob)
    payload = 4 * sum(s.size for s in c.streams)
    single = len(pipe.compress(images[0], labels[0] if labels else None, portable=portable))
    score = pipe.score(images, labels=labels)
    binary = name == "binarized_mnist"
    pil = [Image.fromarray(im * 255, "L").convert("1") if binary else Image.fromarray(im, "L")
           for im in images]
    n = len(images)
    return {
        "test_images": len(test), "images": n, "every": every, "round_trip_exact": exact,
        "bits_per_image": 8 * len(blob) / n,
        "payload_bits_per_image": 8 * payload / n,
        "model_bits_per_image": score.bits_per_unit * images[0].size,
        "one_image_file_bytes": single,
        "png_bits_per_image": 8 * sum(map(png_bytes, pil)) / n,
        "webp_lossless_bits_per_image": 8 * sum(webp_bytes(p.convert("L")) for p in pil) / n,
        "encode_s": enc.wall, "decode_s": dec.wall, "images_per_s_decode": n / dec.wall,
        "coding_cpu_share": round((enc.cpu_share + dec.cpu_share) / 2, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="*", default=DATASETS)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--every", type=int, default=10, help="uniform subsample of the test images")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--keep", help="keep the trained runs here")
    ap.add_argument("--portable", action="store_true", help="the integer-exact coder (tokar "
                    "compress's default); without it the float path the BENCHMARKS rows measured")
    ap.add_argument("--runs", nargs="*", default=[], help="DATASET=RUN_DIR: reuse a trained run")
    args = ap.parse_args()
    given = dict(r.split("=", 1) for r in args.runs)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        keep = Path(args.keep) if args.keep else Path(tmp)
        for name in args.datasets:
            training = None
            if name in given:
                pipe = Pipeline.load(given[name])
            else:
                recipe = ROOT / "recipes" / name / "pixel_pixelcnn.yaml"
                pipe = Pipeline.from_recipe(recipe, budget_overrides(recipe, args.seconds, Path(tmp)))
                with Stopwatch() as sw:
                    result = pipe.train(keep / name, progress=False)
                training = {"budget_s": args.seconds, "steps": result.steps,
                            "train_wall_s": round(sw.wall, 1), "train_cpu_share": sw.cpu_share}
                pipe = Pipeline.load(keep / name)
            results[name] = {**evaluate(pipe, name, args.every, args.batch_size, args.portable),
                             "training": training, "parameters": pipe.prior.num_parameters()}
            print(f"{name}: {results[name]['bits_per_image']:.1f} bits/image, PNG "
                  f"{results[name]['png_bits_per_image']:.1f}", file=sys.stderr)
    emit({"benchmark": "compress_images", "datasets": results})


if __name__ == "__main__":
    main()
