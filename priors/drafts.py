"""Draft sources for speculative decoding (priors/speculative.py): what proposes the tokens the
target checks. The rejection rule keeps the output distributed exactly as the target's whatever
the draft, so a draft only decides the speed: how cheap a proposal is and how often it is right.

- `PriorDraft`: a smaller prior with the same vocabulary (Leviathan et al. 2023; Chen et al.
  2023), sampled with the same processors; it proposes from its own distribution q.
- `NGramDraft`: prompt lookup decoding (Saxena 2023; LLMA, Yang et al. 2023), no model at all:
  find the latest earlier occurrence of the context's last n tokens (n from `max_ngram` down to
  `min_ngram`) and propose the tokens that followed it. Its proposals are point masses,
  q = one-hot(x), for which the rule accepts x with probability p(x) and, on rejection, draws
  from p with x removed. Costs a dictionary lookup per round; pays where text repeats itself
  (quotes, names, greedy loops, blank image rows). A proposal costs a longer verification pass
  even when rejected, so by default its length adapts (like Hugging Face's assisted generation):
  2 more after a round fully accepted, half after a partial one, none after a rejection at the
  first token, and a one-token probe again a few rounds later.
- Self-speculation (Draft & Verify, Zhang et al. 2023; LayerSkip, Elhoushi et al. 2024): the
  target's first M layers and its own output head as the draft, a prior built by
  `Prior.early_exit(M)` (the GPT implements it; its weights are the target's, nothing is trained
  or stored).

`resolve_draft` turns what a user names (a prior, a drafter, "ngram", "ngram:N", "layers:M")
into a drafter, or a DecodingError that says what the target cannot do.
Not here: tree drafts (several continuations checked at once), drafts for batches of rows, and
LayerSkip's sharing of the first layers' cache between the draft and the target.
"""

from __future__ import annotations

import math
import re
from typing import Protocol

import torch

from plugins.errors import DecodingError
from priors.base import Prior
from priors.decoding import feed, process, start


def distribution(prior: Prior, params: torch.Tensor, context: list[int], processors,
                 greedy: bool) -> torch.Tensor:
    """The processed next-token distribution (V,) from head params; a point mass on the argmax
    when greedy."""
    logits = prior.distribution.logits(params.reshape(1, -1))
    if processors:  # only then is the context needed, as a tensor
        ctx = torch.tensor([context], dtype=torch.long, device=params.device)
        logits = process(logits, ctx, processors)
    logits = logits[0].float()
    if greedy:
        return torch.nn.functional.one_hot(logits.argmax(), logits.numel()).float()
    return torch.softmax(logits, dim=-1)


