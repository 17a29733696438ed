"""The prior and head contract suites, shipped so plugin authors run the same checks tokar runs.

A prior: subclass `PriorContract` and provide a `make_prior` fixture, a function
(vocab_size, layout) -> fresh prior (it is also called with head=... when you list more heads
in `heads`)::

    import pytest
    from priors.testing import PriorContract

    class TestMyPrior(PriorContract):
        @pytest.fixture
        def make_prior(self):
            return lambda vocab_size, layout, **kw: MyPrior(MyPrior.Config(**kw), vocab_size, layout)

The suite checks, on each layout kind the prior declares (`seq`, `grid`; real-valued layouts
too when it sets `continuous_inputs`): shapes; causality (changing position t never changes the
params at positions <= t, and does change a later one); log_prob == the head's log_prob of
forward == the sum of the conditionals from init_state/step, one position at a time and k at a
time; save/load gives identical outputs; determinism under a seed; and the optional methods:
`rewind` forgets exactly n positions and speculative greedy decoding equals greedy decoding
(or, for a prior with max_rewind 0, speculative decoding is refused with a DecodingError),
`reorder_state` selects rows (or beam search is refused with a DecodingError).

Fixtures: `make_prior(vocab_size, layout, **settings)` (required); `case`, a (layout key, head
name) pair from LAYOUTS and the registered heads (default: seq and grid with the categorical
head; override it to test more). Failures name the values involved.

A head: subclass `HeadContract` and provide `head` (an instance) and `space` fixtures. It checks
that the probabilities of all discrete values sum to one and agree with `logits`, that samples
follow the distribution (frequencies for discrete heads; moments and total mass of the density for
continuous ones), and that the integer pmf is what an entropy coder needs: exact total, every
value at least 1, cdf strictly increasing.
"""

from __future__ import annotations

import math

import pytest
import torch

from plugins.shared import Layout, ValueSpace
from priors import DecodeConfig, generate
from priors.base import Prior
from priors.heads.base import PMF_PRECISION, Head

VOCAB = 7
LENGTH = 12
DIMS = 2  # reals per position in continuous layouts
ATOL = 1e-4
LAYOUTS = {"seq": Layout.seq(), "grid": Layout.grid(3, 4),
           "seq-real": Layout.seq(dims=DIMS), "grid-real": Layout.grid(3, 4, dims=DIMS)}


def layouts_for(prior_cls: type[Prior]) -> list[str]:
    """The keys of LAYOUTS this prior class models."""
    return [key for key, layout in LAYOUTS.items() if layout.kind in prior_cls.layouts
            and (not layout.continuous or prior_cls.continuous_inputs)]


def vocab_for(head: str) -> int:
    """A vocabulary the head fits (binary for Bernoulli)."""
    return 2 if head == "bernoulli" else VOCAB


def step_forward_mismatch(got: torch.Tensor, want: torch.Tensor, chunk: int,
                          params: tuple[torch.Tensor, torch.Tensor] | None = None,
                          atol: float = 1e-3) -> str | None:
    """What is wrong when incremental decoding's per-position log-likelihoods `got` (B, T) are
    not forward's `want`: the first row that differs, at which positions, by how much, and the
    likely cause (None: they agree). `params`, step's and forward's (B, T, P), spot a shift.
    Sampling, beam search and compression decode with `step`, training and scoring use
    `forward`: a difference means samples do not come from the model that was trained."""
    diff = (got - want).abs()
    bad = diff > atol + 1e-5 * want.abs()
    if not bad.any():
        return None
    row = int(bad.any(1).nonzero()[0])
    positions = bad[row].nonzero().flatten().tolist()
    shown = f"{positions[:12]}"[:-1] + (", ...]" if len(positions) > 12 else "]")
    causes = []
    if positions[0] == 0:
        causes.append("position 0 comes from init_state: it must give forward's params at "
                      "position 0 (the start token, the class)")
    if params is not None and got.size(1) > 1:  # compare the params themselves, shifted
        mine, theirs = params[0][row].float(), params[1][row].float()
        if torch.allclose(mine[1:], theirs[:-1], atol=atol):
            causes.append("step's params at position t are forward's at t - 1: step lags one "
                          "position behind (a shift by one)")
        elif torch.allclose(mine[:-1], theirs[1:], atol=atol):
            causes.append("step's params at position t are forward's at t + 1: step runs one "
                          "position ahead (a shift by one)")
    if not causes:
        causes.append("check that step feeds the same inputs at the same positions as forward "
                      "(a shift by one?) and keeps every earlier position in its state"
                      + (f"; step() got {chunk} positions per call: does it handle k > 1?"
                         if chunk > 1 else ""))
    return (f"step() and forward() disagree at positions {shown} of row {row} (max |diff| "
            f"{diff[row].max().item():.3g} nats of log-likelihood, fed {chunk} position(s) per "
            "step() call): incremental decoding does not reproduce teacher forcing, so samples "
            "do not come from the model training scored; " + "; ".join(causes) + ".")


