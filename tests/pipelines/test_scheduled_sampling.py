"""Scheduled sampling: the schedules, p = 0 being teacher forcing bit for bit, p = 1 feeding the
model's own samples in both forms, and exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelines import Pipeline
from pipelines.recipe.loader import load_recipe
from pipelines.training.scheduled_sampling import (
    ScheduledSampling,
    ScheduledSamplingConfig,
    sample_probability,
)
from plugins.errors import RecipeError
from plugins.shared import Layout
from priors import GPT, LSTM, GPTConfig, LSTMConfig
from priors.likelihood import token_nll
from tests.conftest import need_shakespeare

ROOT = Path(__file__).resolve().parents[2]
DEBUG_LSTM = ROOT / "recipes/debug/char_lstm.yaml"
DEBUG_GPT = ROOT / "recipes/debug/char_gpt.yaml"


def test_the_schedules():
    p = lambda step, **kw: sample_probability(ScheduledSamplingConfig(**kw), step)  # noqa: E731
    assert p(0, schedule="linear", max_p=0.5, ramp_steps=100) == 0.0
    assert p(50, schedule="linear", max_p=0.5, ramp_steps=100) == 0.25
    assert p(500, schedule="linear", max_p=0.5, ramp_steps=100) == 0.5
    assert p(99, schedule="constant", max_p=0.3, start_step=100) == 0.0
    assert p(100, schedule="constant", max_p=0.3, start_step=100) == 0.3
    assert p(10, schedule="exponential", max_p=1.0, k=0.9) == pytest.approx(1 - 0.9**10)
    sigmoid = 1 - 100 / (100 + math.exp(10))
    assert p(1000, schedule="inverse_sigmoid", max_p=1.0, k=100) == pytest.approx(sigmoid)
    assert 0 < p(10**9, schedule="inverse_sigmoid", max_p=0.4) <= 0.4  # no overflow far out
    with pytest.raises(ValueError, match="0 < k < 1"):
        ScheduledSamplingConfig(schedule="exponential", k=2)
    with pytest.raises(RecipeError, match="scheduled_sampling.max_p"):
        load_recipe(DEBUG_LSTM, ["train.scheduled_sampling={max_p: 2}"])


def _train(tmp_path: Path, recipe: Path, name: str, *overrides: str) -> dict[str, torch.Tensor]:
    need_shakespeare()
    run = tmp_path / name
    Pipeline.from_recipe(recipe, ["train.max_steps=6", "train.eval_samples=0", "sample.n=1",
                                  *overrides]).train(run, progress=False)
    return load_file(run / "prior" / "model.safetensors")


@pytest.mark.parametrize("recipe", [DEBUG_LSTM, DEBUG_GPT])
def test_p_zero_is_teacher_forcing_bit_for_bit(tmp_path, recipe):
    plain = _train(tmp_path, recipe, "plain")
    zero = _train(tmp_path, recipe, "zero", "train.scheduled_sampling={schedule: constant, max_p: 0.0}")
    later = _train(tmp_path, recipe, "later", "train.scheduled_sampling={start_step: 100, max_p: 0.5}")
    mixed = _train(tmp_path, recipe, "mixed", "train.scheduled_sampling={schedule: constant, max_p: 0.5}")
    for k in plain:
        assert torch.equal(plain[k], zero[k]) and torch.equal(plain[k], later[k]), k
    assert any(not torch.equal(plain[k], mixed[k]) for k in plain), "p = 0.5 changed nothing"


def make(name: str):
    torch.manual_seed(0)
    if name == "lstm":
        return LSTM(LSTMConfig(n_layer=1, n_embd=8, n_hidden=16), 5, Layout.seq()).train()
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16), 5, Layout.seq()).train()


# the sequential form is the recurrent priors' (a GPT's KV cache is written in place)
@pytest.mark.parametrize("name,form", [("lstm", "two_pass"), ("lstm", "sequential"), ("gpt", "two_pass")])
def test_inputs_are_the_models_samples_with_probability_p(name, form, monkeypatch):
    prior = make(name)
    ids = torch.randint(0, 5, (3, 10), generator=torch.Generator().manual_seed(1))
    teacher = token_nll(prior, prior, ids)
    ss = ScheduledSampling(ScheduledSamplingConfig(schedule="constant", max_p=1.0, form=form), prior)
    # the head "samples" token 4 everywhere: with p = 1 every input is 4, targets stay the truth
    monkeypatch.setattr(prior.distribution, "sample",
                        lambda params, t=1.0, g=None: torch.full(params.shape[:-1], 4, dtype=torch.long))
    got = ss.token_nll(prior, prior, ids, None, step=0, batch=0)
    want = -prior.distribution.log_prob(prior(torch.full_like(ids, 4)), ids)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, teacher)
    got.mean().backward()
    assert all(p.grad is not None for p in prior.parameters() if p.requires_grad)
    # p = 0 inside either form: exactly the teacher-forced losses
    ss0 = ScheduledSampling(ScheduledSamplingConfig(schedule="constant", max_p=0.0, form=form), prior)
    assert torch.equal(ss0.token_nll(prior, prior, ids, None, step=0, batch=0), teacher)


def test_auto_form_and_resume_is_exact(tmp_path, interrupt_at):
    lstm = LSTM(LSTMConfig(n_layer=1, n_embd=8, n_hidden=16), 5, Layout.seq())
    gpt = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16), 5, Layout.seq())
    auto = ScheduledSamplingConfig()
    assert ScheduledSampling(auto, lstm).form == "sequential"
    assert ScheduledSampling(auto, gpt).form == "two_pass"
    assert ScheduledSampling(auto, lstm, num_processes=2).form == "two_pass"
    overrides = ["train.scheduled_sampling={schedule: constant, max_p: 0.5}", "train.checkpoint_every=3"]
    straight = _train(tmp_path, DEBUG_LSTM, "straight", *overrides)
    interrupt_at(3)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, DEBUG_LSTM, "resumed", *overrides)
    Pipeline.resume(tmp_path / "resumed", progress=False)
    resumed = load_file(tmp_path / "resumed" / "prior" / "model.safetensors")
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
