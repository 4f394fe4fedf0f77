"""A FUSE passthrough filesystem that keeps written data only once it is synced.

Run as ``python -m tests.powercut_fs BACKING MOUNTPOINT``: every file
operation under MOUNTPOINT goes to BACKING, but the filesystem remembers,
per file, what each write or truncate overwrote since that file's last
``fsync``/``fdatasync``. Unmounting is the power cut: the unsynced writes are
undone in reverse order and each file is cut back to its size at its last
sync, so BACKING holds exactly what a disk would have kept. A summary line
(JSON) goes to stdout before the process exits.

The model of a disk (stricter than ext4's ``data=ordered``, which flushes data
every few seconds anyway): file data and sizes survive only when synced;
directory operations (create, unlink, rename, mkdir) survive at once, like a
journalled filesystem's metadata. A file created and never synced survives
empty. That is what SQLite assumes of a disk: it syncs what it needs.

The process is single-threaded (``nothreads``), so the undo log needs no lock.
The kernel handles POSIX locks itself (``lock`` is not implemented), which is
enough for one machine.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from fuse import FUSE, FuseOSError, Operations


@dataclass
class _Undo:
    """What to restore on a cut: the size at the last sync, and overwritten bytes."""

    synced_size: int
    records: list[tuple[int, bytes]] = field(default_factory=list)


class PowerCutFs(Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, backing: str) -> None:
        self.backing = os.path.realpath(backing)
        self.undo: dict[str, _Undo] = {}
        self.syncs = 0

    def _full(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _entry(self, path: str, fd: int) -> _Undo:
        entry = self.undo.get(path)
        if entry is None:
            # First change since the last sync: the size now is the synced size.
            entry = self.undo[path] = _Undo(os.fstat(fd).st_size)
        return entry

    # -------------------------------------------------------------- files

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        try:
            st = os.lstat(self._full(path))
        except OSError as exc:
            raise FuseOSError(exc.errno) from exc
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
        attrs: dict[str, Any] = {key: getattr(st, key) for key in keys}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def access(self, path: str, amode: int) -> None:
        if not os.access(self._full(path), amode):
            raise FuseOSError(errno.EACCES)

    def open(self, path: str, flags: int) -> int:
        fh: int = _os_call(os.open, self._full(path), _rdwr(flags))
        if flags & os.O_TRUNC:
            self.truncate(path, 0, fh)  # through the undo log, like any truncate
        return fh

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        fh: int = _os_call(os.open, self._full(path), os.O_RDWR | os.O_CREAT, mode)
        self.truncate(path, 0, fh)
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return _os_call(os.pread, fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        entry = self._entry(path, fh)
        size = os.fstat(fh).st_size
        if offset < size:
            entry.records.append((offset, os.pread(fh, min(len(data), size - offset), offset)))
        return _os_call(os.pwrite, fh, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        fd = fh if fh is not None else os.open(self._full(path), os.O_RDWR)
        try:
            entry = self._entry(path, fd)
            size = os.fstat(fd).st_size
            if length < size:
                entry.records.append((length, os.pread(fd, size - length, length)))
            os.ftruncate(fd, length)
        finally:
            if fh is None:
                os.close(fd)

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        # The backing store need not reach a platter: "synced" is this log's notion.
        self.undo.pop(path, None)
        self.syncs += 1

    def flush(self, path: str, fh: int) -> None:
        return None

    def release(self, path: str, fh: int) -> None:
        os.close(fh)

    # --------------------------------------------------------- directories

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._full(path))]

    def mkdir(self, path: str, mode: int) -> None:
        _os_call(os.mkdir, self._full(path), mode)

    def rmdir(self, path: str) -> None:
        _os_call(os.rmdir, self._full(path))

    def unlink(self, path: str) -> None:
        _os_call(os.unlink, self._full(path))
        self.undo.pop(path, None)

    def rename(self, old: str, new: str) -> None:
        _os_call(os.rename, self._full(old), self._full(new))
        self.undo.pop(new, None)
        if old in self.undo:
            self.undo[new] = self.undo.pop(old)

    def chmod(self, path: str, mode: int) -> None:
        _os_call(os.chmod, self._full(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        _os_call(os.chown, self._full(path), uid, gid)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        _os_call(os.utime, self._full(path), ns=times)

    def fsyncdir(self, path: str, datasync: int, fh: int) -> None:
        return None

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._full(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files")
        result = {key: getattr(st, key) for key in keys}
        result.update(f_flag=st.f_flag, f_frsize=st.f_frsize, f_namemax=st.f_namemax)
        return result

    # ----------------------------------------------------------------- cut

    def cut(self) -> dict[str, int]:
        """Undo every unsynced write, newest first; cut each file to its synced size."""
        dropped = 0
        for path, entry in self.undo.items():
            full = self._full(path)
            if not os.path.exists(full):
                continue
            fd = os.open(full, os.O_RDWR)
            try:
                dropped += max(0, os.fstat(fd).st_size - entry.synced_size)
                for offset, old in reversed(entry.records):
                    os.pwrite(fd, old, offset)
                    dropped += len(old)
                os.ftruncate(fd, entry.synced_size)
            finally:
                os.close(fd)
        summary = {"files": len(self.undo), "dropped_bytes": dropped, "syncs": self.syncs}
        self.undo.clear()
        return summary


def _rdwr(flags: int) -> int:
    # Always read-write underneath: a write must first read what it overwrites.
    dropped = os.O_WRONLY | os.O_RDONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC | os.O_CREAT
    return (flags & ~dropped) | os.O_RDWR


def _os_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except OSError as exc:
        raise FuseOSError(exc.errno) from exc


def main(argv: list[str]) -> int:
    backing, mountpoint = argv
    fs = PowerCutFs(backing)
    # attr/entry caching off: the daemon sees sizes and names as they are.
    FUSE(
        fs,
        mountpoint,
        foreground=True,
        nothreads=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )
    # Unmounted: that is the power cut.
    print(json.dumps(fs.cut()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
