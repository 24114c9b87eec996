"""How the engine pool hands photos to worker lanes (no worker process is started here)."""

from __future__ import annotations

import asyncio

import pytest

from visio_grpc.engine.pipeline import EngineConfig
from visio_grpc.engine.pool import EnginePool


@pytest.fixture
async def pool() -> EnginePool:
    engine = EnginePool(EngineConfig(), workers=2)  # process pools start lazily: nothing spawns
    yield engine  # type: ignore[misc]
    await engine.close()


async def test_at_low_load_the_same_warm_lane_is_reused(pool: EnginePool) -> None:
    for _ in range(3):
        lane = await pool._acquire()
        assert lane == 0
        pool._release(lane)


async def test_busy_lanes_make_callers_wait_in_order(pool: EnginePool) -> None:
    first, second = await pool._acquire(), await pool._acquire()
    assert {first, second} == {0, 1}
    third = asyncio.ensure_future(pool._acquire())
    fourth = asyncio.ensure_future(pool._acquire())
    await asyncio.sleep(0)  # let both queue up
    assert not third.done() and not fourth.done()
    pool._release(second)
    assert await third == second
    pool._release(first)
    assert await fourth == first


async def test_a_cancelled_waiter_does_not_lose_a_lane(pool: EnginePool) -> None:
    first, second = await pool._acquire(), await pool._acquire()
    waiter = asyncio.ensure_future(pool._acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    pool._release(first)
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await pool._acquire() == first
    pool._release(second)