def draw_one(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    device = generator.device if generator is not None else probs.device
    return int(torch.multinomial(probs.to(device), 1, generator=generator).item())


class Drafter(Protocol):
    """What speculative decoding needs from a draft source (one sequence)."""

    name: str
    vocab_size: int | None  # None: any (it copies tokens of the context)
    max_rewind: int  # how many proposed-and-fed tokens it can forget (math.inf: stateless)

    def start(self, cond: torch.Tensor | None, prompt: torch.Tensor | None) -> None: ...

    def propose(self, context: list[int], k: int, processors, greedy: bool,
                generator: torch.Generator | None) -> tuple[list[int], torch.Tensor | None]:
        """Up to k tokens after `context` (prompt + output so far) and their draft
        probabilities q (len, V); None: point masses on the proposed tokens. k may be 0 (the
        round feeds the target one token); `accept` follows every call."""

    def accept(self, n_accepted: int, token: int) -> None:
        """The target kept the first n_accepted proposals, then emitted `token`."""


class PriorDraft:
    """A draft prior: proposes k tokens one step at a time, feeding all but the last (nobody
    needs its successor's q); after the verdict it forgets the rejected ones (`rewind`) and
    catches up on the accepted tail and the target's token at the next proposal."""

    def __init__(self, prior: Prior):
        self.prior, self.name = prior, f"prior:{prior.name}"
        self.vocab_size = prior.vocab_size
        self.max_rewind = prior.max_rewind

    def start(self, cond, prompt) -> None:
        self.params, self.state, _ = start(self.prior, 1, cond, prompt)
        self.pending: list[int] = []  # output tokens not fed yet
        self.drafts: list[int] = []

    def propose(self, context, k, processors, greedy, generator):
        prior, device = self.prior, self.params.device
        if self.pending:
            self.params, self.state = feed(prior, self.state, torch.tensor([self.pending], device=device))
            self.pending = []
        drafts, q = [], []
        for i in range(k):
            q_i = distribution(prior, self.params, context + drafts, processors, greedy)
            drafts.append(int(q_i.argmax()) if greedy else draw_one(q_i, generator))
            q.append(q_i)
            if i + 1 < k:
                out, self.state = prior.step(self.state, torch.tensor([[drafts[-1]]], device=device))
                self.params = out[:, -1]
        self.drafts = drafts
        return drafts, (torch.stack(q) if q else None)

    def accept(self, n_accepted, token) -> None:
        k = len(self.drafts)
        if k - 1 - n_accepted > 0:  # it was fed the first k - 1 proposals
            self.state = self.prior.rewind(self.state, k - 1 - n_accepted)
        self.pending += ([self.drafts[-1]] if k and n_accepted == k else []) + [token]


class NGramDraft:
    """Prompt lookup: the continuation of the latest earlier match of the context's suffix.
    The index of every n-gram's latest end grows with the context (O(max_ngram) per token)."""

    name = "ngram"
    vocab_size = None
    max_rewind = math.inf

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1, adaptive: bool = True):
        if not 1 <= min_ngram <= max_ngram:
            raise DecodingError(f"n-gram draft: need 1 <= min_ngram <= max_ngram, got "
                                f"{min_ngram} and {max_ngram}.")
        self.max_ngram, self.min_ngram, self.adaptive = max_ngram, min_ngram, adaptive

    def start(self, cond, prompt) -> None:
        self.index: dict[tuple[int, ...], int] = {}  # n-gram -> end of its latest occurrence
        self.indexed = 0  # context length covered by the index
        # Proposals cost a longer verification pass even when rejected: like Hugging Face's
        # assisted generation, propose more after a round fully accepted, fewer after a
        # rejection, and none at all while copies keep failing (a small probe length returns).
        self.length: float = math.inf
        self.proposed = 0

    def _extend(self, context: list[int]) -> None:
        # an n-gram ending at e (exclusive) is indexed once context[e] exists: a continuation
        for e in range(max(1, self.indexed), len(context)):
            for n in range(self.min_ngram, min(self.max_ngram, e) + 1):
                self.index[tuple(context[e - n : e])] = e
        self.indexed = max(self.indexed, len(context))

    def propose(self, context, k, processors, greedy, generator):
        self._extend(context)
        self.proposed = 0
        if k < 1:  # the engine asked for none this round: the adaptive length stays as it is
            return [], None
        if self.adaptive:
            self.length = min(self.length, k)
            k = int(self.length)
        if k < 1:
            self.length += 0.25  # probe again after a few rounds without drafts
            return [], None
        for n in range(min(self.max_ngram, len(context)), self.min_ngram - 1, -1):
            e = self.index.get(tuple(context[-n:]))
            if e is not None:
                drafts = context[e : e + k]
                self.proposed = len(drafts)
                return drafts, None
        return [], None

    def accept(self, n_accepted, token) -> None:
        if not self.adaptive or not self.proposed:
            return
        if n_accepted == self.proposed:
            self.length += 2
        else:  # halve towards zero: a draft rejected at its first token stops proposing
            self.length = n_accepted if n_accepted == 0 else max(1, self.length // 2)


_SPEC = re.compile(r"^(ngram|layers)(?::(\d+))?$")


def is_draft_spec(value: object) -> bool:
    """Whether `value` names a model-free or self-speculative draft ("ngram", "layers:2")."""
    return isinstance(value, str) and bool(_SPEC.match(value))


def resolve_draft(target: Prior, draft: Prior | Drafter | str) -> Drafter:
    """A drafter from what the user named, checked against the target."""
    if isinstance(draft, str):
        m = _SPEC.match(draft)
        if m is None:
            raise DecodingError(f"unknown draft {draft!r}: use a draft prior (a run directory "
                                "from the command line), 'ngram[:N]' (prompt lookup, N the "
                                "longest n-gram) or 'layers:M' (the target's first M layers).")
        kind, arg = m.group(1), m.group(2)
        if kind == "ngram":
            return NGramDraft(max_ngram=int(arg) if arg else 3)
        if arg is None:
            raise DecodingError("the 'layers' draft needs a layer count: 'layers:M', e.g. layers:2.")
        draft = target.early_exit(int(arg))  # raises DecodingError when it cannot
    if isinstance(draft, Prior):
        if draft.vocab_size != target.vocab_size:
            raise DecodingError(f"draft vocabulary ({draft.vocab_size}) differs from the target's "
                                f"({target.vocab_size}): both must use the same tokenizer")
        if draft.distribution.continuous:
            raise DecodingError(f"draft prior '{draft.name}' has a continuous head: speculative "
                                "decoding needs per-token probabilities.")
        return PriorDraft(draft)
    return draft
