"""Runs FacePipelines off the event loop: worker processes that each own their dlib models.

dlib's descriptor call holds the GIL, so threads cannot use more than one core; processes can.
Each worker is a lane of its own (a one-process pool). A photo waits for a free lane and takes
the one freed most recently: at low load the same warm worker serves every call (measured: the
alternation of a shared pool cost ~30 ms of CPU per photo), under load every lane is busy, and a
worker that dies takes only its own photo down. `workers=0` runs one pipeline in a background
thread instead (tests, tools, tiny machines).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from visio_grpc.domain.errors import ProcessingTimeout, ServiceOverloaded, WorkerRestarted
from visio_grpc.domain.models import ImageAnalysis
from visio_grpc.engine.decode import check_upload
from visio_grpc.engine.pipeline import EngineConfig, FacePipeline

log = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 120.0

_worker_pipeline: FacePipeline | None = None


def _init_worker(config: EngineConfig) -> None:
    global _worker_pipeline
    _worker_pipeline = FacePipeline(config)


def _analyze_in_worker(data: bytes, field: str, single: bool) -> ImageAnalysis:
    assert _worker_pipeline is not None, "worker started without its pipeline"
    return _worker_pipeline.analyze(data, field=field, single=single)


def _warm_up() -> int:
    return multiprocessing.current_process().pid or 0


class EnginePool:
    """The FaceEngine the domain uses: `await analyze(...)` from the event loop."""

    def __init__(self, config: EngineConfig, *, workers: int, max_queued: int = 64, job_timeout_s: float = 60.0) -> None:
        self.config = config
        self.workers = workers
        self.job_timeout_s = job_timeout_s
        self._lanes: list[Executor] = [self._new_lane() for _ in range(max(workers, 1))]
        self._idle = list(reversed(range(len(self._lanes))))  # a stack: pop() reuses the warmest
        self._waiting: deque[asyncio.Future[int]] = deque()
        self._ready: list[asyncio.Future[int]] = []  # per lane: its worker has loaded its models
        self._max_in_flight = len(self._lanes) + max_queued
        self._in_flight = 0

    def _new_lane(self) -> Executor:
        if self.workers == 0:
            return ThreadPoolExecutor(max_workers=1, initializer=_init_worker, initargs=(self.config,))
        # spawn, not fork: the parent runs gRPC threads, which do not survive fork.
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.config,),
        )

    async def start(self) -> None:
        """Starts every worker and loads its models, so the first request is not slow."""
        loop = asyncio.get_running_loop()
        self._ready = [loop.run_in_executor(lane, _warm_up) for lane in self._lanes]
        await asyncio.gather(*self._ready)

    async def analyze(self, data: bytes, *, field: str, single: bool) -> ImageAnalysis:
        # Cheap checks here so a 40 MB mistake is not copied to a worker first.
        check_upload(data, field=field, limits=self.config.limits)
        if self._in_flight >= self._max_in_flight:
            raise ServiceOverloaded()
        self._in_flight += 1
        try:
            lane = await self._acquire()
            try:
                return await self._run(lane, data, field, single)
            finally:
                self._release(lane)
        finally:
            self._in_flight -= 1

    async def _run(self, lane: int, data: bytes, field: str, single: bool) -> ImageAnalysis:
        loop = asyncio.get_running_loop()
        if _has_dead_worker(self._lanes[lane]):
            # The worker died while idle (its pool notices only later): this photo was not
            # started, so it gets a new worker rather than an error.
            self._replace(lane)
        try:
            # A replaced worker loads its models first; that is not this photo's time.
            await asyncio.wait_for(asyncio.shield(self._ready[lane]), WORKER_START_TIMEOUT_S)
            pending = loop.run_in_executor(self._lanes[lane], _analyze_in_worker, data, field, single)
            return await asyncio.wait_for(asyncio.shield(pending), self.job_timeout_s)
        except BrokenProcessPool:
            # The worker died (killed, out of memory) with this photo in it.
            self._replace(lane)
            raise WorkerRestarted() from None
        except TimeoutError:
            # A stuck worker (frozen, or a pathological photo) would hold its lane forever.
            _kill_processes(self._lanes[lane])
            self._replace(lane)
            raise ProcessingTimeout(self.job_timeout_s) from None

    async def _acquire(self) -> int:
        if self._idle:
            return self._idle.pop()
        ticket: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(ticket)
        try:
            return await ticket
        except asyncio.CancelledError:
            # Cancelled after a lane was handed over: pass it on rather than lose it.
            if ticket.done() and not ticket.cancelled():
                self._release(ticket.result())
            raise

    def _release(self, lane: int) -> None:
        while self._waiting:
            ticket = self._waiting.popleft()
            if not ticket.done():
                ticket.set_result(lane)
                return
        self._idle.append(lane)

    def _replace(self, lane: int) -> None:
        log.error("engine worker %d died or hung; starting a new one", lane)
        broken, self._lanes[lane] = self._lanes[lane], self._new_lane()
        broken.shutdown(wait=False, cancel_futures=True)
        self._ready[lane] = asyncio.get_running_loop().run_in_executor(self._lanes[lane], _warm_up)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Lets running photos finish for up to `timeout_s`, then kills what is left."""
        loop = asyncio.get_running_loop()
        processes = [process for lane in self._lanes for process in _processes(lane)]
        for lane in self._lanes:
            lane.shutdown(wait=False, cancel_futures=True)
        deadline = loop.time() + timeout_s
        for process in processes:
            await loop.run_in_executor(None, process.join, max(0.0, deadline - loop.time()))
            if process.is_alive():
                log.warning("engine worker %s did not stop within %.0f s; killing it", process.pid, timeout_s)
                process.kill()

    def kill(self) -> None:
        """Stops every worker at once (a second stop signal)."""
        for lane in self._lanes:
            _kill_processes(lane)


def _processes(lane: Executor) -> list[multiprocessing.process.BaseProcess]:
    return list((getattr(lane, "_processes", None) or {}).values())


def _has_dead_worker(lane: Executor) -> bool:
    return any(not process.is_alive() for process in _processes(lane))


def _kill_processes(lane: Executor) -> None:
    for process in _processes(lane):
        if process.is_alive():
            process.kill()
