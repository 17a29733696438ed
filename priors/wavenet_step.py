"""The Fast WaveNet one-sample step as one native loop (numba), for CPU decoding.

At one sample per call a WaveNet layer is a handful of products of a few rows with matrices of
64-128 columns: some 30 thousand multiply-adds, which take a core about a microsecond. Issued as
PyTorch ops, each of the dozen ops per layer costs a few microseconds of dispatch and allocation
on its own, and torch.compile still calls a matrix-product kernel per product; in either form the
fixed cost, not arithmetic, decides. Here the whole step (every layer's queue write and tap reads,
the dilated convolution, the gated unit, the residual and skip products and the output head) is
one compiled loop over the queues in place, so a sample costs little more than its arithmetic
and the reads of its weights (benchmarks/wavenet_generation.py; BENCHMARKS.md, issue 18).

`NativeStep` holds the weights laid out for the loop (copied once per decoding state) and numpy
views of the state's queues: the kernel writes the very memory the PyTorch paths (chunked
steps, rewind) read, so the two mix freely. The numerics match the eager step to float32
rounding (the gate is tanh(f) * sigmoid(g) written with exp; sums in another order). Rows
are independent, so a batch is cut into one run of rows per thread (PyTorch's thread count), and
a row's arithmetic does not depend on the batch around it.
numba compiles the loop on first use (about 10 s on a 2-core machine, and as much again for
the threaded variant; once per number of layers: numba caches it on disk, beside this file or
in the user's cache directory, and later processes load it in about a second).
"""

from __future__ import annotations

import copy
import math
import threading

import numba
import numpy as np
import torch
from numba import njit, prange

# Reassociating sums lets LLVM vectorise the inner products, as a BLAS kernel does; the flags
# leave out "no NaN / no inf", so a NaN input or weight gives NaN params as the eager step does,
# and numpy's error model makes x / 0 an inf, never a Python exception.
_OPTIONS = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy",
                fastmath={"reassoc", "contract", "arcp", "nsz"})
_jit = njit(**_OPTIONS)
# numba's fallback threading layer (workqueue, where neither OpenMP nor TBB is found) aborts the
# process when two threads run parallel code at once: parallel steps take turns
_parallel = threading.Lock()


@_jit
def _accumulate(a, w, out):
    """out (B, N) += a (B, K) @ w (K, N), four rows of w at a time: a pass over a row of out (in
    L1) does four multiply-adds per load and store, and the four rows of w serve every row of the
    batch while they are in cache, so a batch reads the weights once per step, not once per row."""
    B, K = a.shape
    N = w.shape[1]
    K4 = K - K % 4
    for k in range(0, K4, 4):
        for b in range(B):
            a0, a1, a2, a3 = a[b, k], a[b, k + 1], a[b, k + 2], a[b, k + 3]
            for n in range(N):
                out[b, n] += a0 * w[k, n] + a1 * w[k + 1, n] + a2 * w[k + 2, n] + a3 * w[k + 3, n]
    for k in range(K4, K):  # the rest of K
        for b in range(B):
            ak = a[b, k]
            for n in range(N):
                out[b, n] += ak * w[k, n]


@_jit
def _rows(rings, dilations, pos, x, conv, gate_bias, res_w, res_b, skip_w, skip_b,
          head1_w, head1_b, head2_w, head2_b, out, lo, hi):
    """Rows lo..hi-1 of the batch: input x (B, R) at position `pos` -> head params out (B, P);
    every layer's queue (rings[l], (B, R, L_l)) gets its input at slot pos % L_l, as
    priors/wavenet.one_sample does. Rows are independent, so threads can take a share each."""
    R = x.shape[1]
    n_layer, KR, R2 = conv.shape
    K = KR // R
    B = hi - lo
    h = x[lo:hi].copy()  # the residual stream
    taps = np.empty((B, KR), np.float32)  # the K inputs of the dilated convolution, oldest first
    pre = np.empty((B, R2), np.float32)  # filter and gate pre-activations
    gated = np.empty((B, R), np.float32)
    z = np.empty((B, n_layer * R), np.float32)  # every layer's gated output: the skips at once
    for layer in range(n_layer):
        ring = rings[layer]
        L = ring.shape[2]
        d = dilations[layer]
        for b in range(B):
            for r in range(R):
                ring[lo + b, r, pos % L] = h[b, r]
            for j in range(K):
                slot = (pos - d * (K - 1 - j)) % L  # Python's modulo: never negative
                for r in range(R):
                    taps[b, j * R + r] = ring[lo + b, r, slot]
            for n in range(R2):
                pre[b, n] = gate_bias[layer, lo + b, n]
        _accumulate(taps, conv[layer], pre)
        for b in range(B):
            for r in range(R):
                # tanh(f) * sigmoid(g), the gated activation unit
                f, g = pre[b, r], pre[b, R + r]
                gated[b, r] = (1.0 - 2.0 / (math.exp(2.0 * f) + 1.0)) / (1.0 + math.exp(-g))
                z[b, layer * R + r] = gated[b, r]
        if layer < n_layer - 1:  # the last layer's residual output feeds nothing
            for b in range(B):
                for r in range(R):
                    h[b, r] += res_b[layer, r]
            _accumulate(gated, res_w[layer], h)
    skip = np.empty((B, skip_w.shape[1]), np.float32)
    skip[:] = skip_b
    _accumulate(z, skip_w, skip)
    hidden = np.empty((B, head1_w.shape[1]), np.float32)
    hidden[:] = head1_b
    _accumulate(np.maximum(skip, np.float32(0)), head1_w, hidden)  # ReLU, 1x1, ReLU, 1x1
    params = out[lo:hi]
    params[:] = head2_b
    _accumulate(np.maximum(hidden, np.float32(0)), head2_w, params)


