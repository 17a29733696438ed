"""Gated PixelCNN: no blind spot (exact receptive field, colour masks included), conditioning,
cached decoding, the discretized logistic mixture head."""

import pytest
import torch

from plugins.shared import Layout
from priors import DecodeConfig, generate
from priors.heads.logistic_mixture import mixture_log_probs, mixture_nll
from priors.pixelcnn import PixelCNN, PixelCNNConfig

MIXTURE = {"name": "logistic_mixture", "n_mixtures": 3}

H, W = 6, 7


def model(colours: int = 1, **kw) -> PixelCNN:
    """4 layers of kernel 5: each reaches 2 pixels further left/up, so the 6 x 7 image lies
    within the receptive field of every pixel (1 + 4 * 2 = 9 columns to the left)."""
    torch.manual_seed(0)
    kw = {"n_layer": 4, "n_channels": 6, "kernel_size": 5, "first_kernel_size": 5, "n_out": 6} | kw
    layout = Layout.grid(H, W, colours) if colours > 1 else Layout.grid(H, W)
    return PixelCNN(PixelCNNConfig(**kw), 4, layout).eval()


@pytest.mark.parametrize("colours", [1, 3])
@pytest.mark.parametrize("i,j", [(0, 0), (0, 6), (2, 3), (5, 0), (5, 6)])
def test_receptive_field_is_exactly_the_past(i, j, colours):
    """d logits(i, j, channel) / d input is non-zero for every earlier token in raster order
    (channels innermost), zero for the rest: no blind spot, and no token ever sees itself or
    the future, across the colour channels of a pixel too."""
    m = model(colours, n_channels=24, n_out=16)  # wide enough that no ReLU path is always off
    group = m.config.n_channels // colours
    for ch in range(colours):
        # a batch of random inputs: one input may switch a small net's ReLU paths all off
        x = torch.randn(8, m.config.n_channels, H, W, requires_grad=True)
        m._params(m._stacks(x, None))[:, i, j, ch].sum().backward()
        seen = x.grad.abs().sum(0).unflatten(0, (colours, group)).sum(1) > 0  # (C, H, W)
        for r in range(H):
            for c in range(W):
                for ch_in in range(colours):
                    earlier = (r, c, ch_in) < (i, j, ch)
                    assert bool(seen[ch_in, r, c]) == earlier, f"({r},{c},{ch_in}) vs ({i},{j},{ch})"


@pytest.mark.parametrize("colours,head", [(1, "categorical"), (3, "categorical"), (3, MIXTURE)])
def test_step_matches_the_full_pass_and_conditioning_matters(colours, head):
    m = model(colours, n_classes=3, head=head, first_kernel_size=7)
    T = H * W * colours
    ids = torch.randint(0, 4, (2, T), generator=torch.Generator().manual_seed(1))
    cond = torch.tensor([0, 2])
    with torch.no_grad():
        full = m(ids, cond)
        logits, state = m.init_state(2, cond)
        outs = [logits[:, None]]
        for t in range(T - 1):
            out, state = m.step(state, ids[:, t : t + 1])
            outs.append(out)
        torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(m(ids, torch.tensor([1, 1])), full)
    images = generate(m, 3, DecodeConfig(max_new_tokens=T), cond=torch.tensor([0, 1, 2]),
                      generator=torch.Generator().manual_seed(0)).tokens
    assert images.shape == (3, T) and images.max() < 4


