"""WaveNet: dilations and receptive field, fast generation == naive recompute, rewind, reorder."""

from __future__ import annotations

import pytest
import torch

from plugins.shared import Layout
from priors import DecodeConfig, generate
from priors.testing import VOCAB, PriorContract
from priors.wavenet import WaveNet, WaveNetConfig

V = 11


def make(backend: str | None = None, **settings) -> WaveNet:
    """backend: None for the eager step, else WaveNet.compile_step's ("native": the numba loop)."""
    torch.manual_seed(0)
    config = WaveNetConfig(**{"n_layer": 4, "n_block": 2, "n_residual": 8, "n_skip": 16, **settings})
    model = WaveNet(config, vocab_size=V, layout=Layout.seq()).eval()
    if backend:
        model.compile_step(backend)
    return model


# the step tests run on the eager step and on the native loop (priors/wavenet_step.py), which
# shares the queues with the chunked steps, rewind and reorder
steps = pytest.mark.parametrize("backend", [None, "native"])


class TestConditionalWaveNet(PriorContract):
    """The contract with global conditioning on."""

    @pytest.fixture
    def make_prior(self):
        return lambda v, layout: WaveNet(WaveNetConfig(n_layer=2, n_residual=8, n_skip=8, n_classes=3),
                                         vocab_size=v, layout=layout)

    @pytest.fixture
    def prior(self, make_prior):  # sequences only: WaveNet declares no grid layout
        torch.manual_seed(0)
        return make_prior(VOCAB, Layout.seq()).eval()


def test_dilations_and_receptive_field():
    model = make(kernel_size=3)
    assert [layer.dilation for layer in model.layers] == [1, 2, 4, 8, 1, 2, 4, 8]
    assert model.receptive_field == 2 * 2 * 15 + 1
    # token t is input t + 1, so it reaches exactly positions t + 1 .. t + receptive_field
    rf, t = model.receptive_field, 3
    ids = torch.randint(0, V, (1, t + rf + 5), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[0, t] = (changed[0, t] + 1) % V
    with torch.no_grad():
        diff = (model(ids) - model(changed)).abs().amax(-1)[0]
    assert diff[: t + 1].max() == 0
    assert diff[t + rf] > 0
    assert diff[t + rf + 1 :].max() == 0


@steps
@pytest.mark.parametrize("n_classes,kernel_size", [(0, 2), (3, 2), (0, 3)])
def test_fast_generation_matches_naive_recompute(n_classes, kernel_size, backend):
    """Paine et al.'s queues give the very conditionals of a full recompute, over a sequence
    over two receptive fields long (every queue wraps around)."""
    model = make(backend, n_classes=n_classes, max_rewind=0, kernel_size=kernel_size)
    cond = torch.tensor([0, 2]) if n_classes else None
    g = torch.Generator().manual_seed(1)
    logits, state = model.init_state(2, cond)
    ids = torch.zeros(2, 0, dtype=torch.long)
    with torch.no_grad():
        for _ in range(2 * model.receptive_field + 5):
            torch.testing.assert_close(logits, model.naive_next_logits(ids, cond), atol=1e-5, rtol=1e-5)
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=g)  # (B, 1)
            ids = torch.cat([ids, nxt], dim=1)
            out, state = model.step(state, nxt)
            logits = out[:, -1]
        # and both agree with teacher forcing
        torch.testing.assert_close(model(ids, cond)[:, -1], model.naive_next_logits(ids[:, :-1], cond),
                                   atol=1e-5, rtol=1e-5)


@steps
def test_chunked_steps_match_forward_on_long_sequences(backend):
    model = make(backend)
    ids = torch.randint(0, V, (2, 150), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, state = model.init_state(2)
        outs = [logits[:, None]]
        # chunks of up to max_rewind + 1 = 17 gather their taps (priors/wavenet.few_samples),
        # longer ones convolve over the history
        for s, k in [(0, 7), (7, 1), (8, 60), (68, 1), (69, 17), (86, 64)]:
            out, state = model.step(state, ids[:, s : s + k])
            outs.append(out)
        torch.testing.assert_close(torch.cat(outs, 1)[:, :150], model(ids), atol=1e-5, rtol=1e-5)


@steps
def test_rewind_forgets_exactly(backend):
    model = make(backend, max_rewind=5)
    g = torch.Generator().manual_seed(3)
    a, b = torch.randint(0, V, (1, 40), generator=g), torch.randint(0, V, (1, 4), generator=g)
    with torch.no_grad():
        _, state = model.init_state(1)
        _, state = model.step(state, a[:, :36])
        for i in range(36, 40):  # 4 tokens to be rejected, one step each
            _, state = model.step(state, a[:, i : i + 1])
        state = model.rewind(state, 4)
        out, state = model.step(state, b)  # their replacements in one chunk
        expected = model(torch.cat([a[:, :36], b, b[:, :1]], dim=1))[:, 37:41]
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="can forget 5"):
            model.rewind(state, 6)  # the queues keep max_rewind = 5 spare inputs, no more
        assert model.rewind(state, 0) is state


