"""VQ-VAE / VQGAN tokenizers: shapes, fitting, saving, distortion, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from plugins.errors import CheckpointError, RecipeError, TokenizerError
from tokenizers_ar import images
from tokenizers_ar.vqgan import VQGANTokenizer, adaptive_weight
from tokenizers_ar.vqvae import VQVAETokenizer

SMALL = {"codebook_size": 32, "codebook_dim": 8, "n_hidden": 16, "n_res_block": 1,
         "n_res_hidden": 8, "downsample": 2, "max_value": 16}


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.images.astype(np.uint8), d.target


@pytest.fixture(scope="module")
def fitted(digits):
    tok = VQVAETokenizer(**SMALL, fit={"steps": 150, "batch_size": 32, "lr": 3e-3})
    tok.fit(digits[0][:1500])
    return tok


def _psnr(tok, x):
    a = images.to_unit(x, 1, 16, "t")
    b = images.to_unit(tok.decode_batch(tok.encode_batch(x)), 1, 255, "t")
    return images.psnr(float(np.mean((a - b) ** 2)))


def test_encode_decode_shapes(fitted, digits):
    assert fitted.layout.shape == (4, 4) and fitted.vocab_size == 32 and not fitted.lossless
    codes = fitted.encode_batch(digits[0][:5])
    assert len(codes) == 5 and codes[0].shape == (4, 4) and codes[0].dtype == torch.long
    decoded = fitted.decode_batch(codes)
    assert all(isinstance(im, Image.Image) and im.size == (8, 8) and im.mode == "L" for im in decoded)
    assert fitted.decode(codes[0].reshape(-1)).size == (8, 8)  # flat raster order works too
    assert fitted.count_units(digits[0][0]) == 64


def test_fit_learns_a_code_better_than_untrained(fitted, digits):
    held = digits[0][1500:]
    untrained = VQVAETokenizer(**SMALL, fit={"steps": 1, "batch_size": 32})
    untrained.fit(digits[0][:64])
    assert _psnr(fitted, held) > _psnr(untrained, held) + 3
    assert _psnr(fitted, held) > 14  # 8x8 digits from 16 codes of 5 bits each
    assert fitted.fit_summary["steps"] == 150 and 0 < fitted.fit_summary["usage"] <= 1


def test_codes_mostly_stable_under_decode_then_encode(fitted, digits):
    codes = torch.stack(fitted.encode_batch(digits[0][1500:]))
    again = torch.stack(fitted.encode_batch(fitted.decode_batch(codes)))
    assert (again == codes).float().mean() > 0.6  # a tiny model: about 3 in 4 codes survive


def test_fingerprint_changes_after_fit_and_save_load_gives_identical_codes(digits, tmp_path):
    tok = VQVAETokenizer(**SMALL, fit={"steps": 5, "batch_size": 16})
    before = tok.fingerprint()
    tok.fit(digits[0][:100])
    after = tok.fingerprint()
    assert after != before
    tok.save(tmp_path / "tok")
    loaded = VQVAETokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.fingerprint() == after and loaded.is_fitted
    x = digits[0][100:140]
    assert all(torch.equal(a, b) for a, b in zip(loaded.encode_batch(x), tok.encode_batch(x), strict=True))
    refit = VQVAETokenizer(**SMALL, fit={"steps": 6, "batch_size": 16})
    refit.fit(digits[0][:100])
    assert refit.fingerprint() != after  # other weights, other cache key


def test_rgb_images(tmp_path):
    rng = np.random.default_rng(0)
    pics = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), mode="RGB") for _ in range(16)]
    tok = VQVAETokenizer(codebook_size=8, codebook_dim=4, n_hidden=8, n_res_block=0, downsample=4,
                         fit={"steps": 3, "batch_size": 4})
    tok.fit(pics)
    assert tok.channels == 3 and tok.layout.shape == (2, 2)
    out = tok.decode(tok.encode(pics[0]))
    assert out.mode == "RGB" and out.size == (8, 8)
    assert tok.count_units(pics[0]) == 192


def test_vqgan_discriminator_joins_after_disc_start(digits):
    tok = VQGANTokenizer(**SMALL, disc_start=3, disc_n_hidden=8, fit={"steps": 6, "batch_size": 16,
                                                                     "log_every": 1})
    seen = []
    original = tok._training_step

    def spy(x, step):
        metrics, idx = original(x, step)
        seen.append(metrics)
        return metrics, idx

    tok._training_step = spy
    tok.fit(digits[0][:64])
    assert all(m["disc_weight"] == 0 and m["d_loss"] == 0 for m in seen[:3])
    assert all(m["disc_weight"] > 0 and m["d_loss"] > 0 for m in seen[3:])


def test_adaptive_weight_is_the_ratio_of_gradient_norms():
    w = torch.nn.Parameter(torch.ones(3))
    rec, gan = (2 * w).sum(), (0.5 * w).sum()  # gradients 2 and 0.5 per entry
    assert adaptive_weight(rec, gan, w).item() == pytest.approx(4.0, rel=1e-3)


def test_perceptual_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="not available offline"):
        VQGANTokenizer(perceptual_weight=1.0)
    from pipelines.recipe.loader import load_recipe

    with pytest.raises(RecipeError, match="perceptual_weight.*VGG weights"):
        load_recipe({"data": {"source": "sklearn_digits"}, "prior": {"name": "gpt"},
                     "tokenizer": {"name": "vqgan", "perceptual_weight": 0.5}})


def test_errors(fitted, digits, tmp_path):
    with pytest.raises(TokenizerError, match="not trained yet"):
        VQVAETokenizer().encode(digits[0][0])
    with pytest.raises(TokenizerError, match="cannot be downsampled by 16"):
        VQVAETokenizer(downsample=16, fit={"steps": 1}).fit(digits[0][:4])
    with pytest.raises(ValueError, match="power of 2"):
        VQVAETokenizer(downsample=3)
    with pytest.raises(TokenizerError, match="max_value"):
        VQVAETokenizer(**{**SMALL, "max_value": 8}, fit={"steps": 1}).fit(digits[0][:4])
    with pytest.raises(TokenizerError, match="fitted for 8x8x1"):
        fitted.encode(np.zeros((16, 16), dtype=np.uint8))
    with pytest.raises(TokenizerError, match=r"codes must lie in \[0, 32\)"):
        fitted.decode(torch.full((16,), 40))
    with pytest.raises(TokenizerError, match="an image needs 4x4 = 16"):
        fitted.decode(torch.zeros(5, dtype=torch.long))
    fitted.save(tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        VQVAETokenizer.from_pretrained(tmp_path / "tok")
