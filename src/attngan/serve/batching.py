"""Micro-batching: concurrent requests share one generator call, off the event loop.

Requests are queued (bounded) and one worker thread takes the first waiting job, then keeps
collecting jobs that arrive within a few milliseconds until the batch holds `max_batch` images.
It runs one `generate_from_ids` call and hands each job back its own rows.

A server may offer several models: each job names the pipeline it runs on, and a batch holds the
jobs of one pipeline only. A job for another model ends the batch being gathered and opens the
next one, so jobs still run in the order they arrived, and one thread runs every model in turn.

Batching never changes a job's images: each job brings its own noise (drawn from its own seed),
and the generator masks padding words per sample, so a caption's rows depend only on its words and
its noise (up to float rounding of the batched matrix products, far below one 8-bit level).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from attngan.pipeline import AttnGANPipeline

log = logging.getLogger(__name__)


class ShuttingDown(Exception):
    """The server stopped before this job ran."""


class WorkerDied(Exception):
    """The inference thread has ended on an error; the server cannot generate until restarted."""


MAX_WAIT_MS = 1000.0


class QueueFull(Exception):
    """More jobs are waiting than the server accepts; the caller should retry later."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"the generation queue is full; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class Job:
    ids: list[int]                     # word ids of one caption (no padding)
    noise: torch.Tensor                # n x z_dim
    ca_noise: torch.Tensor             # n x condition_dim
    pipeline: AttnGANPipeline | None = None  # the model it runs on; None: the batcher's own
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    submitted: float = field(default_factory=time.perf_counter)

    @property
    def n(self) -> int:
        return int(self.noise.shape[0])


@dataclass
class JobResult:
    images: list[torch.Tensor]         # per stage: n x 3 x H x W in [-1, 1]
    attention: list[torch.Tensor]      # per attentional stage: n x T x h x w (T = this caption's words)
    queue_s: float                     # from submit to the start of its batch
    inference_s: float                 # the whole batch's generator call
    batch_images: int                  # images in that batch (1 = ran alone)


_STOP = object()


def _fail(job: Job, exc: BaseException) -> None:
    if not job.future.done():  # a client that went away has cancelled it already
        job.future.set_exception(exc)


