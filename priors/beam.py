"""Beam search with a length penalty, on any prior that can reorder its decoding state.

Each of the B sequences keeps `num_beams` hypotheses; at every step all beams x vocabulary
continuations are scored by their total log-probability and the best `num_beams` survive
(the state is reordered to follow them: `prior.reorder_state`). A hypothesis that emits a stop
token is finished and ranked by score / length ** length_penalty (Wu et al. 2016 use a smoothed
form; this is the plain one of Hugging Face's generate). Deterministic: no sampling.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from priors.base import Prior
from priors.decoding import DecodeConfig, Generation, process, start
from priors.processors import NEG_INF


def beam_search(prior: Prior, batch_size: int, config: DecodeConfig, processors, cond, prompt,
                on_step: Callable[[], None] | None = None) -> Generation:
    nb, n, alpha = config.num_beams, config.max_new_tokens, config.length_penalty
    rows = batch_size * nb
    # every beam of a sequence starts from the same state: repeat each row nb times
    cond = cond.repeat_interleave(nb, dim=0) if cond is not None else None
    prompt = prompt.repeat_interleave(nb, dim=0) if prompt is not None else None
    params, state, context = start(prior, rows, cond, prompt)
    device = params.device
    stops = torch.tensor(config.stop_tokens, dtype=torch.long, device=device)
    scores = torch.zeros(batch_size, nb, device=device)
    scores[:, 1:] = NEG_INF  # identical beams at first: keep only one alive
    seqs = torch.empty(rows, 0, dtype=torch.long, device=device)
    finished: list[list[tuple[float, torch.Tensor]]] = [[] for _ in range(batch_size)]

    for t in range(n):
        logits = prior.distribution.logits(params)
        logp = torch.log_softmax(process(logits, torch.cat([context, seqs], 1), processors), -1)
        V = logp.size(-1)
        cand = (scores.view(rows, 1) + logp).view(batch_size, nb * V)  # (B, nb*V)
        # take 2*nb so that nb live beams remain even if some candidates end on a stop token
        top, idx = cand.topk(min(2 * nb, nb * V), dim=-1)
        beam, token = idx // V, idx % V
        new_scores = torch.full((batch_size, nb), NEG_INF, device=device)
        src = torch.zeros(batch_size, nb, dtype=torch.long, device=device)
        new_tok = torch.zeros(batch_size, nb, dtype=torch.long, device=device)
        for b in range(batch_size):
            live = 0
            for j in range(top.size(1)):
                if top[b, j] == NEG_INF or live == nb:
                    break
                hyp = torch.cat([seqs[b * nb + beam[b, j]], token[b, j : j + 1]])
                if len(stops) and bool(torch.isin(token[b, j], stops)):
                    finished[b].append((top[b, j].item() / len(hyp) ** alpha, hyp))
                    continue
                new_scores[b, live], src[b, live], new_tok[b, live] = top[b, j], beam[b, j], token[b, j]
                live += 1
        scores = new_scores
        order = (src + torch.arange(batch_size, device=device)[:, None] * nb).view(-1)  # (rows,)
        seqs = torch.cat([seqs[order], new_tok.view(rows, 1)], dim=1)
        context = context[order]
        if on_step is not None:  # progress: one more position decided
            on_step()
        if bool((scores == NEG_INF).all()) or t + 1 == n or _settled(finished, scores, nb, t + 1, n, alpha):
            break
        state = prior.reorder_state(state, order)
        step_params, state = prior.step(state, new_tok.view(rows, 1))
        params = step_params[:, -1]

    for b in range(batch_size):  # live beams compete with finished ones at the end
        for j in range(nb):
            if scores[b, j] > NEG_INF:
                finished[b].append((scores[b, j].item() / seqs.size(1) ** alpha, seqs[b * nb + j]))
    best = [max(f, key=lambda x: x[0])[1] for f in finished]
    # padded to max_new_tokens with each row's last token, as every strategy returns
    tokens = torch.stack([torch.cat([h, h[-1:].expand(n - len(h))]) for h in best])
    lengths = torch.tensor([len(h) for h in best], device=device)
    return Generation(tokens, lengths)


def _settled(finished, scores, nb, length, max_length, alpha) -> bool:
    """Every sequence has nb finished hypotheses that no live beam can still beat. A live
    beam's log-probability s <= 0 only falls; its normalised score s' / L**alpha at a final
    length L in [length, max_length] is therefore at most s / max_length**alpha when alpha > 0
    (a longer length divides a negative score by more) and s / length**alpha when alpha <= 0."""
    for b, done in enumerate(finished):
        if len(done) < nb:
            return False
        worst = sorted(s for s, _ in done)[-nb]
        best_live = scores[b].max().item()
        bound = best_live / (max_length ** alpha if alpha > 0 else length ** alpha)
        if bound > worst:
            return False
    return True