@steps
def test_reorder_state_follows_rows(backend):
    model = make(backend, n_classes=3)
    ids = torch.randint(0, V, (3, 20), generator=torch.Generator().manual_seed(4))
    cond = torch.tensor([0, 1, 2])
    order = torch.tensor([2, 2, 0])
    with torch.no_grad():
        _, state = model.init_state(3, cond)
        _, state = model.step(state, ids[:, :17])
        _, state = model.step(state, ids[:, 17:18])
        state = model.reorder_state(state, order)
        out, _ = model.step(state, ids[order, 18:19])  # -> the logits of token 19
        torch.testing.assert_close(out[:, 0], model(ids[order], cond[order])[:, -1], atol=1e-5, rtol=1e-5)


def test_sampling_strategies_run():
    model = make(n_classes=2)
    cond = torch.tensor([0, 1])
    for config in (DecodeConfig(max_new_tokens=30, top_k=5), DecodeConfig(max_new_tokens=10, num_beams=2)):
        out = generate(model, 2, config, cond=cond, generator=torch.Generator().manual_seed(0))
        assert out.tokens.shape[0] == 2 and out.tokens.max() < V


def test_conditioning_is_required_and_used():
    model = make(n_classes=3)
    ids = torch.randint(0, V, (1, 10), generator=torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="class-conditional"):
        model(ids)
    with torch.no_grad():
        assert not torch.allclose(model(ids, torch.tensor([0])), model(ids, torch.tensor([1])))


@pytest.mark.parametrize("backend", ["auto", "inductor"])
def test_compiled_step_gives_the_eager_conditionals(backend):
    """`DecodeConfig(compile=True)` (backend auto: the native loop on a CPU) and torch.compile
    (one program for every position, the queue index a tensor) decode the very sequence the
    eager step does, queues wrapping."""
    model = make(n_layer=3, n_block=1, n_classes=3)
    cond = torch.tensor([1, 2])
    config = DecodeConfig(max_new_tokens=2 * model.receptive_field + 3, greedy=True)
    eager = generate(model, 2, config, cond=cond)
    compiled = make(n_layer=3, n_block=1, n_classes=3)
    if backend == "auto":
        got = generate(compiled, 2, config.model_copy(update={"compile": True}), cond=cond)
    else:
        compiled.compile_step(backend)
        got = generate(compiled, 2, config, cond=cond)
    assert torch.equal(got.tokens, eager.tokens)
    # a fresh state of the compiled model steps to the eager conditionals
    with torch.no_grad():
        ids = eager.tokens[:, :4]
        _, slow = model.init_state(2, cond)
        want = model.step(slow, ids).params
        _, fast = compiled.init_state(2, cond)
        got = torch.cat([compiled.step(fast, ids[:, i : i + 1]).params for i in range(4)], 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_compile_backends():
    model = make()
    model.compile_step("native")
    assert model._native and model._compiled is None  # no torch.compile program held
    with pytest.raises(ValueError, match="unknown compile backend 'tvm'.*auto, native or inductor"):
        model.compile_step("tvm")
    with torch.no_grad():  # inputs the loop cannot take run the eager step: float64
        model.double()
        logits, state = model.init_state(1)
        out, state = model.step(state, torch.tensor([[3]]))
    assert state.native is False and out.dtype == torch.float64  # no native step for this state
    model.float()
    logits, state = model.init_state(1)
    out, state = model.step(state, torch.tensor([[3]]))  # and autograd on: eager, differentiable
    assert state.native is None and out.requires_grad


def test_compile_is_refused_by_priors_without_a_compiled_step():
    from plugins.errors import DecodingError
    from priors.gpt import GPT, GPTConfig

    gpt = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8), V, Layout.seq())
    with pytest.raises(DecodingError, match="no compiled step.*--compile"):
        generate(gpt, 1, DecodeConfig(max_new_tokens=2, compile=True))


