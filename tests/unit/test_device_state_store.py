"""The gateway's durable per-device state, on real SQLite files."""

from __future__ import annotations

from pathlib import Path

from gateway.devicestate.store import DB_FILENAME, SqliteDeviceStateStore


async def test_put_get_and_overwrite(tmp_path: Path) -> None:
    store = SqliteDeviceStateStore.open(tmp_path)
    try:
        assert await store.get("door-east-1", "mode") is None
        await store.put("door-east-1", "mode", "locked")
        await store.put("door-west-1", "mode", "open")
        await store.put("door-east-1", "mode", "normal")
        assert await store.get("door-east-1", "mode") == "normal"
        assert await store.get("door-west-1", "mode") == "open"
        assert await store.get("door-west-1", "bookmark") is None
    finally:
        store.close()


async def test_survives_a_reopen(tmp_path: Path) -> None:
    store = SqliteDeviceStateStore.open(tmp_path)
    await store.put("controller-1", "event_index", "41234")
    store.close()
    again = SqliteDeviceStateStore.open(tmp_path)
    try:
        assert await again.get("controller-1", "event_index") == "41234"
    finally:
        again.close()


async def test_a_corrupt_file_is_moved_aside_not_deleted(tmp_path: Path) -> None:
    (tmp_path / DB_FILENAME).write_bytes(b"this is not a database" * 100)
    store = SqliteDeviceStateStore.open(tmp_path)
    try:
        assert await store.get("door-east-1", "mode") is None
        await store.put("door-east-1", "mode", "locked")
        assert await store.get("door-east-1", "mode") == "locked"
    finally:
        store.close()
    aside = list(tmp_path.glob(f"{DB_FILENAME}.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not a database")
