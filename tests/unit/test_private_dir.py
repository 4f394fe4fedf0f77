"""The simulators' scratch folder: private, unique, removed whole without following links."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.runtime.private_dir import make_private_dir, remove_tree


def test_each_folder_is_new_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    first, second = make_private_dir("sim-"), make_private_dir("sim-")
    assert first != second and first.parent == second.parent == tmp_path
    assert first.name.startswith(f"sim-{os.getpid()}-")
    assert stat.S_IMODE(first.stat().st_mode) == 0o700


def test_remove_tree_removes_files_folders_and_links_but_not_their_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("kept")
    scratch = make_private_dir("sim-")
    (scratch / "door-east-1").mkdir()
    (scratch / "door-east-1" / "port.tty").write_text("")
    (scratch / "to-outside").symlink_to(outside, target_is_directory=True)
    (scratch / "door-east-1" / "file-link").symlink_to(outside / "keep.txt")
    remove_tree(scratch)
    assert not scratch.exists()
    assert (outside / "keep.txt").read_text() == "kept"
