"""A private scratch folder for the simulators' ports, and its removal.

Not ``tempfile``: it imports shutil, which loads bz2 and lzma, about 0.8 MB
resident for the daemon's whole life (issue 8's idle memory).
"""

from __future__ import annotations

import os
from pathlib import Path


def make_private_dir(prefix: str) -> Path:
    """A new folder only this user can enter, under ``$TMPDIR`` (default /tmp)."""
    base = Path(os.environ.get("TMPDIR") or "/tmp")
    path = base / f"{prefix}{os.getpid()}-{os.urandom(6).hex()}"
    path.mkdir(mode=0o700)
    return path


def remove_tree(path: Path) -> None:
    """Remove ``path`` and what it holds (links are removed, never followed)."""
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            full = os.path.join(root, name)
            if os.path.islink(full):
                os.unlink(full)
            else:
                os.rmdir(full)
    os.rmdir(path)
