"""scripts/install.sh, run for real into a throwaway root (--root), never onto this host.

The installer runs from a scratch copy of the checkout, so a test can play "the next
release" by changing the shipped config there. The repository's own config.yaml and
access list are used when present; a minimal stand-in otherwise.

Most tests skip the venv step with --no-venv (it takes 10 s or more);
test_real_venv_install does it for real, from the package index, once.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STUB_CONFIG = """\
gateway:
  site: changqing
  id: north-gate-1
  data_dir: data   # relative to this file: runs from a checkout
access:
  cards: access/cards.txt
"""
STUB_CARDS = "04A1B2C3  # resident\n"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what install.sh reads from the checkout."""
    src = tmp_path / "checkout"
    for part in ("scripts", "systemd", "udev"):
        shutil.copytree(REPO / part, src / part)
    config = REPO / "config.yaml"
    if config.exists():
        shutil.copy(config, src / "config.yaml")
    else:  # the lead's config.yaml is not in the tree yet
        (src / "config.yaml").write_text(STUB_CONFIG)
    (src / "access").mkdir()
    cards = REPO / "access" / "cards.txt"
    if cards.exists():
        shutil.copy(cards, src / "access" / "cards.txt")
    else:
        (src / "access" / "cards.txt").write_text(STUB_CARDS)
    return src


def run_installer(
    checkout: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(checkout / "scripts" / "install.sh"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def install(checkout: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return run_installer(checkout, "--root", str(root), "--no-systemctl", "--no-venv")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_install_layout(checkout: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    user_before = _user_exists("estate-gateway")
    result = install(checkout, root)

    etc = root / "etc/estate-gateway"
    config = (etc / "config.yaml").read_text()
    assert "data_dir: /var/lib/estate-gateway" in config
    assert (etc / "config.yaml.dist").read_text() == config
    assert (etc / "access/cards.txt").read_text() == (checkout / "access/cards.txt").read_text()
    assert mode(etc) == 0o750
    assert mode(etc / "config.yaml") == 0o640  # may hold or point at secrets
    assert mode(root / "var/lib/estate-gateway") == 0o750

    unit = root / "etc/systemd/system/estate-gateway.service"
    assert unit.read_bytes() == (REPO / "systemd/estate-gateway.service").read_bytes()
    rule = root / "etc/udev/rules.d/99-estate-gateway.rules"
    assert rule.read_bytes() == (REPO / "udev/99-estate-gateway.rules").read_bytes()
    modules = (root / "etc/modules-load.d/estate-gateway.conf").read_text().split()
    assert {"usbserial", "cdc_acm"} <= set(modules)
    assert not (root / "opt/estate-gateway/venv").exists()  # --no-venv

    # A throwaway root never touches the host: what was skipped is printed instead.
    assert "skipped (--root): useradd --system" in result.stdout
    assert "skipped: systemctl enable estate-gateway.service" in result.stdout
    assert _user_exists("estate-gateway") == user_before


def test_config_edits_survive_an_upgrade(checkout: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(checkout, root)
    etc = root / "etc/estate-gateway"
    edited = (etc / "config.yaml").read_text() + "# north gate: broker moved 2026-11\n"
    (etc / "config.yaml").write_text(edited)
    (etc / "access/cards.txt").write_text("04FFFFFF  # site's own card\n")

    # The next release ships a changed config.
    shipped = checkout / "config.yaml"
    shipped.write_text(shipped.read_text() + "# new in release 2\n")
    result = install(checkout, root)

    assert (etc / "config.yaml").read_text() == edited
    assert (etc / "access/cards.txt").read_text() == "04FFFFFF  # site's own card\n"
    dist = (etc / "config.yaml.dist").read_text()
    assert "# new in release 2" in dist
    assert "data_dir: /var/lib/estate-gateway" in dist
    assert "kept /etc/estate-gateway/config.yaml (site-edited)" in result.stdout


def test_uninstall_keeps_data_and_purge_removes_it(checkout: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(checkout, root)
    outbox = root / "var/lib/estate-gateway/outbox.sqlite3"
    outbox.write_bytes(b"SQLite format 3\0")
    (root / "opt/estate-gateway/venvs/x/bin").mkdir(parents=True)  # as a venv would

    run_installer(checkout, "--root", str(root), "--no-systemctl", "--uninstall")
    assert not (root / "etc/systemd/system/estate-gateway.service").exists()
    assert not (root / "etc/udev/rules.d/99-estate-gateway.rules").exists()
    assert not (root / "etc/modules-load.d/estate-gateway.conf").exists()
    assert not (root / "opt/estate-gateway").exists()
    assert outbox.exists()
    assert (root / "etc/estate-gateway/config.yaml").exists()

    result = run_installer(
        checkout, "--root", str(root), "--no-systemctl", "--uninstall", "--purge"
    )
    assert not (root / "var/lib/estate-gateway").exists()
    assert not (root / "etc/estate-gateway").exists()
    assert "skipped (--root): userdel estate-gateway" in result.stdout


def test_config_without_data_dir_gets_one(checkout: Path, tmp_path: Path) -> None:
    (checkout / "config.yaml").write_text(
        "# shipped\ngateway:\n    site: changqing\n    id: north-gate-1\nmqtt: {}\n"
    )
    root = tmp_path / "root"
    install(checkout, root)
    lines = (root / "etc/estate-gateway/config.yaml").read_text().splitlines()
    assert lines[:3] == [
        "# shipped",
        "gateway:",
        "    data_dir: /var/lib/estate-gateway  # added by install.sh",
    ]


def test_bad_usage_is_refused(checkout: Path, tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    assert run_installer(checkout, "--root", root, "--purge", check=False).returncode != 0
    assert run_installer(checkout, "--root", root, "--frobnicate", check=False).returncode != 0
    (checkout / "config.yaml").write_text("gateway:\n  data_dir: a\nother:\n  data_dir: b\n")
    result = run_installer(checkout, "--root", root, "--no-venv", check=False)
    assert result.returncode != 0
    assert "expected one data_dir: line, found 2" in result.stderr


def test_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck missing: apt-get install shellcheck (scripts/test does this)")
    result = subprocess.run(
        ["shellcheck", str(REPO / "scripts/install.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.timeout(600)
def test_real_venv_install(tmp_path: Path) -> None:
    root = tmp_path / "root"
    # From the real checkout: pip builds the project itself.
    subprocess.run(
        ["bash", str(REPO / "scripts/install.sh"), "--root", str(root), "--no-systemctl"],
        check=True,
        timeout=600,
    )
    venv = root / "opt/estate-gateway/venv"
    assert venv.is_symlink()
    assert os.readlink(venv).startswith("venvs/")
    exe = venv / "bin/estate-gateway"
    subprocess.run([str(exe), "--help"], check=True, capture_output=True, timeout=60)
    checked = subprocess.run(
        [str(exe), "check-config", str(root / "etc/estate-gateway/config.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