class PriorContract:
    """Checks every prior must pass. Fixture: `make_prior(vocab_size, layout[, head=...])`.
    Override the `case` fixture to choose (layout key, head name) pairs."""

    @pytest.fixture(params=[("seq", "categorical"), ("grid", "categorical")],
                    ids=lambda c: f"{c[0]}-{c[1]}")
    def case(self, request) -> tuple[str, str]:
        return request.param

    @pytest.fixture
    def prior(self, case, make_prior) -> Prior:
        key, head = case
        torch.manual_seed(0)
        kwargs = {} if head == "categorical" else {"head": head}
        probe = make_prior(0 if LAYOUTS[key].continuous else vocab_for(head), LAYOUTS[key], **kwargs)
        if LAYOUTS[key].kind not in type(probe).layouts:
            pytest.skip(f"{type(probe).__name__} does not model {LAYOUTS[key].kind} layouts")
        return probe.eval()

    @pytest.fixture
    def batch(self, prior: Prior):
        g = torch.Generator().manual_seed(1)
        if prior.space.continuous:
            x = torch.randn(3, LENGTH, prior.space.size, generator=g)
        else:
            x = torch.randint(0, prior.vocab_size, (3, LENGTH), generator=g)
        cond = torch.randint(0, prior.num_classes, (3,), generator=g) if prior.num_classes else None
        return x, cond

    @staticmethod
    def _change(x: torch.Tensor, t: int, prior: Prior) -> torch.Tensor:
        changed = x.clone()
        if prior.space.continuous:
            changed[:, t] += 1.0
        else:
            changed[:, t] = (changed[:, t] + 1) % prior.vocab_size
        return changed

    def test_forward_shape(self, prior: Prior, batch) -> None:
        x, cond = batch
        params = prior(x, cond)
        assert params.shape == (3, LENGTH, prior.n_params), \
            f"forward gave {tuple(params.shape)}, expected (3, {LENGTH}, n_params={prior.n_params})"
        assert torch.isfinite(params).all(), "forward gave non-finite params"

    def test_causality(self, prior: Prior, batch) -> None:
        x, cond = batch
        with torch.no_grad():
            base = prior(x, cond)
            for t in range(LENGTH):
                out = prior(self._change(x, t, prior), cond)
                torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], atol=ATOL, rtol=0,
                                           msg=lambda m, t=t: f"changing position {t} changed the "
                                           f"params at positions <= {t}: {m}")
                if t + 1 < LENGTH:  # and the model is not blind: later positions do see it
                    assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :]), \
                        f"changing position {t} changed nothing after it (a blind prior, or " \
                        "weights initialised to zero)"

    def test_log_prob_matches_forward(self, prior: Prior, batch) -> None:
        x, cond = batch
        with torch.no_grad():
            params = prior(x, cond)
            expected = prior.distribution.log_prob(params, x).sum(1)
            torch.testing.assert_close(prior.log_prob(x, cond), expected, atol=ATOL, rtol=1e-5)
            if not prior.distribution.continuous:  # the cheap likelihood path == all V masses
                full = torch.log_softmax(prior.distribution.logits(params).float(), -1)
                full = full.gather(-1, x[..., None]).squeeze(-1).sum(1)
                torch.testing.assert_close(expected, full, atol=ATOL, rtol=1e-5)

    @pytest.mark.parametrize("chunk", [1, 5])
    def test_log_prob_matches_incremental(self, prior: Prior, batch, chunk: int) -> None:
        """Sum of the conditionals from init_state/step (feeding `chunk` positions per call)."""
        x, cond = batch
        with torch.no_grad():
            params, state = prior.init_state(x.size(0), cond)
            steps = [params[:, None]]
            for s in range(0, LENGTH - 1, chunk):
                out, state = prior.step(state, x[:, s : min(s + chunk, LENGTH - 1)])
                steps.append(out)
            params = torch.cat(steps, dim=1)  # (B, T, P)
            assert params.shape == (3, LENGTH, prior.n_params), \
                f"init_state/step gave params {tuple(params.shape)} over {LENGTH} positions, " \
                f"expected (3, {LENGTH}, n_params={prior.n_params})"
            got = prior.distribution.log_prob(params, x)  # (B, T): per position, to say where
            forward = prior(x, cond)
            want = prior.distribution.log_prob(forward, x)
            problem = step_forward_mismatch(got, want, chunk, (params, forward))
            if problem:
                pytest.fail(problem, pytrace=False)
            torch.testing.assert_close(got.sum(1), prior.log_prob(x, cond), atol=1e-3, rtol=1e-5)

    def test_save_load_identical(self, prior: Prior, batch, tmp_path) -> None:
        x, cond = batch
        prior.save(tmp_path / "prior")
        loaded = type(prior).from_pretrained(tmp_path / "prior")
        assert loaded.layout == prior.layout and loaded.vocab_size == prior.vocab_size
        assert loaded.distribution.name == prior.distribution.name
        with torch.no_grad():
            torch.testing.assert_close(loaded(x, cond), prior(x, cond), atol=0, rtol=0)

    def test_deterministic_under_seed(self, prior: Prior, make_prior, case, batch) -> None:
        x, cond = batch
        torch.manual_seed(0)
        kwargs = {} if case[1] == "categorical" else {"head": case[1]}
        again = make_prior(prior.vocab_size, prior.layout, **kwargs).eval()
        with torch.no_grad():
            torch.testing.assert_close(again(x, cond), prior(x, cond), atol=0, rtol=0)

        def draw():
            return generate(prior, 3, DecodeConfig(max_new_tokens=LENGTH), cond=cond,
                            generator=torch.Generator().manual_seed(5)).tokens

        first, second = draw(), draw()
        assert torch.equal(first, second)
        if prior.space.continuous:
            assert first.shape == (3, LENGTH, prior.space.size) and torch.isfinite(first).all()
        else:
            assert first.shape == (3, LENGTH) and first.min() >= 0 and first.max() < prior.vocab_size


    # -- optional capabilities: each either works exactly or is refused clearly --------------------
    def test_rewind_forgets_exactly_the_last_n(self, prior: Prior, batch) -> None:
        """After feeding 6 positions and rewinding n, feeding the same positions again gives the
        params a state that never saw them gives (what speculative decoding relies on)."""
        x, cond = batch
        if prior.max_rewind < 1:
            with pytest.raises(NotImplementedError):
                prior.rewind(prior.init_state(3, cond).state, 1)
            return
        n = min(3, prior.max_rewind)
        with torch.no_grad():
            _, state = prior.init_state(3, cond)
            _, state = prior.step(state, x[:, :6])
            state = prior.rewind(state, n)
            again, _ = prior.step(state, x[:, 6 - n : 9])
            _, fresh = prior.init_state(3, cond)
            want, _ = prior.step(fresh, x[:, :9])
        torch.testing.assert_close(again, want[:, 6 - n :], atol=1e-4, rtol=1e-4,
                                   msg=lambda m: f"rewind({n}) did not forget exactly {n} positions: {m}")

    def test_speculative_greedy_equals_greedy(self, prior: Prior, make_prior, case, batch) -> None:
        """A draft (the same architecture, other weights) proposes, the prior verifies: greedy
        output must be the prior's own greedy output, token for token."""
        from plugins.errors import DecodingError

        x, cond = batch
        config = DecodeConfig(max_new_tokens=LENGTH, greedy=True, num_draft_tokens=3)
        if prior.max_rewind < 1 or prior.distribution.continuous:
            with pytest.raises(DecodingError):
                generate(prior, 1, config, cond=None if cond is None else cond[:1], draft=prior)
            return
        torch.manual_seed(1)
        kwargs = {} if case[1] == "categorical" else {"head": case[1]}
        draft = make_prior(prior.vocab_size, prior.layout, **kwargs).eval()
        for row in range(2):
            c = None if cond is None else cond[row : row + 1]
            plain = generate(prior, 1, config, cond=c).tokens
            fast = generate(prior, 1, config, cond=c, draft=draft)
            assert torch.equal(fast.tokens, plain), \
                f"speculative greedy {fast.tokens.tolist()} != greedy {plain.tolist()}"

    def test_reorder_state_selects_rows(self, prior: Prior, batch) -> None:
        """Beam search reorders states; the reordered state continues like the rows it copied."""
        from plugins.errors import DecodingError

        x, cond = batch
        if type(prior).reorder_state is Prior.reorder_state:
            with pytest.raises(DecodingError, match="beam search"):
                generate(prior, 1, DecodeConfig(max_new_tokens=3, num_beams=2),
                         cond=None if cond is None else cond[:1])
            return
        index = torch.tensor([2, 0, 0])
        with torch.no_grad():
            _, state = prior.init_state(3, cond)
            _, state = prior.step(state, x[:, :5])
            state = prior.reorder_state(state, index)
            got, _ = prior.step(state, x[index, 5:8])
            _, fresh = prior.init_state(3, None if cond is None else cond[index])
            want, _ = prior.step(fresh, x[index, :8])
        torch.testing.assert_close(got, want[:, 5:], atol=1e-4, rtol=1e-4,
                                   msg=lambda m: f"reorder_state([2, 0, 0]) then step: {m}")


