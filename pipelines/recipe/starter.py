"""`tokar init DATA`: look at a user's data and write a starter recipe that trains as it is.

DATA is one of:
- a text file (UTF-8): the `text` source, characters as tokens;
- a folder of text files (Python sources, notes...): the `hf` source with the `text` builder
  (one example per line), characters as tokens;
- a folder of images, flat or with one sub-folder per class (DATA/cat/x.png, DATA/dog/y.png):
  the `hf` source with the `imagefolder` builder; sub-folder names become the run's class names;
  pixels as tokens when an image is at most MAX_PIXEL_TOKENS subpixels, else a VQ-VAE's codes;
- a folder of audio files (.wav, .flac, .ogg), optionally with class sub-folders: the
  `wav_folder` source, mu-law codes at the files' sample rate (at most 16 kHz);
- an .npz with arrays train/valid/test of binary images (binarized MNIST's layout).

The model is sized to the data (a few layers for a small data set) and training is bounded by
`train.max_seconds` as well as steps, so a first run ends in minutes on a CPU. What was found is
returned as lines for the command line to print; the recipe carries comments saying why.

Not here: writing the file (the CLI writes it atomically), resizing or converting data (never
done to a user's files), tables (csv: see recipes/tabular).
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

from pipelines.data.audio import AUDIO_SUFFIXES
from pipelines.detection.data import IMAGE_SUFFIXES
from plugins.errors import DataError
from tokenizers_ar.images import ALPHA_MODES, source_is_colour

MAX_PIXEL_TOKENS = 1024  # subpixels per image a pixel-level GPT models in CPU minutes
MAX_SAMPLE_RATE = 16000  # audio above this is resampled down: each second is that many tokens
BUDGET_SECONDS = 900  # train.max_seconds of a starter recipe: a first result in 15 minutes
LOOKED_AT = 2000  # files opened to learn modes and sample rates (sizes: every image's header)


@dataclass
class Starter:
    """What `init` found, and the recipe it wrote for it."""

    kind: str  # text, text_folder, images, audio, npz
    found: list[str] = field(default_factory=list)  # lines for the user
    recipe: str = ""


def inspect(path: str | Path) -> Starter:
    """Look at DATA and write a starter recipe for it (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist; give a text file, a folder of text files, images "
                        "or audio, or an .npz.")
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return _npz(path)
        if path.suffix.lower() in IMAGE_SUFFIXES | AUDIO_SUFFIXES:
            raise DataError(f"{path} is one image or sound; `tokar init` needs the folder that "
                            "holds many (give the folder).")
        return _text_file(path)
    if not path.is_dir():
        raise DataError(f"{path} is neither a regular file nor a folder.")
    files = [f for f in sorted(path.rglob("*")) if f.is_file()
             and not any(part.startswith(".") for part in f.relative_to(path).parts)]
    if not files:
        raise DataError(f"{path} holds no files.")
    counts = collections.Counter(
        "image" if f.suffix.lower() in IMAGE_SUFFIXES else
        "audio" if f.suffix.lower() in AUDIO_SUFFIXES else "other" for f in files)
    if counts["image"] and counts["image"] >= counts["audio"]:
        return _images(path, [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES])
    if counts["audio"]:
        return _audio(path, [f for f in files if f.suffix.lower() in AUDIO_SUFFIXES])
    return _text_folder(path, files)


# -- text -----------------------------------------------------------------------------------------
def _gpt_for_text(chars: int) -> tuple[dict[str, Any], str]:
    """(prior, why): a model with roughly as many parameters as the data has characters, or
    fewer, so that one budget does not just memorise the text."""
    if chars < 200_000:
        size, why = (2, 2, 64, 128), f"{chars:,} characters: a ~0.1M-parameter GPT; larger memorises them"
    elif chars < 5_000_000:
        size, why = (4, 4, 128, 256), f"{chars:,} characters: a ~0.8M-parameter GPT (nanoGPT's CPU size)"
    else:
        size, why = (6, 6, 384, 256), f"{chars:,} characters: a ~11M-parameter GPT; train it on a GPU"
    layers, heads, width, block = size
    return {"name": "gpt", "n_layer": layers, "n_head": heads, "n_embd": width, "block_size": block,
            "dropout": 0.1}, why


