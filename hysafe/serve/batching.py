"""Requests that arrive together run as one batch.

A :class:`Batcher` owns one encoder (a model's text or image tower) and one worker thread. Each
request submits its already-prepared inputs (token ids, preprocessed pixels) and waits; the worker
takes the first waiting request, gathers the ones arriving within ``window_s`` (up to
``max_batch`` rows), runs the encoder once and hands every request its rows. The encoder must be
safe to call from that thread while others run the rest of the request: the service gives it a
model with merged weights (:func:`~hysafe.models.checkpoint.inference_copy`), whose forward
writes nothing. Batchers given one ``lock`` (the service's, for all its models) run one forward at a
time: on a CPU, forwards of small towers are mostly Python between short ops, and two at once
fight over the same cores and the interpreter lock, while one at a time lets the other queues fill
meanwhile (bigger batches; 1.1-1.3x the throughput at 8 clients on 2 cores, docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import nullcontext
from typing import Callable

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["Batcher"]


class Batcher:
    """One encoder, its queue and its worker thread (started on the first request)."""

    def __init__(
        self,
        encode: Callable[[Tensor], Tensor],
        *,
        window_s: float = 0.0,
        max_batch: int = 64,
        lock: threading.Lock | None = None,
    ):
        if window_s < 0 or max_batch < 1:
            raise ValueError(f"window_s must be >= 0 and max_batch >= 1, got {window_s}, {max_batch}")
        self.encode, self.window_s, self.max_batch = encode, window_s, max_batch
        #: held around each forward (shared by batchers that must not run forwards at once)
        self.lock = lock
        self._queue: queue.Queue[tuple[Tensor, Future]] = queue.Queue()
        self._start = threading.Lock()
        self._worker: threading.Thread | None = None
        #: forwards run and rows encoded so far, and the largest batch (counters: a long-running
        #: service keeps no per-forward history)
        self.forwards = self.rows = self.largest = 0

    def __call__(self, inputs: Tensor) -> Tensor:
        """The encoder's output rows for ``inputs`` (``(n, ...)``), computed in a shared batch."""
        future: Future = Future()
        self._ensure_worker()
        self._queue.put((inputs, future))
        return future.result()

    def _ensure_worker(self) -> None:
        with self._start:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="hysafe-batcher", daemon=True)
                self._worker.start()

    def _gather(self) -> list[tuple[Tensor, Future]]:
        group = [self._queue.get()]
        rows = len(group[0][0])
        deadline = time.perf_counter() + self.window_s
        while rows < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            group.append(item)
            rows += len(item[0])
        return group

    def _run(self) -> None:
        while True:
            group = self._gather()
            try:
                with torch.no_grad(), self.lock or nullcontext():
                    out = self.encode(torch.cat([inputs for inputs, _ in group]))
                self.forwards, self.rows = self.forwards + 1, self.rows + len(out)
                self.largest = max(self.largest, len(out))
                start = 0
                for inputs, future in group:
                    future.set_result(out[start : start + len(inputs)])
                    start += len(inputs)
            except Exception as e:  # every request of the group gets the error, the worker goes on
                logger.exception("batched forward failed")
                for _, future in group:
                    if not future.done():
                        future.set_exception(e)
