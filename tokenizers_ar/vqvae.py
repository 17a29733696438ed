"""VQ-VAE tokenizer: a learned discrete code for images (stage 1 of two-stage generation).

van den Oord, Vinyals, Kavukcuoglu 2017, "Neural Discrete Representation Learning": a
convolutional encoder maps an image to an (h, w) grid of vectors, each is replaced by its nearest
entry of a codebook of `codebook_size` vectors, and a convolutional decoder maps the quantized grid
back to pixels. The codes (the indices of the chosen entries) are the tokens; a prior (gpt,
pixelcnn) then models the (h, w) code grid in raster order, as the VQ-VAE paper's PixelCNN and
VQGAN's transformer do. The codebook is vector-quantize-pytorch's `VectorQuantize`: EMA updates
(the paper's appendix), k-means initialisation on the first batch and replacement of dead codes
(codes unused for a while are reset to random encoder outputs), plus the commitment loss
beta * ||z_e - sg[e]||^2 that keeps the encoder close to its codes.

`fit` trains the autoencoder (a plain loop on one device: CUDA when available, else CPU) and logs
the reconstruction loss, codebook usage and perplexity. Afterwards the network lives on the CPU,
so the codes never depend on the device that fitted them.

Deliberately not here: hierarchical codes (VQ-VAE-2), perceptual losses. Decoding is lossy:
decode(encode(x)) approximates x (tests measure PSNR), and encode(decode(ids)) is mostly but not
always ids, since the decoder's 8-bit image may encode to a neighbouring code.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from tqdm.auto import tqdm
from vector_quantize_pytorch import VectorQuantize

from plugins.errors import TokenizerError
from plugins.resources import built_within_memory
from tokenizers_ar import images
from tokenizers_ar.base import Layout, Tokenizer, TokenizerConfig, code_stats

logger = logging.getLogger(__name__)


# -- the network ------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), the VQ-VAE paper's residual block."""

    def __init__(self, n_hidden: int, n_res_hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(n_hidden, n_res_hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(n_res_hidden, n_hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Encoder(nn.Module):
    """(B, C, H, W) -> (B, codebook_dim, H/downsample, W/downsample): stride-2 4x4 convolutions
    halve the size log2(downsample) times, then residual blocks."""

    def __init__(self, channels: int, n_hidden: int, n_res_block: int, n_res_hidden: int,
                 codebook_dim: int, downsample: int):
        super().__init__()
        layers: list[nn.Module] = []
        ch = channels
        for _ in range(int(math.log2(downsample))):
            layers += [nn.Conv2d(ch, n_hidden, 4, stride=2, padding=1), nn.ReLU()]
            ch = n_hidden
        layers.append(nn.Conv2d(ch, n_hidden, 3, padding=1))
        layers += [ResBlock(n_hidden, n_res_hidden) for _ in range(n_res_block)]
        layers += [nn.ReLU(), nn.Conv2d(n_hidden, codebook_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """The mirror image: residual blocks, then stride-2 transposed convolutions back to (H, W).
    `conv_out` is the last layer, where VQGAN balances its two losses."""

    def __init__(self, channels: int, n_hidden: int, n_res_block: int, n_res_hidden: int,
                 codebook_dim: int, downsample: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(codebook_dim, n_hidden, 3, padding=1)]
        layers += [ResBlock(n_hidden, n_res_hidden) for _ in range(n_res_block)]
        layers.append(nn.ReLU())
        for _ in range(int(math.log2(downsample))):
            layers += [nn.ConvTranspose2d(n_hidden, n_hidden, 4, stride=2, padding=1), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(n_hidden, channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.net(z))


class VQOutput(NamedTuple):
    x_hat: torch.Tensor  # (B, C, H, W) reconstruction
    indices: torch.Tensor  # (B, h, w) codes
    commit_loss: torch.Tensor  # scalar, already weighted by commitment_weight


class VQVAE(nn.Module):
    def __init__(self, c: VQVAEConfig, channels: int):
        super().__init__()
        sizes = (channels, c.n_hidden, c.n_res_block, c.n_res_hidden, c.codebook_dim, c.downsample)
        self.encoder = Encoder(*sizes)
        self.quantizer = VectorQuantize(
            dim=c.codebook_dim, codebook_size=c.codebook_size, decay=c.decay,
            commitment_weight=c.commitment_weight, kmeans_init=c.kmeans_init, kmeans_iters=10,
            threshold_ema_dead_code=c.threshold_ema_dead_code, accept_image_fmap=True)
        self.decoder = Decoder(*sizes)

    def forward(self, x: torch.Tensor) -> VQOutput:
        quantized, indices, commit_loss = self.quantizer(self.encoder(x))
        return VQOutput(self.decoder(quantized), indices, commit_loss)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.encoder(x))[1]  # (B, h, w)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.get_output_from_indices(indices))  # (B, C, H, W)


# -- settings ---------------------------------------------------------------------------------------
class FitConfig(BaseModel):
    """Stage 1 training: its own loop, budget and device, apart from the prior's `train:`."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(2000, ge=1, description="optimizer steps")
    max_seconds: float | None = Field(None, gt=0, description="stop after this much fitting time")
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    device: str = Field("auto", description="auto (CUDA when available, else CPU), cpu, cuda, cuda:1...")
    log_every: int = Field(100, ge=1)
    seed: int = 0


class VQVAEConfig(TokenizerConfig):
    codebook_size: int = Field(256, ge=2, description="number of codes K (the prior's vocabulary)")
    codebook_dim: int = Field(64, ge=1, description="dimension D of each code vector")
    downsample: int = Field(4, ge=1, description="image size / code grid size, a power of 2")
    n_hidden: int = Field(64, ge=1, description="channels of the encoder and decoder")
    n_res_block: int = Field(2, ge=0)
    n_res_hidden: int = Field(32, ge=1)
    commitment_weight: float = Field(0.25, ge=0, description="beta of the commitment loss")
    decay: float = Field(0.9, gt=0, lt=1, description="EMA decay of the codebook")
    kmeans_init: bool = True
    threshold_ema_dead_code: float = Field(2.0, ge=0, description="codes used less are replaced")
    channels: Literal[1, 3] | None = Field(None, description="1 (grayscale) or 3 (RGB); inferred by fit")
    max_value: int = Field(255, ge=1, description="largest value in array inputs (PIL: 255)")
    background: images.Background = Field("white", description=images.BACKGROUND_HELP)
    fit: FitConfig = Field(default_factory=FitConfig)

    @field_validator("downsample")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"downsample must be a power of 2 (1, 2, 4, 8...), got {v}")
        return v


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TokenizerError(f"tokenizer.fit.device is {name!r} but CUDA is not available here; "
                             "use device: auto or cpu.")
    return torch.device(name)


# -- the tokenizer ----------------------------------------------------------------------------------
class VQVAETokenizer(Tokenizer):
    name = "vqvae"
    Config = VQVAEConfig
    modality = "image"
    unit = "subpixel"
    layout_kind = "grid"
    lossless = False
    stable_codes = False
    fingerprint_omits_default = ("background",)  # added later: white reads every older input alike
    smoke_settings = {"codebook_size": 16, "codebook_dim": 8, "n_hidden": 16, "n_res_block": 1,
                      "n_res_hidden": 8, "downsample": 2, "fit": {"steps": 30, "batch_size": 8}}
    encode_chunk = 512  # images per forward pass when encoding or decoding many

    def __init__(self, config: VQVAEConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        self.channels = self.config.channels
        self.height: int | None = None
        self.width: int | None = None
        self.model: VQVAE | None = None
        self.fit_summary: dict[str, Any] = {}

    @property
    def is_fitted(self) -> bool:
        return self.model is not None and bool(self.fit_summary)

    @property
    def vocab_size(self) -> int:
        return self.known_vocab_size(self.config)

    @classmethod
    def known_vocab_size(cls, config) -> int:
        return config.codebook_size

    @property
    def layout(self) -> Layout:
        self._require_fitted()
        d = self.config.downsample
        return Layout.grid(self.height // d, self.width // d)

    # -- stage 1 training ------------------------------------------------------------------------
    def fit(self, examples: Iterable[Any]) -> None:
        if self.is_fitted:
            return
        x = images.to_tensor(examples, self.channels, self.config.max_value, self.name,
                              self.config.background)
        self._set_shape(x.shape[1:])
        cfg = self.config.fit
        device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.model = VQVAE(self.config, self.channels).to(device).train()
        self._setup_training(device)
        gen = torch.Generator().manual_seed(cfg.seed)
        counts = torch.zeros(self.vocab_size)
        logger.info("fitting %s on %d images (%dx%dx%d, codes downsampled %dx) on %s for %d steps",
                    self.name, len(x), self.height, self.width, self.channels,
                    self.config.downsample, device, cfg.steps)
        start, step, metrics, window = time.perf_counter(), 0, {}, {}
        bar = tqdm(range(cfg.steps), desc=f"fitting {self.name}", disable=None, leave=False)
        for step in bar:
            batch = x[torch.randint(len(x), (cfg.batch_size,), generator=gen)].to(device)
            metrics, indices = self._training_step(batch, step)
            counts += torch.bincount(indices.reshape(-1).cpu(), minlength=self.vocab_size)
            for k, v in metrics.items():
                window[k] = window.get(k, 0.0) + v
            elapsed = time.perf_counter() - start
            out_of_time = cfg.max_seconds is not None and elapsed > cfg.max_seconds
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps or out_of_time:
                n = (step % cfg.log_every) + 1
                metrics = {k: v / n for k, v in window.items()} | code_stats(counts)
                logger.info("%s step %d: %s", self.name, step + 1,
                            " ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
                bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()})
                counts.zero_()
                window = {}
            if out_of_time:
                break
        bar.close()
        self.model.cpu().eval()
        self.fit_summary = {"steps": step + 1, "seconds": round(time.perf_counter() - start, 2),
                            "device": str(device), **{k: round(v, 5) for k, v in metrics.items()}}

    def _setup_training(self, device: torch.device) -> None:
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.fit.lr)

    def reconstruction_loss(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(x_hat, x)

    def _training_step(self, x: torch.Tensor, step: int) -> tuple[dict[str, float], torch.Tensor]:
        """One optimizer step; returns the losses to log and the codes the batch used."""
        out = self.model(x)
        rec = self.reconstruction_loss(out.x_hat, x)
        loss = rec + out.commit_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"rec_loss": rec.item(), "commit_loss": out.commit_loss.item()}, out.indices

    def _set_shape(self, shape: Sequence[int]) -> None:
        channels, height, width = (int(s) for s in shape)
        d = self.config.downsample
        if height % d or width % d:
            raise TokenizerError(
                f"{self.name}: images of {height}x{width} cannot be downsampled by {d}: set "
                f"tokenizer.downsample to a power of 2 that divides both sides, or resize the images.")
        self.channels, self.height, self.width = channels, height, width

    # -- codes -----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_batch(self, examples: Iterable[Any]) -> list[torch.Tensor]:
        self._require_fitted()
        examples = list(examples)
        x = images.to_tensor(examples, self.channels, self.config.max_value, self.name,
                              self.config.background)
        if tuple(x.shape[1:]) != (self.channels, self.height, self.width):
            name = images.name_of(examples[0]) if len(examples) == 1 else ""
            raise TokenizerError(
                f"{self.name}: {name + ': ' if name else ''}images of shape "
                f"{tuple(x.shape[2:])}x{x.shape[1]}, fitted for "
                f"{self.height}x{self.width}x{self.channels}; resize them or fit a new tokenizer.")
        codes = [self.model.encode(chunk) for chunk in x.split(self.encode_chunk)]
        return list(torch.cat(codes).long())  # N x (h, w)

    def encode(self, example: Any) -> torch.Tensor:
        return self.encode_batch([example])[0]

    @torch.no_grad()
    def decode_batch(self, batch: Iterable[torch.Tensor | Sequence[int]]) -> list[Any]:
        self._require_fitted()
        shape = self.layout.shape
        ids = [torch.as_tensor(b).long().reshape(-1) for b in batch]
        for row in ids:
            if row.numel() != math.prod(shape):
                raise TokenizerError(f"{self.name}: got {row.numel()} codes, an image needs "
                                     f"{'x'.join(map(str, shape))} = {math.prod(shape)}.")
            if row.numel() and (row.min() < 0 or row.max() >= self.vocab_size):
                raise TokenizerError(f"{self.name}: codes must lie in [0, {self.vocab_size}).")
        if not ids:
            return []
        grid = torch.stack(ids).view(-1, *shape)  # (N, h, w)
        return [im for chunk in grid.split(self.encode_chunk)
                for im in images.to_pil(self.model.decode(chunk))]

    def decode(self, ids: torch.Tensor | Sequence[int]) -> Any:
        return self.decode_batch([ids])[0]

    def count_units(self, example: Any) -> int:
        self._require_fitted()
        return self.height * self.width * self.channels

    # -- saving ----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "channels": self.channels,
                "fit_summary": self.fit_summary}

    def load_state(self, state: dict[str, Any]) -> None:
        self.height, self.width = state.get("height"), state.get("width")
        self.channels = state.get("channels", self.channels)
        self.fit_summary = state.get("fit_summary", {})

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict()) if self.is_fitted else {}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.channels is None:
            raise TokenizerError(f"{self.name}: weights without a fitted image shape in config.json.")
        # the network's size comes from config.json: checked before it is allocated
        self.model = built_within_memory(lambda: VQVAE(self.config, self.channels),
                                         f"the {self.name} tokenizer's network (as its config.json "
                                         "describes it)", "its config.json is corrupt or was made "
                                         "for a far larger machine.")
        self.model.load_state_dict(tensors)
        self.model.eval()

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise TokenizerError(f"{self.name} tokenizer is not trained yet: call fit(images) first "
                                 "(tokar train does), or load one with tokenizer.pretrained.")