class MicroBatcher:
    def __init__(self, pipeline: AttnGANPipeline, max_batch: int = 8, queue_size: int = 64, wait_ms: float = 5.0):
        if max_batch < 1 or queue_size < 1 or not 0 <= wait_ms <= MAX_WAIT_MS:  # NaN fails too
            raise ValueError(f"max_batch and queue_size must be >= 1, wait_ms from 0 to {MAX_WAIT_MS:g}")
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.queue_size = queue_size
        self.wait_s = wait_ms / 1000.0
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._carry: Job | None = None   # a job that did not fit the previous batch goes first
        self._lock = threading.Lock()    # guards the counters below
        self.batches_run = 0
        self.images_generated = 0
        self._batch_s_ema: float | None = None
        self._thread = threading.Thread(target=self._worker, name="attngan-batcher", daemon=True)
        self._stopping = False
        self._collecting: list[Job] = []  # the batch being gathered: failed too if the worker dies
        self.died: BaseException | None = None

    # Public side (event loop thread).

    def start(self) -> "MicroBatcher":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the running batch, fail the waiting jobs, and end the worker thread."""
        if self._stopping:
            return
        self._stopping = True
        while True:  # make room for the stop marker: jobs still queued are refused
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                _fail(job, ShuttingDown("the server is shutting down"))
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """False once the worker thread has ended other than by stop()."""
        if self.died is not None:
            return False
        started = self._thread.ident is not None
        return self._stopping or not started or self._thread.is_alive()

    @property
    def pending(self) -> int:
        return self._queue.qsize() + (self._carry is not None)

    def submit(self, job: Job) -> concurrent.futures.Future:
        if self._stopping:
            raise ShuttingDown("the server is shutting down")
        if not self.alive:
            raise WorkerDied(self.death_message())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(self.retry_after_s()) from None
        if self.died is not None:  # died while this job was queued: nobody would take it
            self._fail_waiting()
        return job.future

    def death_message(self) -> str:
        why = f" ({type(self.died).__name__})" if self.died is not None else ""
        return f"the inference worker stopped{why}; the server must be restarted"

    def _fail_waiting(self) -> None:
        """Fail every job the dead worker will never take: the batch it was gathering, the carried
        one and the queued ones."""
        error = WorkerDied(self.death_message())
        for job in self._collecting:
            _fail(job, error)
        self._collecting = []
        if self._carry is not None:
            _fail(self._carry, error)
            self._carry = None
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                _fail(job, error)

    def retry_after_s(self) -> int:
        """Whole seconds until the queue has likely drained (at least 1)."""
        with self._lock:
            per_batch = self._batch_s_ema or 0.5
        batches = self.pending / self.max_batch + 1
        return max(1, math.ceil(batches * per_batch))

    def stats(self) -> dict:
        with self._lock:
            return {"pending": self.pending, "capacity": self.queue_size, "max_batch": self.max_batch,
                    "batches_run": self.batches_run, "images_generated": self.images_generated}

    # Worker side.

    def _next(self, timeout: float | None):
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        return self._queue.get(timeout=timeout) if timeout is not None else self._queue.get()

    def _collect(self) -> tuple[list[Job], bool]:
        """One batch of jobs (first blocks, the rest within wait_s), and whether to stop after it."""
        first = self._next(None)
        if first is _STOP:
            return [], True
        batch, size = [first], first.n
        self._collecting = batch
        deadline = time.perf_counter() + self.wait_s
        while size < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                job = self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            if self._model(job) is not self._model(first) or size + job.n > self.max_batch:
                self._carry = job  # keeps arrival order: it opens the next batch
                break
            batch.append(job)
            size += job.n
        return batch, False

    def _model(self, job: Job):
        return self.pipeline if job.pipeline is None else job.pipeline

    def _worker(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - whatever ended the thread, waiting requests must hear of it
            log.exception("the inference worker stopped")
            self.died = e
            self._fail_waiting()

    def _loop(self) -> None:
        while True:
            batch, stop = self._collect()
            # Jobs whose client went away (future cancelled) are skipped.
            batch = [j for j in batch if j.future.set_running_or_notify_cancel()]
            self._collecting = batch
            if batch:
                self._run(batch)
            self._collecting = []
            if stop:
                if self._carry is not None:
                    _fail(self._carry, ShuttingDown("the server is shutting down"))
                    self._carry = None
                return

    def _run(self, batch: list[Job]) -> None:
        start = time.perf_counter()
        try:
            T = max(len(j.ids) for j in batch)
            rows = [j.ids for j in batch for _ in range(j.n)]
            ids = torch.zeros(len(rows), T, dtype=torch.long)
            for r, word_ids in enumerate(rows):
                ids[r, : len(word_ids)] = torch.tensor(word_ids, dtype=torch.long)
            lens = torch.tensor([len(r) for r in rows], dtype=torch.long)
            noise = torch.cat([j.noise for j in batch])
            ca_noise = torch.cat([j.ca_noise for j in batch])
            out = self._model(batch[0]).generate_from_ids(ids, lens, noise, ca_noise)
        except Exception as e:  # handed to every waiting request; the worker keeps running
            log.exception("generation failed for a batch of %d jobs", len(batch))
            for j in batch:
                j.future.set_exception(e)
            return
        took = time.perf_counter() - start
        with self._lock:
            self.batches_run += 1
            self.images_generated += len(rows)
            self._batch_s_ema = took if self._batch_s_ema is None else 0.8 * self._batch_s_ema + 0.2 * took
        r = 0
        for j in batch:
            sl = slice(r, r + j.n)
            r += j.n
            j.future.set_result(JobResult(
                images=[img[sl] for img in out.images],
                attention=[a[sl, : len(j.ids)] for a in out.attention],
                queue_s=start - j.submitted,
                inference_s=took,
                batch_images=len(rows),
            ))
