"""`generate`: the one entry point of decoding. It checks the options against the prior's head,
resolves named processors through the plugin registry, and dispatches to a strategy:

    generate(prior, 4, DecodeConfig(max_new_tokens=100, temperature=0.8, top_p=0.9))

ancestral sampling or greedy (priors/sampling.py), beam search with `num_beams > 1`
(priors/beam.py), speculative decoding with a `draft` (priors/speculative.py): a draft prior,
"ngram" (prompt lookup) or "layers:M" (the target's first M layers), priors/drafts.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from plugins.registry import Registry
from priors.base import Prior
from priors.beam import beam_search
from priors.decoding import DecodeConfig, Generation, check_config
from priors.drafts import Drafter
from priors.processors import LogitsProcessor, resolve_processors
from priors.sampling import sample
from priors.speculative import speculative


@torch.no_grad()
def generate(
    prior: Prior,
    batch_size: int,
    config: DecodeConfig | None = None,
    *,
    cond: torch.Tensor | None = None,
    prompt: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    draft: Prior | Drafter | str | None = None,
    processors: Sequence[LogitsProcessor] = (),
    registry: Registry | None = None,
    on_step: Callable[[], None] | None = None,
) -> Generation:
    """Generate `config.max_new_tokens` values for `batch_size` sequences.

    `prompt` (B, P) is fed in one parallel pass (in chunks past the context) and is not part of
    the output. Processors apply in order: the built-in fields of `config`, the ones it names
    (`config.processors`, looked up in `registry`: a pipeline passes the logits-processor
    registry its recipe was resolved in), then the callables in `processors`.
    With `config.num_beams > 1` this is beam search; with a `draft`, speculative decoding
    (same distribution, fewer target passes). `on_step()` is called after each position is
    decided (sampling and beam search): a caller's progress bar.
    """
    config = config or DecodeConfig()
    check_config(prior, config, draft is not None, bool(processors))
    all_processors = [*config.builtin_processors(), *resolve_processors(config.processors, registry),
                      *processors]
    if prompt is not None and prompt.size(0) != batch_size:
        raise ValueError(f"prompt has {prompt.size(0)} rows, batch_size is {batch_size}")
    if config.compile:
        prior.compile_step()
        if isinstance(draft, Prior) and type(draft).compile_step is not Prior.compile_step:
            draft.compile_step()  # a draft prior steps one token at a time: compile it too
    was_training = prior.training
    prior.eval()
    try:
        if config.num_beams > 1:
            return beam_search(prior, batch_size, config, all_processors, cond, prompt, on_step)
        if draft is not None:
            return speculative(prior, draft, batch_size, config, all_processors, cond, prompt,
                               generator)
        return sample(prior, batch_size, config, all_processors, cond, prompt, generator, on_step)
    finally:
        prior.train(was_training)
