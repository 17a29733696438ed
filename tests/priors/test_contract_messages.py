"""The contract suites' failures say what is wrong: a prior whose step() does not reproduce
forward() gets the positions, the size of the difference and the likely cause."""

from __future__ import annotations

import pytest
import torch

from plugins.shared import Layout
from priors import Prior, StepOutput
from priors.testing import LENGTH, VOCAB, PriorContract, step_forward_mismatch


class Bigram(Prior):
    name = "contract_bigram"
    layouts = frozenset({"seq"})
    lag = False  # True: step returns the params of the token before x (a shift by one)
    corrupt_from = None  # an int t: step adds 0.5 to the first logit at positions >= t

    def __init__(self, config, vocab_size, layout):
        super().__init__(config, vocab_size, layout)
        self.table = torch.nn.Parameter(torch.randn(vocab_size + 1, self.n_params))

    def forward(self, x, cond=None):
        prev = torch.cat([torch.full_like(x[:, :1], self.vocab_size), x[:, :-1]], dim=1)
        return self.table[prev]

    def init_state(self, batch_size, cond=None):
        start = torch.full((batch_size, 1), self.vocab_size, dtype=torch.long)
        return StepOutput(self.table[self.vocab_size].expand(batch_size, -1), (start, 0))

    def step(self, state, x):
        last, fed = state
        seen = torch.cat([last, x], 1)
        params = self.table[seen[:, :-1] if self.lag else x]
        if self.corrupt_from is not None:  # positions fed+1 .. fed+k are predicted here
            at = torch.arange(fed + 1, fed + 1 + x.size(1))
            one_hot = torch.nn.functional.one_hot(torch.tensor(0), self.n_params)
            params = params + 0.5 * (at >= self.corrupt_from)[None, :, None] * one_hot
        return StepOutput(params, (seen[:, -1:], fed + x.size(1)))


def run_incremental_check(**broken) -> str:
    torch.manual_seed(0)
    prior = Bigram(Bigram.Config(), VOCAB, Layout.seq()).eval()
    for key, value in broken.items():
        setattr(prior, key, value)
    x = torch.randint(0, VOCAB, (3, LENGTH), generator=torch.Generator().manual_seed(1))
    with pytest.raises(pytest.fail.Exception) as failure:
        PriorContract().test_log_prob_matches_incremental(prior, (x, None), chunk=1)
    return str(failure.value)


def test_a_correct_prior_passes():
    torch.manual_seed(0)
    prior = Bigram(Bigram.Config(), VOCAB, Layout.seq()).eval()
    x = torch.randint(0, VOCAB, (3, LENGTH), generator=torch.Generator().manual_seed(1))
    for chunk in (1, 5):
        PriorContract().test_log_prob_matches_incremental(prior, (x, None), chunk=chunk)


def test_a_step_that_drifts_is_told_where_and_by_how_much():
    message = run_incremental_check(corrupt_from=9)
    assert message.startswith("step() and forward() disagree at positions [9, 10, 11] of row 0 "
                              "(max |diff| "), message
    assert "incremental decoding does not reproduce teacher forcing" in message
    assert "check that step feeds the same inputs at the same positions as forward (a shift by one?)" \
        in message


def test_a_step_shifted_by_one_is_called_a_shift():
    message = run_incremental_check(lag=True)
    assert "step() and forward() disagree at positions [1, " in message and "of row 0" in message
    assert "step lags one position behind (a shift by one)" in message


def test_mismatch_reports_position_zero_and_agreement():
    want = torch.zeros(2, 4)
    assert step_forward_mismatch(want + 1e-5, want, chunk=1) is None
    got = want.clone()
    got[1, 0] = 0.5
    message = step_forward_mismatch(got, want, chunk=5)
    assert "at positions [0] of row 1 (max |diff| 0.5 nats" in message
    assert "position 0 comes from init_state" in message
