"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a cheap draft proposes k
tokens, the target checks them in one parallel pass, and a rejection rule keeps the samples
distributed exactly as the target's.

For draft token x_i with draft probability q_i(x_i) and target probability p_i(x_i): accept with
probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection, draw the replacement from the
residual norm(max(0, p_i - q_i)) and drop the rest; if all k are accepted, draw one more token
from p_{k+1}. Greedy decoding accepts exactly the drafts equal to the target's argmax, so its
output is the target's own greedy output. The draft is any source of priors/drafts.py: a
smaller prior, prompt lookup (n-grams of the context, point-mass proposals q = one-hot), or the
target's own first layers.

A target whose state must be rebuilt every so often (the GPT's window slides past block_size)
says how many tokens it can take before the next rebuild (`Prior.step_horizon`); a round's
drafts stop there, so a rejection never rolls back across a rebuild only to pay it again.

Bookkeeping: at the start of a round the target has been fed everything but the last output
token, which goes into the verification pass in front of the drafts; one target pass per round
yields p_1 .. p_{k+1}. Rejected drafts are forgotten with `prior.rewind(state, n)`. The target's
k + 1 distributions and the k acceptance tests are computed at once (one host read per verdict).
Several sequences (n > 1) are decoded one after another, each with its own acceptance: rows
of a batch would accept different numbers of tokens per round, so they are not batched.
"""

from __future__ import annotations

import torch

from plugins.errors import DecodingError
from priors.base import Prior
from priors.decoding import DecodeConfig, Generation, start
from priors.drafts import Drafter, distribution, draw_one, resolve_draft


def speculative(target: Prior, draft: Prior | Drafter | str, batch_size: int, config: DecodeConfig,
                processors, cond, prompt, generator) -> Generation:
    drafter = resolve_draft(target, draft)
    # the target forgets up to k rejected drafts, the draft up to k - 1
    k_max = min(config.num_draft_tokens, target.max_rewind, drafter.max_rewind + 1)
    if k_max < 1:
        raise DecodingError(f"speculative decoding needs priors that can rewind: target "
                            f"'{target.name}' rewinds {target.max_rewind} tokens, draft "
                            f"'{drafter.name}' {drafter.max_rewind}.")
    prior = getattr(drafter, "prior", None)
    was_training = prior.training if prior is not None else False
    if prior is not None:
        prior.eval()
    try:
        rows = [_speculative(target, drafter, config, int(k_max), processors,
                             None if cond is None else cond[b : b + 1],
                             None if prompt is None else prompt[b : b + 1], generator)
                for b in range(batch_size)]
        return Generation(torch.cat([r.tokens for r in rows]), torch.cat([r.lengths for r in rows]),
                          sum(r.proposed for r in rows), sum(r.accepted for r in rows))
    finally:
        if prior is not None:
            prior.train(was_training)


def _target_dists(target: Prior, params: torch.Tensor, context: list[int], drafts: list[int],
                  processors, greedy: bool) -> torch.Tensor:
    """p_1 .. p_{k+1} (k + 1, V) from the verification pass's params, all rows at once unless a
    processor needs each row's own context."""
    if processors:
        return torch.stack([distribution(target, params[j], context + drafts[:j], processors, greedy)
                            for j in range(params.size(0))])
    logits = target.distribution.logits(params).float()
    if greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).float()
    return torch.softmax(logits, dim=-1)


def _speculative(target: Prior, drafter: Drafter, config: DecodeConfig, k_max: int, processors,
                 cond, prompt, generator) -> Generation:
    n, greedy = config.max_new_tokens, config.greedy
    t_params, t_state, ctx = start(target, 1, cond, prompt)
    drafter.start(cond, prompt)
    device = t_params.device
    rand_device = generator.device if generator is not None else "cpu"
    tokens = ctx[0].tolist()  # prompt, then the output
    n_prompt = len(tokens)
    t_pending: int | None = None  # output token the target has not been fed yet
    proposed = accepted = 0
    stops = set(config.stop_tokens)

    while len(tokens) - n_prompt < n:
        k = min(k_max, n - (len(tokens) - n_prompt) - 1)  # a round adds at most k + 1 tokens
        horizon = target.step_horizon(t_state)
        if horizon is not None:  # the pass stays short of the target's next rebuild: no rewind undoes it
            k = min(k, horizon - (t_pending is not None))
        drafts, q = drafter.propose(tokens, k, processors, greedy, generator)
        k = len(drafts)
        # one target pass over the pending token and the drafts: p_1 .. p_{k+1}
        fed = ([t_pending] if t_pending is not None else []) + drafts
        p_params = t_params.reshape(1, -1)
        if fed:
            step, t_state = target.step(t_state, torch.tensor([fed], device=device))
            p_params = step[0] if t_pending is not None else torch.cat([p_params, step[0]])
        p = _target_dists(target, p_params, tokens, drafts, processors, greedy)  # (k + 1, V)
        # the verdict on all k drafts at once: accept x_j while u_j < p_j(x_j) / q_j(x_j)
        j = 0
        if k:
            x = torch.tensor(drafts, device=p.device)
            p_x = p[:-1].gather(1, x[:, None])[:, 0]
            if greedy:
                ok = p_x > 0
            else:
                q_x = q.gather(1, x[:, None])[:, 0] if q is not None else torch.ones_like(p_x)
                u = torch.rand(k, generator=generator, device=rand_device).to(p.device)
                ok = u < (p_x / q_x).clamp(max=1.0)
            j = int(ok.long().cumprod(0).sum())
        if j < k:  # rejected: the replacement comes from the residual max(0, p_j - q_j)
            p_j = p[j]
            if greedy:
                token = int(p_j.argmax())
            else:
                q_j = q[j] if q is not None else torch.nn.functional.one_hot(
                    torch.tensor(drafts[j], device=p.device), p_j.numel()).float()
                residual = (p_j - q_j).clamp(min=0)
                total = residual.sum()
                token = draw_one(residual / total if total > 0 else p_j, generator)
        else:  # every draft accepted: a bonus token from p_{k+1}
            token = int(p[k].argmax()) if greedy else draw_one(p[k], generator)
        proposed, accepted = proposed + k, accepted + j
        if k - j:  # the target was fed all k drafts
            t_state = target.rewind(t_state, k - j)
        drafter.accept(j, token)
        t_pending = token
        new = drafts[:j] + [token]
        tokens += new
        hit = next((i for i, t in enumerate(new) if t in stops), None)
        if hit is not None:
            del tokens[len(tokens) - len(new) + hit + 1 :]
            break
    out = tokens[n_prompt : n_prompt + n]
    padded = out + [out[-1]] * (n - len(out))
    return Generation(torch.tensor([padded], device=device), torch.tensor([len(out)], device=device),
                      proposed, accepted)

