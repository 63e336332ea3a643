"""Paired timing of configurations that must run in separate processes (bench_train, bench_infer).

Allocator settings apply only from a process's start, so "all off" and "all on" cannot share one
process. On a machine shared with other jobs, timing them one after the other compares different
loads. Here every configuration gets its own long-lived child process: all are set up first,
then the parent asks them in turn for one timed step each, round after round (the order flips
every round), so neighbouring measurements see the same load; ratios are taken per round and the
median round ratio is reported.

Child side: `serve(setup)` where `setup() -> (steps: dict[name, fn], info: dict, finish: fn)`.
Protocol (one JSON line each way): parent sends {"cmd": "step", "name": ...} or {"cmd": "done"};
the child answers {"seconds", "faults", "user_s", "sys_s"} (wall time, minor page faults and CPU
time of the step) or finish()'s dict, prefixed with "@@".
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

PREFIX = "@@"
STEP_KEYS = ("seconds", "faults", "user_s", "sys_s")  # what a child reports per timed step
# Variables the allocator switch sets; removed from every child so "off" really is off.
ALLOCATOR_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_",
                 "MALLOC_ARENA_MAX", "THP_MEM_ALLOC_ENABLE", "ATTNGAN_ALLOCATOR_APPLIED", "ATTNGAN_ALLOCATOR")


# --- Command line -------------------------------------------------------------------------------


def add_common_arguments(parser, quick_help: str) -> None:
    """The arguments every paired benchmark takes: --quick, --device, --threads and the hidden
    --child (a configuration's process)."""
    import argparse

    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)


def switches_of(name: str, named: dict[str, set[str]], switches: tuple[str, ...]) -> set[str]:
    """A configuration's switches: a named set ("off", "on") or switches and named sets joined by
    + ("on+bf16")."""
    if name in named:
        return set(named[name])
    parts = set(name.split("+"))
    unknown = parts - set(switches) - set(named)
    if unknown:
        sys.exit(f"unknown configuration {name!r}: use {', '.join(named)}, or switches joined by + "
                 f"({', '.join(switches)})")
    return set().union(*(named.get(p, {p}) for p in parts))


def child_argv(script: str, spec: dict) -> list[str]:
    """The command line of one configuration's process."""
    return [sys.executable, os.path.abspath(script), "--child", json.dumps(spec)]


# --- Child side ---------------------------------------------------------------------------------


def serve(setup) -> None:
    """Run in the child: set up, say ready, then answer step/done requests on stdin."""
    steps, info, finish = setup()
    _say(info)
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "done":
            _say(finish())
            return
        fn = steps[msg["name"]]
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fn()
        seconds, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        _say({"seconds": seconds, "faults": r1.ru_minflt - r0.ru_minflt,
              "user_s": r1.ru_utime - r0.ru_utime, "sys_s": r1.ru_stime - r0.ru_stime})


def _say(obj: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


# --- Parent side --------------------------------------------------------------------------------


class Child:
    def __init__(self, name: str, argv: list[str]):
        self.name = name
        env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1)

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])
        self.stderr.seek(0)
        sys.exit(f"benchmark configuration {self.name} failed:\n{self.stderr.read()[-5000:]}")

    def ask(self, msg: dict) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> dict:
        out = self.ask({"cmd": "done"})
        self.proc.wait()
        self.stderr.close()
        return out


def run_paired(children: dict[str, list[str]], steps: dict[str, tuple[int, int]]) -> dict[str, dict]:
    """Start every child (argv per configuration name), then for each step name (warm-up, rounds):
    warm each child up, then interleave one timed step per child per round.

    Returns per configuration: info (from setup), final (from finish), and per step name the
    lists of STEP_KEYS, one entry per round, aligned across configurations.
    """
    procs = {name: Child(name, argv) for name, argv in children.items()}
    out = {name: {"info": p.read(), "steps": {}} for name, p in procs.items()}
    try:
        for step, (warmup, rounds) in steps.items():
            for name, p in procs.items():
                for _ in range(warmup):
                    p.ask({"cmd": "step", "name": step})
                out[name]["steps"][step] = {k: [] for k in STEP_KEYS}
            order = list(procs)
            for r in range(rounds):
                for name in (order if r % 2 == 0 else order[::-1]):
                    res = procs[name].ask({"cmd": "step", "name": step})
                    for k in STEP_KEYS:
                        out[name]["steps"][step][k].append(res[k])
        for name, p in procs.items():
            out[name]["final"] = p.close()
    finally:
        for p in procs.values():
            if p.proc.poll() is None:
                p.proc.kill()
    return out


def paired_speedup(base: list[float], other: list[float]) -> float:
    """Median over rounds of base time / other time (> 1: `other` is faster)."""
    return statistics.median(b / o for b, o in zip(base, other))


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
