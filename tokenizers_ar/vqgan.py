"""VQGAN tokenizer: the VQ-VAE plus an adversarial loss, for sharper decoded images.

Esser, Rombach, Ommer 2021, "Taming Transformers for High-Resolution Image Synthesis". The
autoencoder, codebook and codes are the VQ-VAE's (tokenizers_ar/vqvae.py, subclassed here); what
changes is stage 1 training:
- an L1 reconstruction loss (the paper's pixel term),
- a PatchGAN discriminator (Isola et al. 2017) that scores overlapping patches as real or
  reconstructed, trained with the hinge loss: L_D = E[relu(1 - D(x))] + E[relu(1 + D(x_hat))],
- the generator term L_GAN = -E[D(x_hat)], weighted by the paper's adaptive weight
  lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + 1e-4) at the decoder's last layer G_L,
  so that neither loss drowns the other,
- the discriminator joins only after `disc_start` steps, once reconstructions are reasonable.

Deliberately missing: the perceptual (LPIPS) term. It needs pretrained VGG weights, and none are
available offline here; `perceptual_weight > 0` is an error that says so. The discriminator is a
training aid only: it is not saved, and the codes do not depend on it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from tokenizers_ar.vqvae import VQVAEConfig, VQVAETokenizer


class PatchDiscriminator(nn.Module):
    """Stride-2 4x4 convolutions (each halving the size) with LeakyReLU and BatchNorm, then a
    3x3 convolution to one logit per patch: (B, C, H, W) -> (B, 1, H / 2^n_layer, W / 2^n_layer)."""

    def __init__(self, channels: int, n_hidden: int, n_layer: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, n_hidden, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2)]
        ch = n_hidden
        for _ in range(n_layer - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2)]
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VQGANConfig(VQVAEConfig):
    disc_start: int = Field(500, ge=0, description="fit step at which the discriminator starts")
    disc_weight: float = Field(0.8, ge=0, description="scale of the adaptive GAN weight")
    disc_n_layer: int = Field(2, ge=1, description="stride-2 layers: patches of 2^n_layer pixels")
    disc_n_hidden: int = Field(64, ge=1)
    disc_lr: float | None = Field(None, gt=0, description="discriminator learning rate; default fit.lr")
    perceptual_weight: float = Field(0.0, description="LPIPS term: unavailable (no weights offline)")

    @field_validator("perceptual_weight")
    @classmethod
    def _no_perceptual_weights(cls, v: float) -> float:
        if v != 0:
            raise ValueError(
                "a perceptual (LPIPS) loss needs pretrained VGG weights, which are not available "
                "offline in tokar; set tokenizer.perceptual_weight to 0 (L1 + GAN losses only)")
        return v


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """lambda = ||grad L_rec|| / (||grad L_GAN|| + 1e-4) at `last_layer` (Esser et al. eq. 7)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, 1e4).detach()


class VQGANTokenizer(VQVAETokenizer):
    name = "vqgan"
    Config = VQGANConfig
    smoke_settings = {**VQVAETokenizer.smoke_settings, "disc_start": 10, "disc_n_hidden": 8}

    def reconstruction_loss(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(x_hat, x)

    def _setup_training(self, device: torch.device) -> None:
        super()._setup_training(device)
        c = self.config
        self.discriminator = PatchDiscriminator(self.channels, c.disc_n_hidden, c.disc_n_layer).to(device)
        self.disc_optimizer = torch.optim.Adam(self.discriminator.parameters(),
                                               lr=c.disc_lr or c.fit.lr, betas=(0.5, 0.9))

    def _training_step(self, x: torch.Tensor, step: int) -> tuple[dict[str, Any], torch.Tensor]:
        if step < self.config.disc_start:
            metrics, indices = super()._training_step(x, step)
            return {**metrics, "g_loss": 0.0, "d_loss": 0.0, "disc_weight": 0.0}, indices
        # generator (autoencoder) step: reconstruction + commitment + lambda * GAN
        out = self.model(x)
        rec = self.reconstruction_loss(out.x_hat, x)
        g_loss = -self.discriminator(out.x_hat).mean()
        lam = self.config.disc_weight * adaptive_weight(
            rec, g_loss, self.model.decoder.conv_out.weight)
        loss = rec + out.commit_loss + lam * g_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        # discriminator step on real images and the (detached) reconstructions, hinge loss
        d_loss = (F.relu(1 - self.discriminator(x)).mean()
                  + F.relu(1 + self.discriminator(out.x_hat.detach())).mean())
        self.disc_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.disc_optimizer.step()
        return {"rec_loss": rec.item(), "commit_loss": out.commit_loss.item(),
                "g_loss": g_loss.item(), "d_loss": d_loss.item(), "disc_weight": lam.item()}, out.indices
