"""The access inbox: messages on disk in arrival order, bounded, kept across a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.access.inbox import AccessInbox


async def drain(inbox: AccessInbox) -> list[bytes]:
    out = []
    while inbox.waiting:
        async with asyncio.timeout(5):
            path = await inbox.get()
        out.append(inbox.read(path))
        inbox.done(path)
    return out


async def test_messages_come_out_in_arrival_order_and_leave_no_file(tmp_path: Path) -> None:
    inbox = AccessInbox(tmp_path)
    for i in range(12):
        assert inbox.put(f"message {i}".encode())
    assert inbox.waiting == 12
    assert await drain(inbox) == [f"message {i}".encode() for i in range(12)]
    inbox.close()
    assert list(tmp_path.iterdir()) == []


async def test_messages_not_handled_before_a_restart_are_kept_in_order(tmp_path: Path) -> None:
    before = AccessInbox(tmp_path)
    for i in range(3):
        before.put(f"m{i}".encode())
    async with asyncio.timeout(5):
        path = await before.get()
    before.done(path)  # m0 handled; m1 and m2 were received when the daemon stopped
    before.close()  # writes what its thread had not written yet
    (tmp_path / "000000000099.partial").write_bytes(b'{"v": 1, "ty')  # cut short mid-write
    (tmp_path / "000000000098.msg").write_bytes(b"")  # renamed, its bytes lost to a power cut
    after = AccessInbox(tmp_path)
    assert after.waiting == 2
    after.put(b"m3")
    assert await drain(after) == [b"m1", b"m2", b"m3"]
    after.close()
    assert list(tmp_path.iterdir()) == []


async def test_a_full_inbox_keeps_nothing_more(tmp_path: Path) -> None:
    inbox = AccessInbox(tmp_path, max_messages=3, max_bytes=10)
    assert inbox.put(b"1234")
    assert inbox.put(b"5678")
    assert not inbox.put(b"abc"), "over the byte bound"
    assert inbox.put(b"ab")
    assert not inbox.put(b""), "over the message bound"
    assert (inbox.waiting, inbox.waiting_bytes) == (3, 10)
    assert await drain(inbox) == [b"1234", b"5678", b"ab"]
    assert inbox.put(b"abc"), "room again once handled"
    assert await drain(inbox) == [b"abc"]
    inbox.close()
    assert list(tmp_path.iterdir()) == []
