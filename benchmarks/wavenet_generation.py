"""Fast WaveNet (Paine et al. 2016) vs naive generation of one second of 8 kHz audio with the
WaveNet of recipes/fsdd/mulaw_wavenet.yaml (random weights: speed does not depend on them).

    python benchmarks/wavenet_generation.py [--samples 8000] [--naive-samples 400] [--threads 1]
        [--rounds 2]
    python benchmarks/wavenet_generation.py --target RUN --draft RUN[@K] ... [--clips 4] [--skip-tables]

Naive: for every new sample, the whole stack recomputed over the receptive field (2,047 inputs,
`WaveNet.naive_next_logits`). Fast: `init_state`/`step`, per-layer queues, O(layers) per sample.
Both sample token by token from the softmax with the same loop. Naive is timed on a prefix of
`--naive-samples` samples (its cost per sample is constant once the prefix passes the receptive
field, which the timed prefix starts after) and reported per sample; the JSON says so.
Real-time factor: seconds of audio made per second of compute (>= 1: faster than real time).
That the two give the same conditionals is a test (tests/priors/test_wavenet.py). Target:
fast >= 20x naive.

Fast generation runs eager and compiled (`compile_step`, what `DecodeConfig(compile=True)` turns
on: "inductor" is torch.compile, "native" the numba loop of priors/wavenet_step.py, which
`compile=True` picks on a CPU) at batch 1 and 16, in alternating rounds, medians reported; each
compiled step's first steps (compilation, once per batch size) are timed apart in wall time.
On one thread every other figure is process CPU time.

Speculative audio decoding (trained FSDD runs: `--target` a recipes/fsdd/mulaw_wavenet.yaml run,
each `--draft` a smaller one with the same tokenizer, recipes/fsdd/wavenet_draft.yaml): one
clip of `--samples` samples per digit class in turn at temperature 1, the target alone and with
each draft, eager and compiled (`compile=True`: the native loop for the target's single steps and
for the draft's; the target's verification pass of k + 1 samples is the chunked PyTorch step
either way), alternating; acceptance rate and speed-up over the target alone with the same step
(medians over the clips), and each kind's real-time factor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, cpu, draft_runs, emit  # noqa: E402

from priors.wavenet import WaveNet, WaveNetConfig  # noqa: E402
from tokenizers_ar import Layout  # noqa: E402

RATE = 8000
BACKENDS = ("inductor", "native")  # WaveNet.compile_step: torch.compile, the numba loop


def draw(logits: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=g)  # (B, 1)


@torch.no_grad()
def fast(model: WaveNet, n: int, cond: torch.Tensor, batch: int = 1) -> float:
    g = torch.Generator().manual_seed(0)
    start = clock()
    logits, state = model.init_state(batch, cond.expand(batch))
    for _ in range(n):
        out, state = model.step(state, draw(logits, g))
        logits = out[:, -1]
    return clock() - start


@torch.no_grad()
def naive(model: WaveNet, n: int, cond: torch.Tensor) -> float:
    """Seconds for `n` samples, timed after a prefix of one receptive field."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.vocab_size, (1, model.receptive_field), generator=g)
    start = clock()
    for _ in range(n):
        ids = torch.cat([ids, draw(model.naive_next_logits(ids, cond), g)], dim=1)
    return clock() - start


def clock() -> float:
    """Process CPU time on one thread (the machine is shared: wall time would also measure the
    neighbours), wall time otherwise."""
    return time.process_time() if torch.get_num_threads() == 1 else time.perf_counter()