@njit(parallel=True, **_OPTIONS)
def _step(rings, dilations, pos, x, conv, gate_bias, res_w, res_b, skip_w, skip_b,
          head1_w, head1_b, head2_w, head2_b, out, shares):
    """The step of every row, the batch cut into `shares` runs of rows, one per thread."""
    B = x.shape[0]
    for c in prange(shares):
        _rows(rings, dilations, pos, x, conv, gate_bias, res_w, res_b, skip_w, skip_b,
              head1_w, head1_b, head2_w, head2_b, out, c * B // shares, (c + 1) * B // shares)


class NativeStep:
    """A decoding state's step weights (priors/wavenet.StepWeights) laid out for `_rows`, and
    numpy views of its queues. Built on a state's first native step; reorder_state carries it
    over with the rows picked (`reordered`). Weights that are contiguous float32 already (the
    embedding table, biases) are views of the parameters, the stacked ones copies: decoding
    does not change them."""

    def __init__(self, rings: list[torch.Tensor], w, embedding: torch.Tensor | None = None) -> None:
        host = lambda t: np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)  # noqa: E731
        # the token embedding (V, R), where inputs are token ids: looked up here, not by a module
        self.embedding = None if embedding is None else host(embedding)
        n_residual = rings[0].size(1)
        self.rings = tuple(ring.numpy() for ring in rings)  # views: the kernel writes the queues
        self.dilations = np.array(w.dilations, dtype=np.int64)
        self.conv = host(torch.stack(w.conv))  # (layers, K * R, 2R)
        self.gate_bias = host(torch.stack(w.gate_bias))  # (layers, B, 2R)
        zeros = torch.zeros(n_residual, n_residual), torch.zeros(n_residual)
        res = [zeros if r is None else r for r in w.res]
        self.res_w = host(torch.stack([weight for weight, _ in res]))  # (layers, R, R)
        self.res_b = host(torch.stack([bias for _, bias in res]))
        self.skip = host(w.skip[0]), host(w.skip[1])
        (w1, b1), (w2, b2) = w.head
        self.head = host(w1), host(b1), host(w2), host(b2)
        self.weights = (self.conv, self.gate_bias, self.res_w, self.res_b, *self.skip, *self.head)

    @classmethod
    def of(cls, rings: list[torch.Tensor], w, embedding: torch.Tensor | None = None) -> NativeStep | None:
        """The native step of a state, or None where its queues are not plain float32 CPU
        memory that the loop can write in place."""
        if all(r.device.type == "cpu" and r.dtype == torch.float32 and r.is_contiguous()
               for r in rings):
            return cls(rings, w, embedding)
        return None

    def reordered(self, rings: list[torch.Tensor], index: torch.Tensor) -> NativeStep:
        """This step for the state of reorder_state: its new queues, each row's class bias
        picked by `index`; the weights are shared, not laid out again (beam search reorders
        at every step)."""
        step = copy.copy(self)
        step.rings = tuple(ring.numpy() for ring in rings)
        step.gate_bias = np.ascontiguousarray(self.gate_bias[:, index.numpy()])
        step.weights = (self.conv, step.gate_bias, *self.weights[2:])
        return step

    def __call__(self, pos: int, x: torch.Tensor) -> torch.Tensor:
        """One input x (B, R) at position pos -> head params (B, P)."""
        return torch.from_numpy(self._run(pos, x.detach().numpy()))

    def tokens(self, pos: int, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, 1) at position pos -> head params (B, 1, P), looked up in the state's
        table with numpy: no PyTorch op between the loop's calls (after the loop has streamed
        its weights through the caches, each would run cold)."""
        ids = ids.numpy().reshape(-1)
        if ids.size and ids.min() < 0:  # numpy would count a negative id from the end
            raise IndexError(f"token id {ids.min()} is out of range [0, {len(self.embedding)})")
        return torch.from_numpy(self._run(pos, self.embedding[ids])[:, None])

    def _run(self, pos: int, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x)
        B = x.shape[0]
        out = np.empty((B, self.head[2].shape[1]), dtype=np.float32)
        # as many threads as PyTorch may use (OMP_NUM_THREADS, torch.set_num_threads), one run
        # of rows each; one row, or one thread, runs on the calling thread
        shares = min(B, torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
        if shares <= 1:
            _rows(self.rings, self.dilations, pos, x, *self.weights, out, 0, B)
        else:
            with _parallel:
                if numba.get_num_threads() != shares:  # a per-thread setting
                    numba.set_num_threads(shares)
                _step(self.rings, self.dilations, pos, x, *self.weights, out, shares)
        return out
