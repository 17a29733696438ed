"""Gated PixelCNN: no blind spot (exact receptive field), conditioning, decoding."""

import pytest
import torch

from priors.pixelcnn import PixelCNN, PixelCNNConfig
from priors.sampling import DecodeConfig, generate
from tokenizers_ar import Layout

H, W = 6, 7


def model(**kw) -> PixelCNN:
    """4 layers of kernel 5: each reaches 2 pixels further left/up, so the 6 x 7 image lies
    within the receptive field of every pixel (1 + 4 * 2 = 9 columns to the left)."""
    torch.manual_seed(0)
    return PixelCNN(PixelCNNConfig(n_layer=4, n_channels=8, kernel_size=5, n_out=8, **kw), 4,
                    Layout.grid(H, W)).eval()


@pytest.mark.parametrize("i,j", [(0, 0), (0, 6), (2, 3), (5, 0), (5, 6)])
def test_receptive_field_is_exactly_the_past(i, j):
    """d logits(i, j) / d input is non-zero for every earlier pixel, zero for the rest: no
    blind spot, and no pixel ever sees itself or the future."""
    m = model()
    x = torch.randn(1, 8, H, W, requires_grad=True)
    m._stacks(x, None)[0, :, i, j].sum().backward()
    seen = x.grad.abs().sum(1)[0] > 0  # (H, W)
    for r in range(H):
        for c in range(W):
            earlier = (r, c) < (i, j)
            assert bool(seen[r, c]) == earlier, f"pixel ({r},{c}) vs output ({i},{j})"


def test_step_matches_the_full_pass_and_conditioning_matters():
    m = model(n_classes=3)
    ids = torch.randint(0, 4, (2, H * W), generator=torch.Generator().manual_seed(1))
    cond = torch.tensor([0, 2])
    with torch.no_grad():
        full = m(ids, cond)
        logits, state = m.init_state(2, cond)
        outs = [logits[:, None]]
        for t in range(H * W - 1):
            out, state = m.step(state, ids[:, t : t + 1])
            outs.append(out)
        torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(m(ids, torch.tensor([1, 1])), full)
    images = generate(m, 3, DecodeConfig(max_new_tokens=H * W), cond=torch.tensor([0, 1, 2]),
                      generator=torch.Generator().manual_seed(0)).tokens
    assert images.shape == (3, H * W) and images.max() < 4


def test_layout_and_config_checks():
    assert PixelCNN.check_layout(Layout.seq(), PixelCNNConfig()) != []
    with pytest.raises(ValueError, match="odd"):
        PixelCNNConfig(kernel_size=4)