def _text_recipe(data: dict[str, Any], chars: int, found: list[str], kind: str) -> Starter:
    prior, why = _gpt_for_text(chars)
    recipe = _render(f"a {kind}", [
        ("", "data", data),
        ("characters as tokens; unk: characters met only in validation read as <unk>, not an error",
         "tokenizer", {"name": "char", "unk": True}),
        (why, "prior", prior),
        (BUDGET, "train", {"batch_size": 32, "lr": 1.0e-3, "min_lr": 1.0e-4, "warmup_steps": 100,
                           "max_steps": 20000, "max_seconds": BUDGET_SECONDS, "eval_every": 250,
                           "eval_batches": 20}),
        ("", "sample", {"n": 4, "max_new_tokens": 300, "temperature": 0.8}),
    ])
    return Starter(kind, found, recipe)


def _text_file(path: Path) -> Starter:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); `tokar init` reads text "
                        "files, image or audio folders and .npz files.") from exc
    if not text:
        raise DataError(f"{path} is empty; there is nothing to train on.")
    found = [f"{path}: a text file, {len(text):,} characters, {len(set(text))} distinct"]
    data = {"source": "text", "path": str(path), "val_fraction": 0.1}
    return _text_recipe(data, len(text), found, "text file")


def _text_folder(path: Path, files: list[Path]) -> Starter:
    chars, suffixes = 0, collections.Counter()
    for f in files:
        try:
            chars += len(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue  # binaries among the sources: left out of the globs below if all are
        suffixes[f.suffix.lower()] += 1
    if not suffixes:
        raise DataError(f"{path} holds no UTF-8 text files, images or audio files.")
    kinds = ", ".join(f"{n} {s or 'without suffix'}" for s, n in suffixes.most_common())
    found = [f"{path}: {sum(suffixes.values())} text files ({kinds}), {chars:,} characters"]
    globs = [f"{path}/**/*{s}" for s in sorted(suffixes)]
    # the `text` builder gives one example per line; training joins them with EOS between
    data = {"source": "hf", "path": "text", "data_files": globs, "column": "text", "val_fraction": 0.1}
    return _text_recipe(data, chars, found, "folder of text files")


# -- images ---------------------------------------------------------------------------------------
def _images(path: Path, files: list[Path]) -> Starter:
    sizes: dict[tuple[int, int], list[Path]] = collections.defaultdict(list)
    modes: collections.Counter = collections.Counter()
    colour = transparent = False
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:  # the header only, except for the first LOOKED_AT
                sizes[im.size].append(f)
                if i < LOOKED_AT:
                    modes[im.mode] += 1
                    colour = colour or source_is_colour(im)
                    transparent = transparent or im.mode in ALPHA_MODES or "transparency" in im.info
        except (OSError, ValueError) as exc:
            raise DataError(f"{f} cannot be read as an image: {exc}.") from exc
    (width, height), common = max(sizes.items(), key=lambda kv: len(kv[1]))
    if len(sizes) > 1:
        odd_size, odd = next((s, fs) for s, fs in sizes.items() if s != (width, height))
        raise DataError(f"{odd[0]}: a {odd_size[0]}x{odd_size[1]} image, but {len(common)} of the "
                        f"{len(files)} images are {width}x{height} (width x height); a run models one "
                        "size: resize the others (tokar never resizes silently).")
    classes = _classes(path, files)
    channels = 3 if colour else 1
    found = [f"{path}: {len(files)} images, {width}x{height}, {'colour' if colour else 'grayscale'}"
             f" (modes: {', '.join(f'{m} x{n}' for m, n in modes.most_common())})"
             + (", with transparency (composited on white)" if transparent else ""),
             f"classes: {', '.join(classes)}" if classes else "classes: none (no class sub-folders)"]
    data: dict[str, Any] = {"source": "hf", "path": "imagefolder", "data_dir": str(path), "column": "image"}
    if classes:
        data["label_column"] = "label"  # the sub-folder names: classes.json, `--class NAME`
    data["val_fraction"] = 0.1
    subpixels = width * height * channels
    vq = _downsample(width, height) if subpixels > MAX_PIXEL_TOKENS else None
    extra = {"background": "white"} if transparent else {}
    see_through = "; transparent pixels composited over `background` (white, black, [r, g, b] " \
        "or none: refuse them)" if transparent else ""
    if vq is None:
        if subpixels > MAX_PIXEL_TOKENS:
            found.append(f"warning: {subpixels} tokens per image and no VQ-VAE downsampling divides "
                         f"{width}x{height}: training will be slow; resize the images")
        tokenizer = {"name": "pixel", "levels": 256, **extra}
        why = f"pixels as tokens: {subpixels} per image ({width}x{height}x{channels}), all 256 " \
              f"values{see_through}"
        block = subpixels
    else:
        tokenizer = {"name": "vqvae", "codebook_size": 256, "codebook_dim": 32, "downsample": vq,
                     "n_hidden": 32, "n_res_hidden": 16, **extra,
                     "fit": {"steps": 3000, "max_seconds": BUDGET_SECONDS // 3, "batch_size": 32,
                             "lr": 2.0e-3}}
        why = f"{subpixels} subpixels per image are too many to model one by one in CPU minutes: " \
              f"a VQ-VAE (stage 1) makes each a {width // vq}x{height // vq} grid of codes{see_through}"
        block = (width // vq) * (height // vq)
    small = len(files) < 5000
    prior = {"name": "gpt", "n_layer": 2 if small else 4, "n_head": 2 if small else 4,
             "n_embd": 64 if small else 128, "block_size": block, "dropout": 0.1}
    if classes:
        prior["n_classes"] = len(classes)
    recipe = _render("an image folder", [
        (_counted(len(files), "images", classes), "data", data),
        (why, "tokenizer", tokenizer),
        (f"{'a small' if small else 'a mid-sized'} GPT for {len(files)} images; block_size: the "
         "tokens of one image", "prior", prior),
        (BUDGET, "train", {"batch_size": 16, "lr": 1.0e-3, "min_lr": 1.0e-4, "warmup_steps": 100,
                           "max_steps": 20000, "max_seconds": BUDGET_SECONDS, "eval_every": 250,
                           "eval_batches": 10}),
        ("", "sample", {"n": 16}),
    ])
    return Starter("images", found, recipe)


def _downsample(width: int, height: int) -> int | None:
    """The smallest VQ-VAE downsampling (a power of 2 up to 16) that divides both sides and
    leaves at most 256 codes per image; None if there is none."""
    for d in (2, 4, 8, 16):
        if width % d == 0 and height % d == 0 and (width // d) * (height // d) <= 256:
            return d
    return None


def _classes(path: Path, files: list[Path]) -> list[str]:
    """Sub-folder names when every file sits one folder below DATA and there are two or more
    (the imagefolder builder's rule)."""
    parents = {f.parent for f in files}
    if any(p.parent != path for p in parents) or len(parents) < 2:
        return []
    return sorted(p.name for p in parents)


def _counted(n: int, what: str, classes: list[str]) -> str:
    if not classes:
        return f"{n} {what}"
    return f"{n} {what} in {len(classes)} classes (sub-folder names: `tokar sample RUN --class NAME`)"


# -- audio ----------------------------------------------------------------------------------------
def _audio(path: Path, files: list[Path]) -> Starter:
    rates: collections.Counter = collections.Counter()
    seconds = 0.0
    for f in files[:LOOKED_AT]:
        try:
            info = sf.info(str(f))
        except (RuntimeError, OSError) as exc:  # soundfile's LibsndfileError is a RuntimeError
            raise DataError(f"{f} cannot be read as audio: {exc}.") from exc
        rates[info.samplerate] += 1
        seconds += info.duration
    rate = rates.most_common(1)[0][0]
    target = min(rate, MAX_SAMPLE_RATE)
    classes = _classes(path, files)
    found = [f"{path}: {len(files)} audio files, {seconds:,.0f} s"
             + (f" (of the first {LOOKED_AT})" if len(files) > LOOKED_AT else "")
             + f", sample rate {', '.join(f'{r} Hz x{n}' for r, n in rates.most_common())}",
             f"classes: {', '.join(classes)}" if classes else "classes: none (no class sub-folders)"]
    data: dict[str, Any] = {"source": "wav_folder", "path": str(path)}
    if classes:
        data["labels_from_folders"] = True
    data["val_fraction"] = 0.1
    resample = f" (resampled from {rate} Hz)" if target != rate else ""
    prior: dict[str, Any] = {"name": "lstm", "n_layer": 2, "n_embd": 64,
                             "n_hidden": 128 if seconds < 600 else 256}
    if classes:
        prior["n_classes"] = len(classes)
    recipe = _render("an audio folder", [
        (_counted(len(files), "recordings", classes), "data", data),
        (f"8-bit mu-law codes, one per sample at {target} Hz{resample}", "tokenizer",
         {"name": "mulaw", "mu": 255, "sample_rate": target}),
        ("char-rnn's LSTM: cheap per step on a CPU, trained on windows of seq_len samples",
         "prior", prior),
        (BUDGET + "; eval_samples 0: sampling audio is slow", "train",
         {"batch_size": 8, "seq_len": 1024, "lr": 2.0e-3, "warmup_steps": 200, "max_steps": 20000,
          "max_seconds": BUDGET_SECONDS, "eval_every": 500, "eval_batches": 10, "eval_samples": 0,
          "weight_decay": 0.0}),
        ("one second per sample", "sample", {"n": 4, "max_new_tokens": target}),
    ])
    return Starter("audio", found, recipe)


# -- arrays ---------------------------------------------------------------------------------------
def _npz(path: Path) -> Starter:
    try:
        with np.load(path) as arrays:
            shapes = {k: arrays[k].shape for k in arrays.files}
            binary = all(set(np.unique(arrays[k][:100]).tolist()) <= {0, 1} for k in arrays.files)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc}).") from exc
    listed = ", ".join(f"{k} {v}" for k, v in shapes.items())
    if not {"train", "valid", "test"} <= set(shapes) or not binary or \
            any(len(shapes[k]) != 3 for k in ("train", "valid", "test")):
        raise DataError(f"{path} holds {listed or 'no arrays'}; `tokar init` reads an .npz of binary "
                        "images with arrays train, valid and test (N, H, W) (binarized MNIST's "
                        "layout); save other images as PNG files in a folder instead.")
    _, height, width = shapes["train"]
    found = [f"{path}: binary images {width}x{height}: {listed}"]
    recipe = _render("binary images in an .npz", [
        ("", "data", {"source": "binarized_mnist", "path": str(path), "validation": "valid"}),
        ("one token per pixel, 2 levels (the arrays hold 0 and 1)", "tokenizer",
         {"name": "pixel", "levels": 2, "max_value": 1}),
        ("a small GPT; block_size: the pixels of one image", "prior",
         {"name": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": height * width}),
        (BUDGET, "train", {"batch_size": 32, "lr": 1.0e-3, "min_lr": 1.0e-4, "warmup_steps": 100,
                           "max_steps": 20000, "max_seconds": BUDGET_SECONDS, "eval_every": 250,
                           "eval_batches": 10}),
        ("", "sample", {"n": 16}),
    ])
    return Starter("npz", found, recipe)


# -- writing --------------------------------------------------------------------------------------
BUDGET = (f"max_seconds: a first run ends within {BUDGET_SECONDS // 60} minutes of training "
          "(max_steps rarely binds first); raise both for a better model")


def _render(kind: str, sections: list[tuple[str, str, dict[str, Any]]]) -> str:
    """The recipe as YAML in block style, one setting a line, each section under its comment.
    Values are written as JSON (JSON is YAML), so any path or string reads back as written."""
    lines = [f"# Starter recipe written by `tokar init` for {kind}.",
             "# Check it with `tokar validate RECIPE`, train it with `tokar train RECIPE`; edit freely."]
    for comment, key, mapping in sections:
        lines.append("")
        lines.extend(f"# {line}" for line in _wrap(comment))
        lines.append(f"{key}:")
        lines.extend(f"  {k}: {json.dumps(v)}" for k, v in mapping.items())
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int = 96) -> list[str]:
    out: list[str] = []
    for word in text.split():
        if out and len(out[-1]) + 1 + len(word) <= width:
            out[-1] += " " + word
        else:
            out.append(word)
    return out
