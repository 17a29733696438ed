"""Pixel tokenizer: each grayscale pixel value becomes one token, in raster order.

`levels` sets how many values a pixel may take: 2 for binarized images, 17 for scikit-learn's
8x8 digits (values 0..16), 256 for ordinary 8-bit images. Values are quantized uniformly:
token = round(value * (levels - 1) / max_value), where max_value is 255 for PIL images and
`max_value` from the config for arrays. With levels == max_value + 1 the round trip is exact; with
fewer levels encoding is a quantizer, and encode(decode(ids)) == ids still holds.

Colour images are tokenized per subpixel: channels R, G, B within a pixel, pixels in raster
order, layout (H, W, 3); grayscale has layout (H, W). `decode` returns a PIL image (8-bit, "L" or
"RGB") for viewing and saving; `to_array` returns values in the data's own range.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from plugins.errors import TokenizerError
from tokenizers_ar import images
from tokenizers_ar.base import Layout, Tokenizer, TokenizerConfig


class PixelConfig(TokenizerConfig):
    levels: int = Field(256, ge=2, le=256, description="values a pixel can take")
    max_value: int = Field(255, ge=1, description="largest value in array inputs (PIL: 255)")
    height: int | None = Field(None, ge=1, description="image height; inferred by fit if unset")
    width: int | None = Field(None, ge=1, description="image width; inferred by fit if unset")
    channels: int | None = Field(None, description="1 (grayscale) or 3 (RGB); inferred by fit")
    background: images.Background = Field("white", description=images.BACKGROUND_HELP)


class PixelTokenizer(Tokenizer):
    name = "pixel"
    Config = PixelConfig
    modality = "image"
    unit = "subpixel"
    layout_kind = "grid"
    fingerprint_omits_default = ("background",)  # added later: white reads every older input alike

    def __init__(self, config: PixelConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        self.height = self.config.height
        self.width = self.config.width
        self.channels = self.config.channels
        if self.channels not in (None, 1, 3):
            raise TokenizerError(f"pixel tokenizer: channels must be 1 or 3, got {self.channels}.")

    @property
    def lossless(self) -> bool:  # type: ignore[override]
        return self.config.levels == self.config.max_value + 1

    @property
    def is_fitted(self) -> bool:
        return self.height is not None and self.width is not None

    @property
    def _shape(self) -> tuple[int, ...]:
        return (self.height, self.width) if (self.channels or 1) == 1 else \
            (self.height, self.width, self.channels)

    @property
    def vocab_size(self) -> int:
        return self.known_vocab_size(self.config)

    @classmethod
    def known_vocab_size(cls, config) -> int:
        return config.levels

    @property
    def layout(self) -> Layout:
        self._require_shape()
        return Layout.grid(*self._shape)

    def fit(self, examples: Iterable[Any]) -> None:
        if self.is_fitted and self.channels is not None:
            return
        for example in examples:
            shape = self._to_array(example)[0].shape
            self.height, self.width = shape[:2]
            self.channels = self.channels or (shape[2] if len(shape) == 3 else 1)
            return
        raise TokenizerError("pixel tokenizer: no training images to infer the image size from.")

    def encode(self, example: Any) -> torch.Tensor:
        self._require_shape()
        values, max_value = self._to_array(example)
        if values.shape != self._shape:
            name = images.name_of(example)
            raise TokenizerError(
                f"pixel tokenizer: {name + ': ' if name else ''}image of shape {values.shape}, "
                f"expected {self._shape} as fitted (width x height: {values.shape[1]}x"
                f"{values.shape[0]} given, {self.width}x{self.height} expected); resize the "
                "images or set tokenizer.height/width/channels."
            )
        if values.min() < 0 or values.max() > max_value:
            raise TokenizerError(
                f"pixel tokenizer: values range over [{values.min()}, {values.max()}] but "
                f"max_value is {max_value}; set tokenizer.max_value to the data's largest value."
            )
        scale = (self.config.levels - 1) / max_value
        ids = np.rint(values.astype(np.float64) * scale).astype(np.int64)
        return torch.from_numpy(ids)

    def to_array(self, ids: torch.Tensor | Sequence[int]) -> np.ndarray:
        """Ids -> (H, W[, 3]) array of values in the data's own range [0, max_value]."""
        return self._dequantize(ids, self.config.max_value)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> Image.Image:
        mode = "L" if (self.channels or 1) == 1 else "RGB"
        return Image.fromarray(self._dequantize(ids, 255).astype(np.uint8), mode=mode)

    def count_units(self, example: Any) -> int:
        self._require_shape()
        return int(np.prod(self._shape))

    def state(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "channels": self.channels}

    def load_state(self, state: dict[str, Any]) -> None:
        self.height = state.get("height", self.height)
        self.width = state.get("width", self.width)
        self.channels = state.get("channels", self.channels)

    def _dequantize(self, ids: torch.Tensor | Sequence[int], max_value: int) -> np.ndarray:
        self._require_shape()
        ids = torch.as_tensor(ids).reshape(-1)
        n = int(np.prod(self._shape))
        if ids.numel() != n:
            raise TokenizerError(
                f"pixel tokenizer: got {ids.numel()} ids, an image needs "
                f"{'x'.join(map(str, self._shape))} = {n}."
            )
        if ids.min() < 0 or ids.max() >= self.config.levels:
            raise TokenizerError(f"pixel tokenizer: ids must lie in [0, {self.config.levels}).")
        values = ids.double().numpy() * (max_value / (self.config.levels - 1))
        return np.rint(values).astype(np.int64).reshape(self._shape)

    def _to_array(self, example: Any) -> tuple[np.ndarray, int]:
        """(H, W) integer array and the largest value that array may hold."""
        if isinstance(example, Image.Image):  # the one image reader (tokenizers_ar/images.py)
            array, top = images.to_array(example, self.channels, 255, "pixel tokenizer",
                                          self.config.background)
            return (array[..., 0] if array.shape[-1] == 1 else array).astype(np.int64), top
        array = np.asarray(example.numpy() if torch.is_tensor(example) else example)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
            raise TokenizerError(
                f"pixel tokenizer: expected an image (H, W) or (H, W, 3), got an array of shape "
                f"{array.shape}."
            )
        if not np.issubdtype(array.dtype, np.integer) and not np.all(np.equal(np.mod(array, 1), 0)):
            raise TokenizerError(
                "pixel tokenizer: array values must be whole numbers in [0, max_value]; "
                "scale float images in [0, 1] to integers first."
            )
        return array.astype(np.int64), self.config.max_value

    def _require_shape(self) -> None:
        if not self.is_fitted:
            raise TokenizerError(
                "pixel tokenizer does not know the image size yet: call fit(images) first or set "
                "tokenizer.height and tokenizer.width."
            )
