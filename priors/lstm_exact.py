"""The LSTM (and plain RNN) priors' coding step in integer arithmetic (priors/integer.py): the
same pmfs on every machine, for portable compression.

The network is priors/lstm.py's, one token at a time: the start (+ class) vector or the token
embedding, then per layer the gate pre-activations as ONE integer matrix product over [x, h]
(W_ih and W_hh side by side, quantized per output row, b_ih + b_hh as one bias), then

    i, f, o = sigmoid(.), g = tanh(.)          (tables, 2**-16 units)
    c' = f c + i g,   h' = o tanh(c')          (exact fixed-point products, floored)

and the output layer (the projection to n_embd first when the embeddings are tied), then the
integer softmax pmf. The `rnn` prior is the same with h' = tanh(W [x, h] + b). Activations have
`frac` fractional bits and are clipped to |x| <= 2**range_bits, the cell state included (a
trained LSTM's cell stays far inside: it is a sum of at most a few hundred terms of size < 1).
A recurrence has no context limit: `max_block_length` is None.

Not here: rewind and reorder (the coding loop needs neither), continuous inputs, dropout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from priors.integer import ExactCoder, IntEmbedding, IntLinear, Table, coded_head, exp_table

if TYPE_CHECKING:
    from priors.lstm import LSTM

GATE_FRAC = 16  # fractional bits of the table outputs: sigmoid and tanh values


class LSTMExactCoder(ExactCoder):
    prior_name = "lstm"
    cell = "lstm"  # or "rnn": h' = tanh(W [x, h] + b)

    def __init__(self, settings, modules):
        super().__init__(settings, modules)
        s = self.settings
        self.n_layer, self.n_hidden = s["n_layer"], s["n_hidden"]
        self.frac, self.clip, self.tied = s["frac"], s["clip"], s["tie_embeddings"]

    @classmethod
    def from_prior(cls, prior: LSTM, *, frac: int = 12, weight_bits: int = 12,
                   range_bits: int = 10) -> LSTMExactCoder:
        """Quantize `prior`: activations with `frac` fractional bits, |x| <= 2**range_bits."""
        head = coded_head(prior)
        c = prior.config
        clip = 2 ** (frac + range_bits)
        q = dict(bits=weight_bits, frac=frac, clip=clip)
        core = getattr(prior, cls.cell)  # nn.LSTM or nn.RNN
        m = {"wte": IntEmbedding.quantize(prior.wte.weight, frac, clip),
             "start": IntEmbedding.quantize(prior.start.start[None], frac, clip)}
        if c.n_classes:
            m["class_emb"] = IntEmbedding.quantize(prior.start.class_emb.weight, frac, clip)
        for i in range(c.n_layer):
            w = torch.cat([getattr(core, f"weight_ih_l{i}"), getattr(core, f"weight_hh_l{i}")], 1)
            b = getattr(core, f"bias_ih_l{i}") + getattr(core, f"bias_hh_l{i}")
            m[f"l{i}.gates"] = IntLinear.quantize(w, b, **q)  # (4H or H, n_in + H)
        if c.tie_embeddings:
            m["proj"] = IntLinear.quantize(prior.proj.weight, prior.proj.bias, **q)
        m["head"] = IntLinear.quantize(prior.head.weight, prior.head.bias, **q)
        if cls.cell == "lstm":
            m["sigmoid"] = Table.build("sigmoid", -12.0, 12.0, frac=frac, out_frac=GATE_FRAC)
        m["tanh"] = Table.build("tanh", -7.0, 7.0, frac=frac, out_frac=GATE_FRAC)
        m["exp_pmf"] = exp_table(24, frac=frac)
        settings = {"vocab_size": prior.vocab_size, "num_classes": c.n_classes, "head": head,
                    "n_layer": c.n_layer, "n_hidden": c.n_hidden,
                    "tie_embeddings": c.tie_embeddings, "frac": frac,
                    "weight_bits": weight_bits, "clip": clip}
        return cls(settings, m)

    def init_state(self, batch_size: int, cond: torch.Tensor | None = None):
        m = self.modules
        x = m["start"](0).expand(batch_size, -1)  # (B, n_embd)
        cond = self.class_ids(batch_size, cond)
        if cond is not None:
            x = x + m["class_emb"](cond)
        zeros = torch.zeros(self.n_layer, batch_size, self.n_hidden, dtype=torch.float64,
                            device=self.device)
        return self._position(x, (zeros, zeros))

    def step(self, state: tuple[torch.Tensor, torch.Tensor], ids: torch.Tensor):
        return self._position(self.modules["wte"](ids.to(self.device).view(-1)), state)

    def _position(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        """Input x (B, n_embd) and the state (h, c), each (n_layer, B, H) -> pmf (B, V) of the
        next token and the new state."""
        m, F, G, clip = self.modules, self.frac, GATE_FRAC, self.clip
        hs, cs = [], []
        for i in range(self.n_layer):
            h, c = state[0][i], state[1][i]
            z = m[f"l{i}.gates"](torch.cat([x, h], -1))  # (B, 4H) or (B, H)
            if self.cell == "rnn":
                x = (m["tanh"](z) * 2.0 ** (F - G)).floor_()
                hs.append(x)
                continue
            i_, f_, g_, o_ = z.chunk(4, -1)  # PyTorch's gate order
            sig = m["sigmoid"]
            # c' = f c + i g in 2**-(F + G) units, exact (|.| < 2**(F + G + range + 1) < 2**53)
            c = ((sig(f_) * c).add_(sig(i_) * m["tanh"](g_) * 2.0 ** (F - G))
                 .mul_(2.0**-G).floor_().clamp_(-clip, clip))
            x = (sig(o_) * m["tanh"](c)).mul_(2.0 ** (F - 2 * G)).floor_()
            hs.append(x)
            cs.append(c)
        if self.tied:
            x = m["proj"](x)
        h = torch.stack(hs)
        return self.pmf(m["head"](x)), (h, torch.stack(cs) if cs else h)


class RNNExactCoder(LSTMExactCoder):
    prior_name = "rnn"
    cell = "rnn"
