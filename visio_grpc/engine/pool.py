"""Runs FacePipelines off the event loop: worker processes that each own their dlib models.

dlib's descriptor call holds the GIL, so threads cannot use more than one core; processes can.
`workers=0` runs one pipeline in a background thread instead (tests, tools, tiny machines).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from visio_grpc.domain.errors import ServiceOverloaded, WorkerRestarted
from visio_grpc.domain.models import ImageAnalysis
from visio_grpc.engine.decode import check_upload
from visio_grpc.engine.pipeline import EngineConfig, FacePipeline

log = logging.getLogger(__name__)

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

    def __init__(self, config: EngineConfig, *, workers: int, max_queued: int = 64) -> None:
        self.config = config
        self.workers = workers
        self._max_in_flight = max(workers, 1) + max_queued
        self._in_flight = 0
        self._executor = self._new_executor()

    def _new_executor(self) -> Executor:
        if self.workers == 0:
            return ThreadPoolExecutor(max_workers=1, initializer=_init_worker, initargs=(self.config,))
        # spawn, not fork: the parent runs gRPC threads, which do not survive fork.
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.config,),
        )

    async def start(self) -> None:
        """Starts every worker and loads its models, so the first request is not slow."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, _warm_up) for _ in range(max(self.workers, 1))))

    async def analyze(self, data: bytes, *, field: str, single: bool) -> ImageAnalysis:
        # Cheap checks here so a 40 MB mistake is not copied to a worker first.
        check_upload(data, field=field, limits=self.config.limits)
        if self._in_flight >= self._max_in_flight:
            raise ServiceOverloaded()
        self._in_flight += 1
        loop = asyncio.get_running_loop()
        executor = self._executor
        if self._has_dead_worker(executor):
            # A worker died while idle (the pool notices only later): this photo was not
            # started, so give it a new pool rather than an error.
            executor = self._replace(executor)
        try:
            try:
                pending = loop.run_in_executor(executor, _analyze_in_worker, data, field, single)
            except BrokenProcessPool:
                executor = self._replace(executor)
                pending = loop.run_in_executor(executor, _analyze_in_worker, data, field, single)
            try:
                return await pending
            except BrokenProcessPool:
                # A worker died (killed, out of memory) and took the pool with the photos in flight.
                self._replace(executor)
                raise WorkerRestarted() from None
        finally:
            self._in_flight -= 1

    @staticmethod
    def _has_dead_worker(executor: Executor) -> bool:
        processes = getattr(executor, "_processes", None) or {}
        return any(not process.is_alive() for process in list(processes.values()))

    def _replace(self, broken: Executor) -> Executor:
        """A new pool for a broken one; the first caller to notice replaces it, once."""
        if broken is self._executor:
            log.error("an engine worker process died; starting a new worker pool")
            self._executor = self._new_executor()
            broken.shutdown(wait=False, cancel_futures=True)
        return self._executor

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    def worker_pids(self) -> list[int]:
        processes = getattr(self._executor, "_processes", None) or {}
        return list(processes)