class HeadContract:
    """Checks every head must pass. Fixtures: `head` (an instance) and `space` (its ValueSpace)."""

    N_SAMPLES = 20_000

    @pytest.fixture
    def params(self, head: Head) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)  # scales of densities within a few units of 1
        return torch.randn(4, head.n_params, generator=g) * (0.5 if head.continuous else 1.5)

    def test_shapes(self, head: Head, space: ValueSpace, params) -> None:
        x = head.sample(params, 1.0, torch.Generator().manual_seed(0))
        want = (4, space.size) if space.continuous else (4,)
        assert tuple(x.shape) == want, f"sample gave {tuple(x.shape)}, expected {want}"
        lp = head.log_prob(params, x)
        assert lp.shape == (4,) and lp.dtype == torch.float32 and torch.isfinite(lp).all()

    def test_discrete_probabilities_sum_to_one(self, head: Head, space: ValueSpace, params) -> None:
        if space.continuous:
            return self._density_integrates_to_one(head, space)
        values = torch.arange(space.size)
        lp = torch.stack([head.log_prob(params, v.expand(4)) for v in values], -1)  # (4, V)
        torch.testing.assert_close(lp.exp().sum(-1), torch.ones(4), atol=1e-4, rtol=0,
                                   msg="exp(log_prob) over all values does not sum to 1")
        torch.testing.assert_close(lp, torch.log_softmax(head.logits(params).float(), -1),
                                   atol=1e-4, rtol=1e-4, msg="log_prob disagrees with logits")
        return None

    def _density_integrates_to_one(self, head: Head, space: ValueSpace) -> None:
        if space.size != 1:
            return  # a 1-D integral is enough to check the normalisation
        params = torch.randn(2, head.n_params, generator=torch.Generator().manual_seed(3)) * 0.5
        grid, dx = torch.linspace(-40, 40, 400_001), 80 / 400_000
        for row in params:
            density = head.log_prob(row.expand(grid.numel(), -1), grid[:, None]).double().exp()
            mass = float(density.sum() * dx)
            assert abs(mass - 1) < 1e-3, f"the density integrates to {mass}, not 1"

    def test_samples_follow_the_distribution(self, head: Head, space: ValueSpace, params) -> None:
        row = params[:1].expand(self.N_SAMPLES, -1)
        x = head.sample(row, 1.0, torch.Generator().manual_seed(1))
        if not space.continuous:
            freq = torch.bincount(x, minlength=space.size).double() / self.N_SAMPLES
            probs = torch.softmax(head.logits(params[:1]).double(), -1)[0]
            tv = 0.5 * (freq - probs).abs().sum().item()
            assert tv < 0.02, f"sample frequencies are {tv:.3f} (total variation) from the probabilities"
            return
        if space.size != 1:
            return
        grid = torch.linspace(-40, 40, 400_001)
        density = head.log_prob(params[:1].expand(grid.numel(), -1), grid[:, None]).double().exp()
        w = density / density.sum()
        mean = float((w * grid).sum())
        std = math.sqrt(float((w * (grid - mean) ** 2).sum()))
        got_mean, got_std = x.double().mean().item(), x.double().std().item()
        tol = 4 * std / math.sqrt(self.N_SAMPLES)
        assert abs(got_mean - mean) < tol, f"sample mean {got_mean:.4f}, density mean {mean:.4f}"
        assert abs(got_std - std) < 0.03 * std, f"sample std {got_std:.4f}, density std {std:.4f}"
        cooler = head.sample(row, 0.25, torch.Generator().manual_seed(1)).double().std().item()
        assert cooler < got_std, "a temperature below 1 should narrow the samples"

    def test_quantized_pmf_is_codeable(self, head: Head, space: ValueSpace, params) -> None:
        if space.continuous:
            with pytest.raises(NotImplementedError):
                head.logits(params)
            return
        pmf = head.quantized_pmf(params)
        assert pmf.dtype == torch.int64 and pmf.shape == (4, space.size)
        assert (pmf.sum(-1) == 1 << PMF_PRECISION).all(), "the pmf must sum to 2**precision"
        assert (pmf >= 1).all(), "every value needs a nonzero frequency, or it cannot be coded"
        cdf = head.quantized_cdf(params)
        assert (cdf[:, 1:] > cdf[:, :-1]).all() and (cdf[:, 0] == 0).all()
        probs = torch.softmax(head.logits(params).double(), -1)
        err = (pmf.double() / (1 << PMF_PRECISION) - probs).abs().max().item()
        assert err < space.size / (1 << PMF_PRECISION) + 1e-3, f"pmf is {err} from the probabilities"
        assert torch.equal(pmf, head.quantized_pmf(params.clone())), "pmf is not reproducible"