def test_logistic_mixture_is_a_normalised_distribution_over_the_bins():
    torch.manual_seed(0)
    params = torch.randn(5, 3 * 4) * 2  # 5 tokens, K = 4 components
    params[0, 8:] = -20.0  # tiny scales: clamped, still finite
    params[1, 8:] = 8.0  # huge scales: nearly uniform
    log_p = mixture_log_probs(params, 256)
    assert log_p.shape == (5, 256) and torch.isfinite(log_p).all()
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(5), atol=1e-4, rtol=0)
    # one component: the mass of each bin is the difference of the logistic CDF at its edges
    mean, log_s = 0.3, -2.0
    x = torch.linspace(-1, 1, 256, dtype=torch.float64)
    cdf = lambda y: torch.sigmoid((y - mean) / torch.exp(torch.tensor(log_s, dtype=torch.float64)))  # noqa: E731
    expected = cdf(x + 1 / 255) - cdf(x - 1 / 255)
    expected[0], expected[-1] = cdf(x[0] + 1 / 255), 1 - cdf(x[-1] - 1 / 255)
    got = mixture_log_probs(torch.tensor([[0.0, mean, log_s]]), 256)[0].double().exp()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_the_mixture_head_trains():
    m = model(head=MIXTURE).train()
    ids = torch.randint(0, 4, (4, H * W), generator=torch.Generator().manual_seed(2))
    loss = m.loss(ids)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_layout_and_config_checks():
    assert PixelCNN.check_layout(Layout.seq(), PixelCNNConfig()) != []
    assert "multiple" in PixelCNN.check_layout(Layout.grid(4, 4, 3), PixelCNNConfig(n_channels=32))[0]
    assert PixelCNN.check_layout(Layout.grid(4, 4, 3), PixelCNNConfig(n_channels=33)) == []
    for key in ("kernel_size", "first_kernel_size"):
        with pytest.raises(ValueError, match="odd"):
            PixelCNNConfig(**{key: 4})


def test_the_mixture_nll_of_the_targets_equals_the_full_distribution():
    """Training and scoring take the cheap path (only the observed bin); it must agree with
    the full V-way distribution that sampling uses."""
    torch.manual_seed(0)
    params, targets = torch.randn(4, 6, 9) * 2, torch.randint(0, 256, (4, 6))
    targets[0, :2] = torch.tensor([0, 255])  # both edge bins
    full = -mixture_log_probs(params, 256).gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(mixture_nll(params, targets, 256), full, atol=1e-5, rtol=1e-5)
    m = model(3, head=MIXTURE, n_channels=6)
    ids = torch.randint(0, 4, (2, H * W * 3), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = m.distribution.logits(m(ids))  # (B, T, V): all the bins
        expected = torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0].sum(1)
        torch.testing.assert_close(m.log_prob(ids), expected, atol=1e-4, rtol=1e-5)


def test_runs_saved_before_heads_load_with_the_head_they_meant():
    config = PixelCNNConfig(output="logistic_mixture", n_mixtures=3)
    assert config.head == MIXTURE
    assert PixelCNNConfig(output="softmax").head == "categorical"
    with pytest.raises(ValueError, match="softmax or logistic_mixture"):
        PixelCNNConfig(output="gaussian")


@pytest.mark.parametrize("colours", [1, 3])
def test_chunks_and_rewinds_give_the_full_pass(colours):
    """Tokens fed k at a time (across row ends) and rewinds of up to a row (back into the
    previous row too) leave the same conditionals as the teacher-forced pass."""
    m = model(colours, n_classes=2)
    T = H * W * colours
    ids = torch.randint(0, 4, (2, T), generator=torch.Generator().manual_seed(3))
    cond = torch.tensor([1, 0])
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        full = m(ids, cond)
        params, state = m.init_state(2, cond)
        got = {0: params}
        fed = 0
        while fed < T:
            k = min(int(torch.randint(1, W * colours, (1,), generator=g)), T - fed)
            j = min(int(torch.randint(0, W * colours - k + 1, (1,), generator=g)), T - fed - k)
            junk = torch.randint(0, 4, (2, j), generator=g)  # drafts that will be rejected
            out, state = m.step(state, torch.cat([ids[:, fed : fed + k], junk], 1))
            for t in range(k):
                got[fed + t + 1] = out[:, t]
            r = int(torch.randint(0, k, (1,), generator=g)) if fed + k < T else 0
            state = m.rewind(state, j + r)  # the junk, and some real tokens too
            fed = state.pos
        assert m.max_rewind == W * colours
        for t in range(T):
            torch.testing.assert_close(got[t], full[:, t], atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="previous row"):
            m.rewind(state, 2 * W * colours + 1)


@pytest.mark.parametrize("draft", ["small", "ngram"])
def test_speculative_image_decoding_keeps_the_targets_greedy_output(draft):
    target = model(1)
    small = PixelCNN(PixelCNNConfig(n_layer=1, n_channels=4, kernel_size=3, first_kernel_size=3,
                                    n_out=4), 4, Layout.grid(H, W)).eval()
    config = DecodeConfig(max_new_tokens=H * W, greedy=True, num_draft_tokens=4)
    spec = generate(target, 1, config, draft=small if draft == "small" else draft)
    assert torch.equal(spec.tokens, generate(target, 1, config).tokens)
    assert spec.proposed > 0