def speculative(target_run: str, drafts: list[str], clips: int, samples: int, draft_tokens: int) -> dict:
    """The target alone and with each draft, eager and compiled, one clip per class in turn."""
    from pipelines import Pipeline

    # compile_step stays on a prior from there on: the compiled kinds get pipelines of their own
    targets = {compiled: Pipeline.load(target_run) for compiled in (False, True)}
    kinds: dict[str, dict] = {}
    for compiled in (False, True):
        tail = " compiled" if compiled else ""
        kinds["alone" + tail] = {"compile": compiled}
        for name, (run, k) in draft_runs(drafts, draft_tokens).items():
            kinds[name + tail] = {"compile": compiled, "draft": Pipeline.load(run), "num_draft_tokens": k}
    for kw in kinds.values():  # warm-up: the compiled steps compile (or load from the disk cache)
        targets[kw["compile"]].generate(1, cond=0, seed=0, temperature=1.0, max_new_tokens=50, **kw)
    seconds = {k: [] for k in kinds}
    rates = {k: [] for k in kinds if "draft" in kinds[k]}
    with Stopwatch() as watch:
        for i in range(clips):
            for k in (list(kinds) if i % 2 == 0 else list(reversed(kinds))):
                start = clock()
                out = targets[kinds[k]["compile"]].generate(1, cond=i % 10, seed=i, temperature=1.0,
                                                            max_new_tokens=samples, **kinds[k])
                seconds[k].append(clock() - start)
                if k in rates:
                    rates[k].append(out.acceptance_rate)
            print(f"clip {i}: " + ", ".join(f"{k} {seconds[k][-1]:.2f}s" for k in kinds), file=sys.stderr)

    def row(k: str) -> dict:
        alone = seconds["alone compiled" if kinds[k]["compile"] else "alone"]
        out = {"seconds_median": statistics.median(seconds[k]),
               "real_time_factor": samples / RATE / statistics.median(seconds[k])}
        if k in rates:
            out.update({"draft_tokens": kinds[k]["num_draft_tokens"],
                        "acceptance_rate_mean": statistics.mean(rates[k]),
                        "speedup_median": statistics.median(
                            a / s for a, s in zip(alone, seconds[k], strict=True))})
        return out

    return {"target": target_run, "drafts": drafts, "clips": clips, "samples_per_clip": samples,
            "temperature": 1.0, "cpu_share": watch.cpu_share, **{k: row(k) for k in kinds}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=RATE, help="fast: samples generated (1 s)")
    p.add_argument("--naive-samples", type=int, default=400, help="naive: samples timed")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--rounds", type=int, default=2, help="alternating eager/compiled rounds")
    p.add_argument("--target", help="a trained FSDD wavenet run (speculative part)")
    p.add_argument("--draft", action="append", default=[],
                   help="a draft run with the same tokenizer, RUN or RUN@K (repeatable)")
    p.add_argument("--clips", type=int, default=4, help="speculative part: clips per kind")
    p.add_argument("--draft-tokens", type=int, default=4)
    p.add_argument("--skip-tables", action="store_true", help="only the speculative part")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.skip_tables:
        if not (args.target and args.draft):
            p.error("--skip-tables needs --target and --draft")
        emit({"benchmark": "wavenet_generation", "cpu": cpu(), "threads": torch.get_num_threads(),
              "clock": "process CPU time" if torch.get_num_threads() == 1 else "wall",
              "speculative": speculative(args.target, args.draft, args.clips, args.samples,
                                         args.draft_tokens)})
        return
    torch.manual_seed(0)
    config = WaveNetConfig(n_layer=10, n_block=2, n_residual=64, n_skip=128, n_classes=10)
    models = {"eager": WaveNet(config, 256, Layout.seq()).eval()}
    for backend in BACKENDS:
        models[backend] = WaveNet(config, 256, Layout.seq()).eval()
        models[backend].load_state_dict(models["eager"].state_dict())
        models[backend].compile_step(backend)
    eager = models["eager"]
    cond = torch.tensor([3])
    fast(eager, 50, cond), naive(eager, 5, cond)  # warm-up
    compile_wall = {backend: {} for backend in BACKENDS}
    for backend in BACKENDS:
        for batch in (1, 16):  # the first steps compile (once per batch size): wall time
            start = time.perf_counter()
            fast(models[backend], 2, cond, batch)
            compile_wall[backend][batch] = time.perf_counter() - start
    times = {(kind, b): [] for kind in models for b in (1, 16)}
    with Stopwatch() as watch:
        for _ in range(args.rounds):
            for (kind, batch), seconds in times.items():
                seconds.append(fast(models[kind], args.samples, cond, batch))
        t_naive = naive(eager, args.naive_samples, cond)
    naive_rate = args.naive_samples / t_naive

    def row(kind: str, batch: int) -> dict:
        t = statistics.median(times[kind, batch])
        return {"seconds": t, "samples_per_s_per_stream": args.samples / t,
                "aggregate_samples_per_s": batch * args.samples / t,
                "real_time_factor_per_stream": args.samples / t / RATE,
                "aggregate_real_time_factor": batch * args.samples / t / RATE}

    table = {f"{kind}_batch_{b}": row(kind, b) for kind, b in times}
    emit({"benchmark": "wavenet_generation", "cpu": cpu(), "cpu_share": watch.cpu_share,
          "threads": torch.get_num_threads(),
          "clock": "process CPU time" if torch.get_num_threads() == 1 else "wall",
          "model": "wavenet 2 blocks x 10 layers (dilations 1..512), 64 residual, 128 skip channels, "
                   "kernel 2, digit-conditioned",
          "receptive_field": eager.receptive_field, "fast": table, "rounds": args.rounds,
          "compile_wall_seconds_first_steps": compile_wall,
          "speedup_over_eager": {f"{kind}_batch_{b}": table[f"eager_batch_{b}"]["seconds"] /
                                 table[f"{kind}_batch_{b}"]["seconds"] for kind in BACKENDS for b in (1, 16)},
          "naive_samples_timed": args.naive_samples, "naive_seconds": t_naive,
          "naive_samples_per_s": naive_rate,
          "naive_note": f"naive timed on {args.naive_samples} samples after a one-receptive-field "
                        "prefix (constant cost per sample), not on all of them",
          "speedup_eager_fast_over_naive": table["eager_batch_1"]["samples_per_s_per_stream"] / naive_rate,
          "targets": {"fast/naive": ">= 20x", "real-time factor at batch 1": ">= 0.5",
                      "aggregate real-time factor at batch 16": ">= 1"},
          **({"speculative": speculative(args.target, args.draft, args.clips, args.samples,
                                         args.draft_tokens)} if args.target and args.draft else {})})


if __name__ == "__main__":
    main()
