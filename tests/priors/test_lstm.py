"""LSTM specifics beyond the shared contract: rewind/reorder, and every decoding strategy."""

import torch

from priors import GPT, LSTM, DecodeConfig, GPTConfig, LSTMConfig, generate
from tokenizers_ar import Layout


def lstm(seed=0, **kw) -> LSTM:
    torch.manual_seed(seed)
    model = LSTM(LSTMConfig(n_layer=2, n_embd=16, n_hidden=32, **kw), 7, Layout.seq()).eval()
    with torch.no_grad():
        model.head.weight.mul_(30)
    return model


def test_rewind_and_reorder():
    model = lstm()
    ids = torch.randint(0, 7, (3, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, ref = model.init_state(3)
        want, _ = model.step(ref, ids[:, :6])
        _, state = model.init_state(3)
        _, state = model.step(state, ids)
        state = model.rewind(state, 4)  # back to ids[:, :5]
        got, state = model.step(state, ids[:, 5:6])
        torch.testing.assert_close(got[:, -1], want[:, -1])
        state = model.reorder_state(state, torch.tensor([1, 1, 0]))
        got, _ = model.step(state, ids[[1, 1, 0], 6:7])
        _, ref = model.init_state(3)
        want, _ = model.step(ref, ids[[1, 1, 0], :7])
        torch.testing.assert_close(got[:, -1], want[:, -1])


def test_long_chunks_fuse_and_still_rewind_the_tail():
    model = lstm(max_rewind=4)
    ids = torch.randint(0, 7, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, state = model.init_state(1)
        out, state = model.step(state, ids)
        torch.testing.assert_close(out, model(torch.cat([ids, ids[:, :1]], 1))[:, 1:])
        assert len(state.history) == 4
        state = model.rewind(state, 4)
        got, _ = model.step(state, ids[:, 36:37])
        torch.testing.assert_close(got[:, -1], out[:, 36])


def test_every_strategy_works_on_the_lstm():
    model = lstm()
    cfg = DecodeConfig(max_new_tokens=25, greedy=True)
    plain = generate(model, 1, cfg).tokens
    draft = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=64), 7, Layout.seq()).eval()
    assert torch.equal(generate(model, 1, cfg, draft=draft).tokens, plain)  # LSTM as target
    assert torch.equal(generate(model, 1, cfg, draft=lstm(seed=3)).tokens, plain)  # and as draft
    beams = generate(model, 2, DecodeConfig(max_new_tokens=6, num_beams=3, length_penalty=0))
    assert beams.tokens.shape == (2, 6)
    sampled = generate(model, 4, DecodeConfig(max_new_tokens=10, top_p=0.9, min_p=0.05),
                       generator=torch.Generator().manual_seed(0))
    assert sampled.tokens.shape == (4, 10)
