"""The supervise loop restarts a failing task with backoff; shutdown fits its budget."""

from __future__ import annotations

import asyncio

import pytest

from gateway.runtime import supervisor


async def test_a_failing_task_is_reported_and_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "RESTART_INITIAL_S", 0.001)
    runs = 0
    third_run = asyncio.Event()
    failures: list[BaseException] = []

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise OSError(f"device fell over ({runs})")
        third_run.set()
        await asyncio.Event().wait()  # then stays up

    task = asyncio.create_task(supervisor.supervise("device-x", flaky, on_failure=failures.append))
    async with asyncio.timeout(5):
        await third_run.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [str(f) for f in failures] == ["device fell over (1)", "device fell over (2)"]


async def test_cancellation_is_never_swallowed() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervisor.supervise("x", forever, on_failure=lambda _: None))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_shutdown_budget_fits_the_five_seconds_of_the_issue() -> None:
    assert supervisor.SHUTDOWN_BUDGET_S < 5.0


async def test_a_task_that_was_asked_to_stop_is_not_restarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor, "RESTART_INITIAL_S", 0.001)
    stopping = False
    runs = 0
    failures: list[BaseException] = []

    async def uplink_like() -> None:
        nonlocal runs, stopping
        runs += 1
        if runs == 1:
            raise ValueError("Publish topic cannot contain wildcards.")  # a bug: restarted
        stopping = True  # the second run ends because shutdown was asked for

    async with asyncio.timeout(5):
        await supervisor.supervise(
            "uplink", uplink_like, on_failure=failures.append, finished=lambda: stopping
        )
    assert runs == 2
    assert [type(f) for f in failures] == [ValueError]
