"""Fault campaign (issue 17), the slow half of tests/pipelines/test_faults.py: real processes, real
signals, a really full disk. Prints JSON counts: cases, clear errors, tracebacks, data lost, hangs.

  1. SIGKILL loop: `tokar train` killed at random moments (mid-checkpoint included) and resumed
     until it completes; the final weights must equal an uninterrupted run's, bit for bit.
  2. Concurrent writers: two `tokar train --run-dir D` at once, two `--resume D` at once, and
     a sweep of runs with default names started together. One writer wins, the other gets one
     line naming the holder's PID; default names never collide; weights still exact.
  3. Disk full (root only: a small tmpfs is mounted; skipped with a message otherwise): training
     until the disk is full must stop with one error naming the space needed, leave no temporary
     folder, keep the earlier checkpoint; after more space, the resume ends bit-identical.
     Writing samples and plots to the full disk: one error each, no temporary file left.
  4. Every bad input of tests/pipelines/test_bad_inputs.py, each in its own `tokar` process with
     a timeout: exit 2, no traceback, the file or value named.

    python benchmarks/faults.py [--kills 12] [--races 2] [--jobs 2] [--skip-table]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import emit  # noqa: E402

RECIPE = ROOT / "recipes" / "debug" / "char_gpt.yaml"
# dropout on (exactness must restore the RNG), a checkpoint every 5 steps, all of them kept
OVERRIDES = ["train.max_steps=60", "train.checkpoint_every=5", "train.eval_every=10",
             "train.keep_checkpoints=20", "train.eval_samples=1", "prior.dropout=0.1"]
TIMEOUT = 300  # a command that takes longer than this is a hang


class Campaign:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.cases: list[dict[str, Any]] = []
        self.skipped: list[str] = []
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKAR_CACHE_DIR": str(tmp / "cache"),
                    "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.env.setdefault("TOKAR_DATA_DIR", str(ROOT.parent / "shared" / "data"))

    def tokar(self, *args: str, cwd: Path | None = None,
              timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipelines.cli.main", "-q", *args], env=self.env,
                              cwd=cwd or self.tmp, capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str, cwd: Path | None = None) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "-q", *args], env=self.env,
                                cwd=cwd or self.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def record(self, group: str, case: str, outcome: str, detail: str = "") -> None:
        self.cases.append({"group": group, "case": case, "outcome": outcome, "detail": detail[-600:]})
        print(f"[{group}] {case}: {outcome} {detail[-200:] if outcome not in ('ok', 'clear_error') else ''}",
              file=sys.stderr)

    def expect_error(self, group: str, case: str, args: list[str], expect: list[str],
                     cwd: Path | None = None) -> str:
        """Run `tokar *args` expecting a failure; a command that outlives TIMEOUT is a hang."""
        try:
            proc = self.tokar(*args, cwd=cwd)
        except subprocess.TimeoutExpired:
            self.record(group, case, "hang", f"no answer after {TIMEOUT}s: tokar {' '.join(args)}")
            return "hang"
        return self.judge(group, case, proc, expect)

    def judge(self, group: str, case: str, proc: subprocess.CompletedProcess, expect: list[str]) -> str:
        """An expected failure: exit 2, one `error:` message naming what `expect` lists."""
        err = proc.stderr
        if "Traceback" in err:
            outcome = "traceback"
        elif proc.returncode == 2 and err.startswith("error: ") and \
                all(any(alt in err for alt in e.split("|")) for e in expect):  # "a|b": either
            outcome = "clear_error"
        else:
            outcome = "unclear_error"
        self.record(group, case, outcome, f"exit {proc.returncode}: {err.strip()}")
        return outcome

    def reference(self) -> Path:
        run = self.tmp / "reference"
        if not run.exists():
            proc = self.tokar("train", str(RECIPE), *OVERRIDES, "--run-dir", str(run), "--no-progress")
            assert proc.returncode == 0, proc.stderr[-2000:]
        return run

    # -- 1 -------------------------------------------------------------------------------------------
    def sigkill_loop(self, kills: int, rng: random.Random) -> None:
        reference = self.reference()
        run = self.tmp / "killed"
        done, killed, attempts = False, 0, 0
        while not done and attempts < kills * 3 + 5:
            attempts += 1
            fresh = not (run / "recipe.yaml").exists()
            args = ["train", str(RECIPE), *OVERRIDES, "--run-dir", str(run)] if fresh else \
                ["train", "--resume", str(run)]
            proc = self.popen(*args, "--no-progress")
            if killed < kills:
                when = kill_at(proc, run / "checkpoints", rng, mid_save=killed % 3 != 0)
                if when is not None:
                    killed += 1
                    what = "train" if fresh else "resume"
                    self.record("sigkill", f"kill {killed} {when} ({what})", "ok")
                    continue
            try:
                out, err = proc.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                self.record("sigkill", "resume to the end", "hang")
                return
            if proc.returncode != 0:
                self.record("sigkill", f"{args[1]} after {killed} kills", "traceback" if "Traceback" in err
                            else "data_lost", err)
                return
            done = True
        exact = done and same_weights(run, reference)
        self.record("sigkill", f"final weights after {killed} SIGKILLs",
                    "ok" if exact else "data_lost", "" if exact else "weights differ from the reference")

    # -- 2 -------------------------------------------------------------------------------------------
    def concurrent_writers(self, races: int) -> None:
        reference = self.reference()
        for i in range(races):
            run = self.tmp / f"race-{i}"
            procs = [self.popen("train", str(RECIPE), *OVERRIDES, "--run-dir", str(run), "--no-progress")
                     for _ in range(2)]
            self._judge_race(f"two trains into one new dir ({i})", procs, run, reference)
            # interrupted copy of the reference, resumed twice at once
            partial = self.tmp / f"race-resume-{i}"
            shutil.copytree(reference, partial)
            shutil.rmtree(partial / "prior")
            for c in sorted((partial / "checkpoints").iterdir())[-4:]:
                shutil.rmtree(c)  # back to step 40, as if killed there
            status = (partial / "run.json").read_text().replace('"complete"', '"running"')
            (partial / "run.json").write_text(status)
            procs = [self.popen("train", "--resume", str(partial), "--no-progress") for _ in range(2)]
            self._judge_race(f"two resumes of one run ({i})", procs, partial, reference)
        sweep = self.tmp / "sweep"
        sweep.mkdir()
        procs = [self.popen("train", str(RECIPE), "train.max_steps=2", "train.eval_every=2", "--no-progress",
                            cwd=sweep) for _ in range(4)]
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
        dirs = {o[0].strip() for o in outs}
        ok = all(p.returncode == 0 for p in procs) and len(dirs) == 4
        self.record("concurrent", "4 runs with default names started together",
                    "ok" if ok else "data_lost", f"run dirs: {sorted(dirs)}")

    def _judge_race(self, case: str, procs: list[subprocess.Popen], run: Path, reference: Path) -> None:
        try:
            outs = [p.communicate(timeout=TIMEOUT) for p in procs]
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            self.record("concurrent", case, "hang")
            return
        codes = sorted(p.returncode for p in procs)
        errs = [o[1] for o in outs]
        loser = next((e for p, e in zip(procs, errs, strict=True) if p.returncode == 2), "")
        winner_pid = next((p.pid for p in procs if p.returncode == 0), None)
        if any("Traceback" in e for e in errs):
            self.record("concurrent", case, "traceback", "\n".join(errs))
        elif codes != [0, 2] or f"PID {winner_pid}" not in loser or "is in use" not in loser:
            # the loser may also come after the winner finished: then it must refuse the finished run
            late = codes == [0, 2] and ("already holds a run" in loser or "is complete" in loser)
            self.record("concurrent", case, "clear_error" if late else "data_lost",
                        f"exit codes {codes}: {loser.strip()}")
        else:
            self.record("concurrent", case, "clear_error", loser.strip())
        exact = (run / "prior").is_dir() and same_weights(run, reference)
        self.record("concurrent", f"{case}: winner's weights exact", "ok" if exact else "data_lost")

    # -- 3 -------------------------------------------------------------------------------------------
    def disk_full(self) -> None:
        if os.geteuid() != 0:
            self.skipped.append("disk full: needs root to mount a small tmpfs (run as root to include it)")
            return
        mount = self.tmp / "small-disk"
        mount.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1400k", "tmpfs", str(mount)],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            self.skipped.append(f"disk full: cannot mount a tmpfs ({mounted.stderr.strip()})")
            return
        try:
            self._disk_full_cases(mount)
        finally:
            subprocess.run(["umount", str(mount)], capture_output=True)

    def _disk_full_cases(self, mount: Path) -> None:
        reference = self.reference()
        run = mount / "run"
        self.expect_error("disk_full", "training until the disk is full",
                          ["train", str(RECIPE), *OVERRIDES, "--run-dir", str(run), "--no-progress"],
                          ["No space left on device|disk is full", "needed"])
        leftovers = [str(p) for p in run.rglob(".tmp-*")] + [str(p) for p in run.rglob("*.tmp-*")]
        self.record("disk_full", "no temporary files left", "ok" if not leftovers else "data_lost",
                    ", ".join(leftovers))
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        try:
            proc = self.tokar("train", "--resume", str(run), "--no-progress")
        except subprocess.TimeoutExpired:
            self.record("disk_full", "resumed after freeing space", "hang")
        else:
            exact = proc.returncode == 0 and same_weights(run, reference)
            self.record("disk_full", "resumed after freeing space: weights exact",
                        "ok" if exact else "data_lost", proc.stderr)
        # fill the disk to the last byte, then write samples and a plot onto it
        subprocess.run(["mount", "-o", "remount,size=1400k", str(mount)], capture_output=True)
        filler = mount / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        for case, args, expect in (
            ("samples onto a full disk", ["sample", str(run), "-n", "2", "--max-new-tokens", "300",
                                          "--out", str(mount / "s.txt")], ["s.txt", "disk is full"]),
            ("a plot onto a full disk", ["plot", str(run), "--out", str(mount / "c.png")],
             ["c.png", "disk is full"]),
        ):
            self.expect_error("disk_full", case, args, expect)
        leftovers = [p.name for p in mount.iterdir() if ".tmp-" in p.name]
        self.record("disk_full", "no temporary files left after sample/plot", "ok" if not leftovers else
                    "data_lost", ", ".join(leftovers))
        filler.unlink()

    # -- 4 -------------------------------------------------------------------------------------------
    def bad_input_table(self, jobs: int) -> None:
        from tests.pipelines.test_bad_inputs import CASES, Ctx

        runs = {}
        for name, recipe, extra in (("char", "char_gpt.yaml", []),
                                    ("pixel", "pixel_gpt.yaml", ["train.max_steps=4"]),
                                    ("audio", "mulaw_gpt.yaml", ["train.max_steps=2", "train.eval_every=2",
                                                                 "sample.n=1", "sample.max_new_tokens=20"])):
            runs[name] = self.tmp / f"table-{name}"
            proc = self.tokar("train", str(ROOT / "recipes" / "debug" / recipe), *extra, "--run-dir",
                              str(runs[name]), "--no-progress")
            assert proc.returncode == 0, proc.stderr[-2000:]

        def one(i: int) -> None:
            name, argv, expect = CASES[i]
            case_dir = self.tmp / f"case-{i}"
            case_dir.mkdir()
            args = argv(Ctx(case_dir, runs["char"], runs["pixel"], runs["audio"]))
            self.expect_error("bad_input", name, args, expect, cwd=case_dir)

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, range(len(CASES))))


def kill_at(proc: subprocess.Popen, ckpts: Path, rng: random.Random, mid_save: bool) -> str | None:
    """SIGKILL `proc` at a random moment: during start-up and data loading, or (mid_save) within
    50 ms of the 1st, 2nd or 3rd new checkpoint's temporary folder appearing, i.e. while it is
    being written, renamed or pruned. Returns when it struck, or None when the process finished
    first."""
    if not mid_save:
        delay = rng.uniform(0.5, 6.0)
        try:
            proc.wait(timeout=delay)
            return None
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return f"{delay:.1f}s after start"
    seen = {p.name for p in ckpts.glob(".tmp-*")} if ckpts.is_dir() else set()
    saves_to_let_through = rng.randrange(3)  # so that kills do not all land on the same step
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        new = {p.name for p in ckpts.glob(".tmp-*")} - seen if ckpts.is_dir() else set()
        if new and saves_to_let_through:
            saves_to_let_through -= 1
            seen |= new
        elif new:
            time.sleep(rng.uniform(0.0, 0.05))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return f"mid-save of {sorted(new)[0].split('-')[1]}"
        time.sleep(0.002)
    return None


def same_weights(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    try:
        wa, wb = load_file(a / "prior" / "model.safetensors"), load_file(b / "prior" / "model.safetensors")
    except Exception:  # noqa: BLE001 - missing or unreadable: not the same
        return False
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12, help="SIGKILLs in the kill loop")
    parser.add_argument("--races", type=int, default=2, help="rounds of concurrent writers")
    parser.add_argument("--jobs", type=int, default=2, help="bad-input cases run at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-table", action="store_true", help="leave out the bad-input table")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tokar-faults-") as tmp:
        campaign = Campaign(Path(tmp))
        campaign.sigkill_loop(args.kills, random.Random(args.seed))
        campaign.concurrent_writers(args.races)
        campaign.disk_full()
        if not args.skip_table:
            campaign.bad_input_table(args.jobs)
    outcomes = Counter(c["outcome"] for c in campaign.cases)
    groups: dict[str, Counter] = {}
    for c in campaign.cases:
        groups.setdefault(c["group"], Counter())[c["outcome"]] += 1
    emit({
        "benchmark": "faults",
        "cases": len(campaign.cases),
        "clear_errors": outcomes["clear_error"],
        "ok": outcomes["ok"],
        "tracebacks": outcomes["traceback"],
        "unclear_errors": outcomes["unclear_error"],
        "data_lost": outcomes["data_lost"],
        "hangs": outcomes["hang"],
        "groups": {g: dict(c) for g, c in groups.items()},
        "skipped": campaign.skipped,
        "problems": [c for c in campaign.cases if c["outcome"] not in ("ok", "clear_error")],
        "seconds": round(time.perf_counter() - start, 1),
    })


if __name__ == "__main__":
    main()
