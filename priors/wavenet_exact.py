"""The WaveNet's one-sample coding step in integer arithmetic (priors/integer.py): the same pmfs
on every machine, for portable compression of mu-law audio.

The network is priors/wavenet.py's (van den Oord et al. 2016, "WaveNet: A Generative Model for
Raw Audio"), stepped one sample at a time with the queues of Fast WaveNet (Paine et al. 2016):
each layer keeps a ring of its last d (K - 1) + 1 inputs, so a sample pushes its input and reads
the K taps d apart that the dilated convolution needs, O(layers) per sample. Every weight is
quantized per output row (Jacob et al. 2018) and every product is an exact integer matrix
product in float64; per layer l with dilation d:

    pre = W [x_{t - d (K-1)} .. x_t] + b + class bias    (the K taps side by side, one product)
    z   = tanh(f) sigmoid(g)                            (tables, 2**-16 units, floored product)
    x'  = x + res(z)                                     (clipped: the residual stream is bounded)

then ReLU, 1x1, ReLU, 1x1 of sum_l skip_l(z) (one product over every layer's z) and the integer
softmax pmf over the mu-law levels. Position 0's input is the learned start vector, so the first
sample has a pmf too. A stack of rings has no context limit: `max_block_length` is None.

Not here: continuous (real-valued) inputs and the mixture-of-Gaussians head (no pmf: refused by
`coded_head`), rewind and reorder (the coding loop needs neither), the numba loop of
priors/wavenet_step.py (its float sums are reassociated: fast, not exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from priors.integer import ExactCoder, IntEmbedding, IntLinear, Table, coded_head, exp_table, mul_fixed

if TYPE_CHECKING:
    from priors.wavenet import WaveNet

GATE_FRAC = 16  # fractional bits of the table outputs: tanh and sigmoid values


@dataclass
class WaveNetCodingState:
    """rings[l] (B, d (K - 1) + 1, R): layer l's inputs at positions p in slot p % size;
    gate_bias[l] (B, 2R): the class bias of layer l's gate, or None."""

    rings: list[torch.Tensor]
    gate_bias: list[torch.Tensor | None]
    pos: int = 0  # the next input position to write (0: the start vector)


class WaveNetExactCoder(ExactCoder):
    prior_name = "wavenet"

    def __init__(self, settings, modules):
        super().__init__(settings, modules)
        s = self.settings
        self.dilations, self.kernel_size = s["dilations"], s["kernel_size"]
        self.n_residual, self.frac, self.clip = s["n_residual"], s["frac"], s["clip"]

    @classmethod
    def from_prior(cls, prior: WaveNet, *, frac: int = 12, weight_bits: int = 12,
                   range_bits: int = 10) -> WaveNetExactCoder:
        """Quantize `prior`: activations with `frac` fractional bits, |x| <= 2**range_bits."""
        head = coded_head(prior)  # categorical (mu-law levels) or bernoulli; never continuous
        c = prior.config
        clip = 2 ** (frac + range_bits)
        q = dict(bits=weight_bits, frac=frac, clip=clip)
        m = {"embed": IntEmbedding.quantize(prior.embed.weight, frac, clip),
             "start": IntEmbedding.quantize(prior.start.start[None], frac, clip)}
        for i, layer in enumerate(prior.layers):
            # (2R, R, K) -> rows over (tap, channel), taps oldest first: the order of the taps read
            m[f"l{i}.conv"] = IntLinear.quantize(layer.conv.weight.permute(0, 2, 1).flatten(1),
                                                 layer.conv.bias, **q)
            if layer.cond is not None:
                m[f"l{i}.cond"] = IntEmbedding.quantize(layer.cond.weight, frac, clip)
            if layer.res is not None:
                m[f"l{i}.res"] = IntLinear.quantize(layer.res.weight[:, :, 0], layer.res.bias, **q)
        m["skip"] = IntLinear.quantize(  # every layer's skip at once: (S, L R)
            torch.cat([layer.skip.weight[:, :, 0] for layer in prior.layers], 1),
            sum(layer.skip.bias for layer in prior.layers), **q)
        convs = [mod for mod in prior.head if isinstance(mod, torch.nn.Conv1d)]
        for j, conv in enumerate(convs):
            m[f"head{j}"] = IntLinear.quantize(conv.weight[:, :, 0], conv.bias, **q)
        m["tanh"] = Table.build("tanh", -7.0, 7.0, frac=frac, out_frac=GATE_FRAC)
        m["sigmoid"] = Table.build("sigmoid", -12.0, 12.0, frac=frac, out_frac=GATE_FRAC)
        m["exp_pmf"] = exp_table(24, frac=frac)
        settings = {"vocab_size": prior.vocab_size, "num_classes": c.n_classes, "head": head,
                    "dilations": [layer.dilation for layer in prior.layers],
                    "kernel_size": c.kernel_size, "n_residual": c.n_residual,
                    "n_head_layers": len(convs), "frac": frac, "weight_bits": weight_bits,
                    "clip": clip}
        return cls(settings, m)

    # -- coding ------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, cond: torch.Tensor | None = None):
        cond = self.class_ids(batch_size, cond)
        rings = [torch.zeros(batch_size, d * (self.kernel_size - 1) + 1, self.n_residual,
                             dtype=torch.float64, device=self.device) for d in self.dilations]
        gate_bias = [self.modules[f"l{i}.cond"](cond) if cond is not None else None
                     for i in range(len(self.dilations))]
        state = WaveNetCodingState(rings, gate_bias)
        return self._push(state, self.modules["start"](0).expand(batch_size, -1)), state

    def step(self, state: WaveNetCodingState, ids: torch.Tensor):
        return self._push(state, self.modules["embed"](ids.to(self.device).view(-1))), state

    def _push(self, state: WaveNetCodingState, x: torch.Tensor) -> torch.Tensor:
        """Input x (B, R) at position state.pos -> the pmf (B, V) of the next sample."""
        m, K, pos = self.modules, self.kernel_size, state.pos
        state.pos += 1
        gated = []
        for i, (ring, d) in enumerate(zip(state.rings, self.dilations, strict=True)):
            size = ring.size(1)
            ring[:, pos % size] = x
            taps = [ring[:, (pos - d * j) % size] for j in range(K - 1, 0, -1)]
            pre = m[f"l{i}.conv"](torch.cat([*taps, x], -1))  # (B, 2R)
            if state.gate_bias[i] is not None:
                pre = pre + state.gate_bias[i]  # bounded: the gate tables clip what they read
            f, g = pre.chunk(2, -1)
            # tanh(f) sigmoid(g): a product of two table values, below 2**(2 GATE_FRAC + 1)
            z = mul_fixed(m["tanh"](f), m["sigmoid"](g), 2 * GATE_FRAC - self.frac)  # (B, R)
            gated.append(z)
            if f"l{i}.res" in m:
                x = (x + m[f"l{i}.res"](z)).clamp_(-self.clip, self.clip)
        h = m["skip"](torch.cat(gated, -1))
        for j in range(self.settings["n_head_layers"]):  # ReLU, 1x1, ReLU, 1x1
            h = m[f"head{j}"](h.clamp_(min=0))
        return self.pmf(h)
