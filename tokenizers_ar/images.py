"""Reading images, the one place every image tokenizer goes through (pixel, vqvae, vqgan), and
images <-> float tensors for tokenizers that run neural networks on pixels.

Inputs are what the image sources give: PIL images, or integer arrays (H, W) / (H, W, 3) whose
largest possible value is `max_value` (255 for 8-bit data, 16 for scikit-learn's digits). A PIL
image of any mode is first made an 8-bit "L" or "RGB" image (`flatten`):
- transparency (RGBA, LA, PA, a palette or L/RGB image with a transparent colour) is composited
  over the tokenizer's `background` (white by default, black or [r, g, b]); `background: none`
  refuses images that are not fully opaque, naming the file. Dropping the alpha instead would
  turn the usual transparent-black pixels of an icon into solid black.
- 16-bit grayscale ("I;16", "I" as Pillow reads 16-bit PNGs) is scaled to 8 bits (v / 257):
  Pillow's own convert("L") clips at 255 and would make most images white.
- CMYK, YCbCr, LAB, HSV become RGB; "1" becomes L. Floating-point ("F") images are refused.
A flattened image is colour when it came from colour bands (RGB(A), CMYK..., a palette that
leaves the grays, or a gray image on a coloured background); otherwise it is grayscale, so a
gray palette PNG or a gray LA icon reads as one channel for every tokenizer.
Networks see (C, H, W) float32 in [-1, 1]; decoded images come back as 8-bit PIL images ("L" or
"RGB"), the form the pixel tokenizer decodes to, so samples of every image pipeline look alike.

Not here: reading image files (pipelines/io/safe.py read_image), resizing (never done silently).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from plugins.errors import TokenizerError

# What a transparent pixel is composited over: a name, or [r, g, b] in 0..255; "none" refuses
# images with transparency. A tokenizer setting, so every path (train, score, detect, compress)
# reads an image the same way.
Channel = Annotated[int, Field(ge=0, le=255)]
Background = Literal["white", "black", "none"] | tuple[Channel, Channel, Channel]
BACKGROUND_HELP = ("what transparent pixels are composited over: white, black, [r, g, b], or "
                   "none (refuse transparent images)")
NAMED = {"white": (255, 255, 255), "black": (0, 0, 0)}
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_BIT = ("I", "I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def name_of(image: Any) -> str:
    """The file an image came from, when known (PIL keeps it on opened images; read_image and
    Hugging Face's Image feature set it), for errors that name the file."""
    return str(getattr(image, "filename", "") or "")


def _label(who: str, image: Any) -> str:
    name = name_of(image)
    return f"{who}: {name}" if name else who


def _palette_is_colour(image: Image.Image) -> bool:
    rgb = np.asarray(image.convert("RGB"))
    return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())


def source_is_colour(image: Image.Image) -> bool:
    """Whether an image's own bands are colour (before any background is laid under it)."""
    if image.mode in ("P", "PA"):
        return _palette_is_colour(image)
    return image.mode not in GRAY_MODES


def flatten(image: Image.Image, background: Background = "white", who: str = "image") -> Image.Image:
    """Any PIL image -> an 8-bit "L" or "RGB" image (see the module docstring for the rules)."""
    mode = image.mode
    if mode == "F":
        raise TokenizerError(f"{_label(who, image)}: a floating-point (mode F) image; save it as "
                             "8-bit, or pass it as an integer array with tokenizer.max_value set.")
    if mode in SIXTEEN_BIT:
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise TokenizerError(f"{_label(who, image)}: a mode {mode} image with values "
                                 f"[{values.min()}, {values.max()}], not 16-bit (0..65535); pass it "
                                 "as an array with tokenizer.max_value set.")
        return Image.fromarray(np.rint(values / 257).astype(np.uint8), mode="L")
    colour = source_is_colour(image)
    transparent = mode in ALPHA_MODES or "transparency" in image.info
    if transparent:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        if (alpha < 255).any():
            if background == "none":
                raise TokenizerError(
                    f"{_label(who, image)}: a transparent image (mode {mode}); set "
                    "tokenizer.background to white, black or [r, g, b] to composite it, or save "
                    "the image without transparency.")
            under = NAMED.get(background, background) if isinstance(background, str) \
                else tuple(background)
            base = Image.new("RGBA", rgba.size, (*under, 255))
            flat = Image.alpha_composite(base, rgba).convert("RGB")
            gray_under = under[0] == under[1] == under[2]
            return flat.convert("L") if not colour and gray_under else flat
        return rgba.convert("RGB" if colour else "L")
    return image.convert("RGB" if colour else "L")


def is_colour(image: Image.Image, background: Background = "white") -> bool:
    """Whether `image`, flattened as a tokenizer reads it, is colour (3 channels)."""
    return flatten(image, background).mode == "RGB"


def to_array(example: Any, channels: int | None, max_value: int, who: str,
             background: Background = "white") -> tuple[np.ndarray, int]:
    """One image -> ((H, W, C) array, its largest possible value). `channels` None keeps the
    image's own (grayscale arrays, gray images and gray palettes: 1; colour: 3)."""
    if isinstance(example, Image.Image):
        flat = flatten(example, background, who)
        if channels is None:
            channels = 3 if flat.mode == "RGB" else 1
        array = np.asarray(flat.convert("RGB" if channels == 3 else "L"))
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


def to_tensor(examples: Iterable[Any], channels: int | None, max_value: int, who: str,
              background: Background = "white") -> torch.Tensor:
    """Images -> (N, C, H, W) float32 in [-1, 1]."""
    arrays, names = [], []
    for example in examples:
        names.append(name_of(example))
        array, top = to_array(example, channels, max_value, who, background)
        if array.size and (array.min() < 0 or array.max() > top):
            raise TokenizerError(f"{who}: values range over [{array.min()}, {array.max()}] but "
                                 f"max_value is {top}; set tokenizer.max_value to the data's largest "
                                 "value (255 for 8-bit images).")
        arrays.append(array.astype(np.float32) * (2.0 / top) - 1.0)
    if not arrays:
        raise TokenizerError(f"{who}: no images given.")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        odd = next(i for i, a in enumerate(arrays) if a.shape != arrays[0].shape)
        where = f" ({names[odd]} is {arrays[odd].shape[1]}x{arrays[odd].shape[0]}, width x height)" \
            if names[odd] else ""
        raise TokenizerError(f"{who}: images of different sizes {sorted(shapes)}{where}; resize them "
                             "to one size.")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def to_unit(examples: Iterable[Any], channels: int | None, max_value: int, who: str,
            background: Background = "white") -> np.ndarray:
    """Images -> (N, H, W, C) float64 in [0, 1]: the scale reconstruction errors are measured in."""
    batch = to_tensor(examples, channels, max_value, who, background)
    return (batch.permute(0, 2, 3, 1).double().numpy() + 1) / 2


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
