"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a cheap draft prior proposes
k tokens, the target checks them in one parallel pass, and a rejection rule keeps the samples
distributed exactly as the target's.

For draft token x_i with draft probability q_i(x_i) and target probability p_i(x_i): accept with
probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection, draw the replacement from the
residual norm(max(0, p_i - q_i)) and drop the rest; if all k are accepted, draw one more token
from p_{k+1}. Greedy decoding accepts exactly the drafts equal to the target's argmax, so its
output is the target's own greedy output.

Bookkeeping: at the start of a round the target has been fed everything but the last output
token, which goes into the verification pass in front of the drafts; one target pass per round
yields p_1 .. p_{k+1}. Rejected drafts are forgotten with `prior.rewind(state, n)`.
One sequence at a time (batch size 1): rows would accept different numbers of tokens.
"""

from __future__ import annotations

import torch

from plugins.errors import DecodingError
from priors.base import Prior
from priors.decoding import DecodeConfig, Generation, feed, process, start


def _dist(prior: Prior, params: torch.Tensor, context: list[int], processors,
          greedy: bool) -> torch.Tensor:
    """The processed next-token distribution (V,); a point mass on the argmax when greedy."""
    ctx = torch.tensor([context], dtype=torch.long, device=params.device)
    logits = process(prior.distribution.logits(params.reshape(1, -1)), ctx, processors)[0]
    if greedy:
        return torch.nn.functional.one_hot(logits.argmax(), logits.numel()).float()
    return torch.softmax(logits, dim=-1)


def _draw(probs: torch.Tensor, generator) -> int:
    device = generator.device if generator is not None else probs.device
    return int(torch.multinomial(probs.to(device), 1, generator=generator).item())


def speculative(target: Prior, draft: Prior, batch_size: int, config: DecodeConfig, processors,
                cond, prompt, generator) -> Generation:
    if batch_size != 1:
        raise DecodingError("speculative decoding generates one sequence at a time (n=1); drop "
                            "the draft prior for batched sampling")
    if draft.vocab_size != target.vocab_size:
        raise DecodingError(f"draft vocabulary ({draft.vocab_size}) differs from the target's "
                            f"({target.vocab_size}): both must use the same tokenizer")
    # the target forgets up to k rejected drafts, the draft up to k - 1
    k_max = min(config.num_draft_tokens, target.max_rewind, draft.max_rewind + 1)
    if k_max < 1:
        raise DecodingError(f"speculative decoding needs priors that can rewind: target "
                            f"'{target.name}' rewinds {target.max_rewind} tokens, draft "
                            f"'{draft.name}' {draft.max_rewind}.")
    was_training = draft.training
    draft.eval()
    try:
        return _speculative(target, draft, config, k_max, processors, cond, prompt, generator)
    finally:
        draft.train(was_training)


def _speculative(target, draft, config, k_max, processors, cond, prompt, generator) -> Generation:
    n, greedy = config.max_new_tokens, config.greedy
    t_params, t_state, ctx = start(target, 1, cond, prompt)
    d_params, d_state, _ = start(draft, 1, cond, prompt)
    device = t_params.device
    context = ctx[0].tolist()
    out: list[int] = []
    t_pending: int | None = None  # output token the target has not been fed yet
    d_pending: list[int] = []  # output tokens the draft has not been fed yet
    proposed = accepted = 0

    while len(out) < n:
        k = min(k_max, n - len(out) - 1)  # a round adds at most k + 1 tokens
        # 1. the draft catches up, then proposes k tokens
        drafts: list[int] = []
        q: list[torch.Tensor] = []
        if k:
            if d_pending:
                d_params, d_state = feed(draft, d_state, torch.tensor([d_pending], device=device))
                d_pending = []
            for i in range(k):
                q_i = _dist(draft, d_params, context + out + drafts, processors, greedy)
                drafts.append(int(q_i.argmax()) if greedy else _draw(q_i, generator))
                q.append(q_i)
                if i + 1 < k:  # the last draft is not fed: no one needs its successor's q
                    step, d_state = draft.step(d_state, torch.tensor([[drafts[-1]]], device=device))
                    d_params = step[:, -1]
        # 2. one target pass over the pending token and the drafts: p_1 .. p_{k+1}
        fed = ([t_pending] if t_pending is not None else []) + drafts
        p_params = t_params.reshape(1, -1)
        if fed:
            step, t_state = target.step(t_state, torch.tensor([fed], device=device))
            p_params = step[0] if t_pending is not None else torch.cat([p_params, step[0]])
        # 3. accept drafts while the rule allows; the round's own token ends it
        j, token = 0, None
        while j < k:
            p_j = _dist(target, p_params[j], context + out + drafts[:j], processors, greedy)
            x = drafts[j]
            u = torch.rand(1, generator=generator,
                           device=generator.device if generator is not None else "cpu").item()
            ok = bool(p_j[x] > 0) if greedy else u < min(1.0, (p_j[x] / q[j][x]).item())
            if not ok:
                residual = (p_j - q[j]).clamp(min=0)
                residual = residual / residual.sum() if residual.sum() > 0 else p_j
                token = int(p_j.argmax()) if greedy else _draw(residual, generator)
                break
            j += 1
        if token is None:  # every draft accepted: a bonus token from p_{k+1}
            p_last = _dist(target, p_params[k], context + out + drafts, processors, greedy)
            token = int(p_last.argmax()) if greedy else _draw(p_last, generator)
        proposed, accepted = proposed + k, accepted + j
        # 4. forget the rejected drafts: the target was fed all k, the draft the first k - 1
        if k - j:
            t_state = target.rewind(t_state, k - j)
        if k and k - 1 - j > 0:
            d_state = draft.rewind(d_state, k - 1 - j)
        d_pending += ([drafts[-1]] if k and j == k else []) + [token]
        t_pending = token
        out += drafts[:j] + [token]
        stop = next((i for i, x in enumerate(out) if x in config.stop_tokens), None)
        if stop is not None:
            out = out[: stop + 1]
            break
    tokens = torch.tensor([out + [out[-1]] * (n - len(out))], device=device)
    return Generation(tokens, torch.tensor([len(out)], device=device), proposed, accepted)
