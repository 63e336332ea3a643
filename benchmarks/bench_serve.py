"""Load test of `attngan serve` on loopback: micro-batching on (max-batch 8) vs off (max-batch 1).

Starts the real command (`python -m attngan serve`) on a free loopback port for each setting, sends
the same requests (a caption, a seed, one sample, with word attention: what the page sends) from
16 concurrent clients, and checks every answer: no 5xx at all, every 200 a decodable PNG of the
stated size for each stage and each word overlay. Then one overload run (a queue of 4 under 32
clients) must answer only 200 or 503-with-Retry-After. Prints p50/p99 latency, requests/s and the
batching speed-up.

    python benchmarks/bench_serve.py [--quick] [--model DIR] [--requests 300] [--concurrency 16]

Without --model it uses the bundled model, or, when the installation has none, a random-initialised
`tiny` model it writes to a temporary folder (same shapes and code paths, noise-like images).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

CAPTIONS = [
    "a bird with wings that are black and a white belly",
    "a bird with wings that are blue and a red belly",
    "a bird with wings that are red and a yellow belly",
    "this small bird has a blue crown and a short pointed bill",
    "a yellow bird with a black tail",
    "a bird",
]


def resolve_model(arg: str | None, tmp: Path) -> tuple[str, str]:
    if arg:
        return arg, arg
    from attngan.pipeline import bundled_model_dir

    return str(bundled_model_dir()), "bundled"


class Server:
    """`attngan serve` in a subprocess; its address is read from the banner line."""

    def __init__(self, model: str, max_batch: int, queue: int, device: str):
        cmd = [sys.executable, "-m", "attngan", "serve", "--model", model, "--port", "0",
               "--max-batch", str(max_batch), "--queue", str(queue), "--device", device]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.url = None
        deadline = time.monotonic() + 120
        lines = []
        while self.url is None and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"open (http://[^ ]+/)", line)
            self.url = m.group(1) if m else None
        if self.url is None:
            self.stop()
            raise SystemExit("the server did not start:\n" + "".join(lines[-20:]))
        for _ in range(200):
            try:
                if httpx.get(self.url + "api/v1/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        # Drain the log so a chatty server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def load(url: str, bodies: list[dict], concurrency: int) -> tuple[list[tuple], float]:
    """POST every body, `concurrency` at a time; -> [(status, latency_s, retry_after, body bytes)], wall."""
    results: list[tuple] = [None] * len(bodies)
    next_index = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < len(bodies):
            i = next_index
            next_index += 1
            t = time.perf_counter()
            try:
                r = await client.post(url + "api/v1/generate", json=bodies[i])
                results[i] = (r.status_code, time.perf_counter() - t, r.headers.get("retry-after"), r.content)
            except httpx.TransportError as e:
                results[i] = (-1, time.perf_counter() - t, None, str(e).encode())

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return results, wall


def check_png(b64: str, size: int) -> bool:
    raw = base64.b64decode(b64, validate=True)
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    im = Image.open(io.BytesIO(raw))
    im.load()  # decodes every row: a truncated or corrupt PNG raises
    return im.size == (size, size) and im.mode == "RGB"


def validate(content: bytes) -> bool:
    body = json.loads(content)
    for sample in body["samples"]:
        for st in sample["stages"]:
            if not check_png(st["png"], st["width"]):
                return False
        for att in sample["attention"]:
            if [w["word"] for w in att["words"]] != body["tokens"]:
                return False
            if not all(check_png(w["png"], att["overlay_resolution"]) for w in att["words"]):
                return False
    return len(body["samples"]) == body["n"]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs)) - 1))]


def run_modes(model: str, batches: tuple[int, ...], n_requests: int, concurrency: int, device: str,
              attention: bool, rounds: int) -> list[dict]:
    """Both servers up at once; their load runs alternate in `rounds` slices so that a change in
    the machine's background load hits both settings alike."""
    bodies = [{"caption": CAPTIONS[i % len(CAPTIONS)], "seed": i, "n": 1, "attention": attention}
              for i in range(n_requests)]
    servers = {b: Server(model, b, queue=64, device=device) for b in batches}
    results = {b: [] for b in batches}
    walls = {b: 0.0 for b in batches}
    try:
        for b, server in servers.items():  # warm-up, not timed
            asyncio.run(load(server.url, bodies[: 2 * concurrency], concurrency))
        step = -(-n_requests // rounds)
        for r in range(rounds):
            for b, server in servers.items():
                res, wall = asyncio.run(load(server.url, bodies[r * step:(r + 1) * step], concurrency))
                results[b] += res
                walls[b] += wall
        stats = {b: httpx.get(s.url + "api/v1/health").json()["queue"] for b, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    rows = []
    for b in batches:
        ok = [r for r in results[b] if r[0] == 200]
        lat = [r[1] for r in ok]
        rows.append({
            "max_batch": b, "requests": n_requests, "ok": len(ok),
            "status_503": sum(r[0] == 503 for r in results[b]),
            "other_errors": sum(r[0] not in (200, 503) for r in results[b]),
            "invalid_png": sum(not validate(r[3]) for r in ok),
            "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
            "p99_ms": 1000 * percentile(lat, 99) if lat else float("nan"),
            "req_per_s": len(ok) / walls[b],
            "mean_batch_images": stats[b]["images_generated"] / max(stats[b]["batches_run"], 1),
        })
    return rows


def run_overload(model: str, n_requests: int, concurrency: int, device: str) -> dict:
    bodies = [{"caption": CAPTIONS[i % len(CAPTIONS)], "seed": i, "n": 2} for i in range(n_requests)]
    server = Server(model, max_batch=8, queue=4, device=device)
    try:
        results, _ = asyncio.run(load(server.url, bodies, concurrency))
    finally:
        server.stop()
    refused = [r for r in results if r[0] == 503]
    return {
        "requests": n_requests, "ok": sum(r[0] == 200 for r in results), "status_503": len(refused),
        "503_without_retry_after": sum(not (r[2] or "").isdigit() for r in refused),
        "other_errors": sum(r[0] not in (200, 503) for r in results),
        "invalid_png": sum(not validate(r[3]) for r in results if r[0] == 200),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests (well under 3 minutes)")
    ap.add_argument("--model", default=None, help="model folder (default: bundled, else a random tiny one)")
    ap.add_argument("--requests", type=int, default=None, help="requests per setting (default 300; quick 160)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--device", default="cpu", help="server device (default: cpu)")
    ap.add_argument("--no-attention", action="store_true", help="ask for stage images only")
    ap.add_argument("--rounds", type=int, default=None, help="alternating slices per setting (default 4; quick 2)")
    args = ap.parse_args()
    n = args.requests or (160 if args.quick else 300)

    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        model, label = resolve_model(args.model, Path(tmp))
        print(f"model: {label}; {n} requests per setting at concurrency {args.concurrency}, "
              f"attention {'off' if args.no_attention else 'on'}, device {args.device}, "
              f"{os.cpu_count()} CPU cores", flush=True)
        t = time.perf_counter()
        rows = run_modes(model, (8, 1), n, args.concurrency, args.device, not args.no_attention,
                         args.rounds or (2 if args.quick else 4))
        for r in rows:
            print(f"max-batch {r['max_batch']}: {r['ok']}/{n} ok, p50 {r['p50_ms']:.0f} ms, "
                  f"p99 {r['p99_ms']:.0f} ms, {r['req_per_s']:.1f} req/s, mean batch "
                  f"{r['mean_batch_images']:.2f} images, 5xx {r['status_503'] + r['other_errors']}, "
                  f"invalid PNG {r['invalid_png']}", flush=True)
        print(f"({time.perf_counter() - t:.0f} s)", flush=True)
        over = run_overload(model, 60 if args.quick else 120, 2 * args.concurrency, args.device)
        print(f"overload (queue 4, {2 * args.concurrency} clients, n=2): {over['ok']} ok, "
              f"{over['status_503']} deliberate 503 (all with Retry-After: "
              f"{over['503_without_retry_after'] == 0}), other errors {over['other_errors']}, "
              f"invalid PNG {over['invalid_png']}", flush=True)

    on, off = rows
    ratio = on["req_per_s"] / off["req_per_s"]
    print(f"\nbatching speed-up (req/s, max-batch 8 / max-batch 1): {ratio:.2f}x")
    print("| max-batch | ok | p50 ms | p99 ms | req/s | mean batch |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['max_batch']} | {r['ok']}/{r['requests']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
              f"{r['req_per_s']:.1f} | {r['mean_batch_images']:.2f} |")
    print(json.dumps({"model": label, "runs": rows, "overload": over, "speedup": ratio}))
    failed = (any(r["ok"] != r["requests"] or r["invalid_png"] for r in rows)
              or over["other_errors"] or over["invalid_png"] or over["503_without_retry_after"])
    if failed:
        print("FAILED: errors or invalid images above", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