def test_native_step_on_real_valued_inputs():
    """A WaveNet over real values (a linear input map, a Gaussian-mixture head) steps through the
    native loop to the conditionals of teacher forcing."""
    torch.manual_seed(0)
    # odd widths: the products' leftover rows (past a multiple of four) are covered too
    config = WaveNetConfig(n_layer=3, n_block=1, n_residual=5, n_skip=7, head="gaussian_mixture")
    model = WaveNet(config, vocab_size=0, layout=Layout.seq(dims=1)).eval()
    model.compile_step("native")
    x = torch.randn(2, 12, 1)
    with torch.no_grad():
        first, state = model.init_state(2)
        outs = [first[:, None]] + [model.step(state, x[:, t : t + 1]).params for t in range(11)]
        assert state.native and state.native.embedding is None  # the rows go in embedded
        torch.testing.assert_close(torch.cat(outs, 1), model(x), atol=1e-5, rtol=1e-5)


def test_native_step_in_beam_search_and_on_bad_values():
    """Beam search reorders the native step's rows (the weights are not laid out again) to the
    eager beams; a NaN input gives NaN params, as the eager step does; a negative id is an
    IndexError that leaves the state where it was."""
    config = DecodeConfig(max_new_tokens=12, num_beams=3)
    cond = torch.tensor([1, 2])
    eager = generate(make(n_classes=3), 2, config, cond=cond)
    native = generate(make(n_classes=3), 2, config.model_copy(update={"compile": True}), cond=cond)
    assert torch.equal(native.tokens, eager.tokens)

    torch.manual_seed(0)
    real = WaveNet(WaveNetConfig(n_layer=2, n_residual=4, n_skip=4, head="gaussian_mixture"), 0,
                   Layout.seq(dims=1)).eval()
    real.compile_step("native")
    model = make()
    model.compile_step("native")
    with torch.no_grad():
        _, state = real.init_state(1)
        out, _ = real.step(state, torch.full((1, 1, 1), float("nan")))
        assert state.native and out.isnan().all()
        _, state = model.init_state(1)
        model.step(state, torch.tensor([[2]]))
        with pytest.raises(IndexError, match="token id -1"):
            model.step(state, torch.tensor([[-1]]))
        assert state.pos == 2


def test_without_the_native_loop_compile_falls_back_to_the_eager_step(monkeypatch):
    """Where numba cannot load the loop (not installed; a disk cache it cannot write), decoding
    warns once and runs the PyTorch step."""
    import sys

    monkeypatch.setitem(sys.modules, "priors.wavenet_step", None)  # the import fails
    model = make()
    model.compile_step("native")
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="native step is unavailable"):
        _, state = model.init_state(1)
    with torch.no_grad():
        out, state = model.step(state, torch.tensor([[3]]))
    assert not model._native and state.native is None and out.shape == (1, 1, V)


@pytest.mark.parametrize("compiled", [False, True])
def test_speculative_audio_decoding_keeps_the_targets_output(compiled):
    """A small WaveNet drafts for a larger one: greedy output is the target's own, rounds of
    drafts rewind the target's queues (and the native step's, compiled) without a trace, and the
    target drafting for itself is accepted throughout. With compile, the draft is compiled too."""
    target = make(n_classes=2)
    torch.manual_seed(1)
    draft = WaveNet(WaveNetConfig(n_layer=2, n_block=1, n_residual=4, n_skip=4, n_classes=2),
                    vocab_size=V, layout=Layout.seq()).eval()
    cond = torch.tensor([1])
    config = DecodeConfig(max_new_tokens=60, greedy=True, num_draft_tokens=4, compile=compiled)
    plain = generate(make(n_classes=2), 1, config.model_copy(update={"compile": False}), cond=cond)
    spec = generate(target, 1, config, cond=cond, draft=draft)
    assert torch.equal(spec.tokens, plain.tokens)
    assert spec.proposed > 0 and spec.accepted < spec.proposed  # a different draft: some rejected
    assert draft._native is compiled
    same = generate(target, 1, config.model_copy(update={"greedy": False}), cond=cond,
                    draft=make(n_classes=2), generator=torch.Generator().manual_seed(0))
    assert same.acceptance_rate == 1.0
