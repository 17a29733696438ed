"""The prior contract suite, shipped so plugin authors run the same checks tokar runs.

Subclass it and provide a `make_prior` fixture: a function (vocab_size, layout) -> fresh prior::

    import pytest
    from priors.testing import PriorContract

    class TestMyPrior(PriorContract):
        @pytest.fixture
        def make_prior(self):
            return lambda vocab_size, layout: MyPrior(MyPrior.Config(), vocab_size, layout)

The suite checks: shapes; causality (changing token t never changes logits at positions <= t);
log_prob == -cross-entropy of forward == sum of the conditionals from init_state/step, one token
at a time and k tokens at a time; save/load gives identical outputs; determinism under a seed.
Class-conditional priors are also checked with labels if `n_classes` > 0.
"""

from __future__ import annotations

import pytest
import torch

from priors.base import Prior
from priors.sampling import DecodeConfig, generate
from tokenizers_ar.base import Layout

VOCAB = 7
LENGTH = 12
ATOL = 1e-4


def layouts_for(prior_cls: type[Prior]) -> list[Layout]:
    """A small layout of each kind the prior accepts (grids of LENGTH tokens)."""
    out = []
    if "seq" in prior_cls.layouts:
        out.append(Layout.seq())
    if "grid" in prior_cls.layouts:
        out.append(Layout.grid(3, 4))
    return out


class PriorContract:
    """Checks every prior must pass. Fixture: `make_prior(vocab_size, layout) -> Prior`."""

    @pytest.fixture(params=["seq", "grid"])
    def prior(self, request, make_prior) -> Prior:
        layout = Layout.seq() if request.param == "seq" else Layout.grid(3, 4)
        torch.manual_seed(0)
        probe = make_prior(VOCAB, layout)
        if layout.kind not in type(probe).layouts:
            pytest.skip(f"{type(probe).__name__} does not model {layout.kind} layouts")
        return probe.eval()

    @pytest.fixture
    def batch(self, prior: Prior):
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, VOCAB, (3, LENGTH), generator=g)
        cond = torch.randint(0, prior.num_classes, (3,), generator=g) if prior.num_classes else None
        return ids, cond

    def test_forward_shape(self, prior: Prior, batch) -> None:
        ids, cond = batch
        logits = prior(ids, cond)
        assert logits.shape == (3, LENGTH, VOCAB)
        assert torch.isfinite(logits).all()

    def test_causality(self, prior: Prior, batch) -> None:
        ids, cond = batch
        with torch.no_grad():
            base = prior(ids, cond)
            for t in range(LENGTH):
                changed = ids.clone()
                changed[:, t] = (changed[:, t] + 1) % VOCAB
                out = prior(changed, cond)
                torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], atol=ATOL, rtol=0,
                                           msg=lambda m, t=t: f"changing token {t} changed logits "
                                           f"at positions <= {t}: {m}")
                if t + 1 < LENGTH:  # and the model is not blind: later positions do see it
                    assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :]), \
                        f"changing token {t} changed nothing after it"

    def test_log_prob_matches_forward(self, prior: Prior, batch) -> None:
        ids, cond = batch
        with torch.no_grad():
            logp = torch.log_softmax(prior(ids, cond).float(), -1)
            expected = logp.gather(-1, ids[..., None]).squeeze(-1).sum(1)
            torch.testing.assert_close(prior.log_prob(ids, cond), expected, atol=ATOL, rtol=1e-5)

    @pytest.mark.parametrize("chunk", [1, 5])
    def test_log_prob_matches_incremental(self, prior: Prior, batch, chunk: int) -> None:
        """Sum of the conditionals from init_state/step (feeding `chunk` tokens per call)."""
        ids, cond = batch
        with torch.no_grad():
            logits, state = prior.init_state(ids.size(0), cond)
            steps = [logits[:, None]]
            for s in range(0, LENGTH - 1, chunk):
                out, state = prior.step(state, ids[:, s : min(s + chunk, LENGTH - 1)])
                steps.append(out)
            logits = torch.cat(steps, dim=1)  # (B, T, V)
            assert logits.shape == (3, LENGTH, VOCAB)
            incremental = torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None]).sum((1, 2))
            torch.testing.assert_close(incremental, prior.log_prob(ids, cond), atol=1e-3, rtol=1e-5)

    def test_save_load_identical(self, prior: Prior, batch, tmp_path) -> None:
        ids, cond = batch
        prior.save(tmp_path / "prior")
        loaded = type(prior).from_pretrained(tmp_path / "prior")
        assert loaded.layout == prior.layout and loaded.vocab_size == prior.vocab_size
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids, cond), prior(ids, cond), atol=0, rtol=0)

    def test_deterministic_under_seed(self, prior: Prior, make_prior, batch) -> None:
        ids, cond = batch
        torch.manual_seed(0)
        again = make_prior(VOCAB, prior.layout).eval()
        with torch.no_grad():
            torch.testing.assert_close(again(ids, cond), prior(ids, cond), atol=0, rtol=0)

        def draw():
            return generate(prior, 3, DecodeConfig(max_new_tokens=LENGTH), cond=cond,
                            generator=torch.Generator().manual_seed(5)).tokens

        first, second = draw(), draw()
        assert torch.equal(first, second)
        assert first.shape == (3, LENGTH) and first.min() >= 0 and first.max() < VOCAB
