"""Reading images, the one place every image tokenizer goes through (pixel, vqvae, vqgan), and
images <-> float tensors for tokenizers that run neural networks on pixels.

Inputs are what the image sources give: PIL images, or integer arrays (H, W) / (H, W, 3) whose
largest possible value is `max_value` (255 for 8-bit data, 16 for scikit-learn's digits). A PIL
image is colour when it is RGB(A), or a palette image whose palette leaves the grays; otherwise
it is grayscale, so a gray palette PNG reads as one channel for every tokenizer. Modes of more
than 8 bits per channel are refused (convert them to an array with its max_value instead).
Networks see (C, H, W) float32 in [-1, 1]; decoded images come back as 8-bit PIL images ("L" or
"RGB"), the form the pixel tokenizer decodes to, so samples of every image pipeline look alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from PIL import Image

from plugins.errors import TokenizerError

PIL_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")  # 8 bits per channel at most


def is_colour(image: Image.Image) -> bool:
    """RGB(A) images are colour; a palette image is colour if its palette leaves gray."""
    if image.mode in ("RGB", "RGBA"):
        return True
    if image.mode != "P":
        return False
    rgb = np.asarray(image.convert("RGB"))
    return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())


def to_array(example: Any, channels: int | None, max_value: int, who: str) -> tuple[np.ndarray, int]:
    """One image -> ((H, W, C) array, its largest possible value). `channels` None keeps the
    image's own (grayscale arrays, gray images and gray palettes: 1; colour: 3)."""
    if isinstance(example, Image.Image):
        if example.mode not in PIL_MODES:
            raise TokenizerError(f"{who}: PIL mode {example.mode!r} is not 8-bit; pass the image as "
                                 "an array with tokenizer.max_value set to its largest value.")
        if channels is None:
            channels = 3 if is_colour(example) else 1
        array = np.asarray(example.convert("RGB" if channels == 3 else "L"))
        return array.reshape(*array.shape[:2], channels), 255
    array = np.asarray(example.numpy() if torch.is_tensor(example) else example)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise TokenizerError(f"{who}: expected an image (H, W), (H, W, 1) or (H, W, 3), got an array "
                             f"of shape {array.shape}.")
    if channels is not None and array.shape[-1] != channels:
        if channels == 3 and array.shape[-1] == 1:  # grayscale into a colour model: repeat
            array = np.repeat(array, 3, axis=-1)
        else:
            raise TokenizerError(f"{who}: a colour image, but the tokenizer is fitted for "
                                 f"{channels} channel(s); convert the images or refit.")
    return array, max_value


def to_tensor(examples: Iterable[Any], channels: int | None, max_value: int, who: str) -> torch.Tensor:
    """Images -> (N, C, H, W) float32 in [-1, 1]."""
    arrays = []
    for example in examples:
        array, top = to_array(example, channels, max_value, who)
        if array.size and (array.min() < 0 or array.max() > top):
            raise TokenizerError(f"{who}: values range over [{array.min()}, {array.max()}] but "
                                 f"max_value is {top}; set tokenizer.max_value to the data's largest "
                                 "value (255 for 8-bit images).")
        arrays.append(array.astype(np.float32) * (2.0 / top) - 1.0)
    if not arrays:
        raise TokenizerError(f"{who}: no images given.")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise TokenizerError(f"{who}: images of different sizes {sorted(shapes)}; resize them to one size.")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def to_unit(examples: Iterable[Any], channels: int | None, max_value: int, who: str) -> np.ndarray:
    """Images -> (N, H, W, C) float64 in [0, 1]: the scale reconstruction errors are measured in."""
    return (to_tensor(examples, channels, max_value, who).permute(0, 2, 3, 1).double().numpy() + 1) / 2


def to_pil(batch: torch.Tensor) -> list[Image.Image]:
    """(N, C, H, W) floats in [-1, 1] -> 8-bit PIL images."""
    pixels = ((batch.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, C)
    if pixels.shape[-1] == 1:
        return [Image.fromarray(p[..., 0], mode="L") for p in pixels]
    return [Image.fromarray(p, mode="RGB") for p in pixels]


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error on the [0, 1] scale."""
    return float("inf") if mse <= 0 else float(10 * np.log10(1.0 / mse))
