"""systemd/estate-gateway.service: it verifies, it is locked down, and Python runs in it.

Three kinds of check:

- ``systemd-analyze verify`` on the unit as installed in a scratch root (``--root``), so
  that its ExecStart= binary is checked for real: the root holds an executable at
  /opt/estate-gateway/venv/bin/estate-gateway and a copy of the host's unit directory
  (verify needs sysinit.target and friends). Verify exits 0 even for unknown keys, so
  any output at all fails the test.
- ``systemd-analyze security --offline=true``: the exposure score stays <= 2.0.
- The unit's seccomp settings (SystemCallFilter=, MemoryDenyWriteExecute=,
  RestrictAddressFamilies=) are rebuilt with libseccomp the way systemd 252 builds
  them, and a workload that imports and exercises every native dependency of the
  daemon runs under them. This is where a cffi/JIT need for W+X memory would show.
  It needs the Debian package python3-seccomp and skips without it. No systemd runs
  as PID 1 here, so namespaces, DeviceAllow= and ProtectSystem= are not exercised.

Longer than 400 lines because each class of hardening directive gets its check, and the
seccomp workload needs a harness of its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.runtime.supervisor import SHUTDOWN_BUDGET_S as DAEMON_SHUTDOWN_BUDGET_S

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "estate-gateway.service"
EXEC_PATH = "/opt/estate-gateway/venv/bin/estate-gateway"
MAX_EXPOSURE = 2.0
# The daemon's staged shutdown budget (DESIGN.md, STYLE.md section 5). The lead replaces
# this literal with the supervisor's own constant once gateway/runtime/supervisor.py has it.

SYSTEMD_UNIT_DIR = Path("/usr/lib/systemd/system")


# scripts/test installs systemd (for systemd-analyze) and python3-seccomp:
# these tests fail, never skip, when their tools are missing.
def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} missing: apt-get install {package} (scripts/test does this)")


needs_systemd_analyze = pytest.mark.usefixtures("systemd_analyze")


@pytest.fixture
def systemd_analyze() -> None:
    _require("systemd-analyze", "systemd")


def unit_settings(path: Path | None = None) -> list[tuple[str, str, str]]:
    """Parse a unit file into (section, key, value) triples, keeping repeated keys."""
    settings: list[tuple[str, str, str]] = []
    section = ""
    for raw in (path or UNIT).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.append((section, key.strip(), value.strip()))
    return settings


def setting(key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in unit_settings() if s == section and k == key]


def timespan_s(text: str) -> float:
    """Parse a systemd time span ("15", "15s", "1min 30s", "500ms") into seconds."""
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "min": 60.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text)
    assert parts, text
    return sum(float(number) * units[unit] for number, unit in parts)


# --- the unit's own promises --------------------------------------------------------


def test_stop_timeout_exceeds_daemon_shutdown_budget() -> None:
    (stop,) = setting("TimeoutStopSec")
    # Well above, not just above: systemd's clock starts at SIGTERM, and a Pi's SD card
    # can stall a final SQLite commit.
    assert timespan_s(stop) >= 2 * DAEMON_SHUTDOWN_BUDGET_S


def test_notify_watchdog_and_restart() -> None:
    assert setting("Type") == ["notify"]
    assert setting("NotifyAccess") == ["main"]
    assert timespan_s(setting("WatchdogSec")[0]) == 30
    assert setting("Restart") == ["always"]
    assert timespan_s(setting("RestartSec")[0]) >= 1
    assert setting("StartLimitIntervalSec", section="Unit") == ["0"]


def test_runs_the_installed_console_script() -> None:
    assert setting("ExecStartPre") == [f"{EXEC_PATH} check-config /etc/estate-gateway/config.yaml"]
    assert setting("ExecStart") == [f"{EXEC_PATH} run -c /etc/estate-gateway/config.yaml"]
    assert setting("User") == ["estate-gateway"]
    assert setting("StateDirectory") == ["estate-gateway"]


# --- systemd-analyze ---------------------------------------------------------------


@pytest.fixture
def scratch_root(tmp_path: Path) -> Path:
    """A root with the unit installed, its ExecStart binary, and the host's targets."""
    root = tmp_path / "root"
    if not SYSTEMD_UNIT_DIR.is_dir():
        pytest.fail(f"{SYSTEMD_UNIT_DIR} missing: apt-get install systemd (scripts/test does this)")
    shutil.copytree(SYSTEMD_UNIT_DIR, root / "usr/lib/systemd/system", symlinks=True)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    shutil.copy(UNIT, unit_dir / UNIT.name)
    # Every program the unit runs (ExecStart*, ExecReload) must exist in the root.
    for program in {
        EXEC_PATH,
        *(v.split()[0] for _, k, v in unit_settings() if k.startswith("Exec")),
    }:
        exe = root / program.lstrip("/")
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    return root


def _verify(root: Path, unit_name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", unit_name],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@needs_systemd_analyze
def test_systemd_analyze_verify_is_clean(scratch_root: Path) -> None:
    result = _verify(scratch_root, UNIT.name)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


@needs_systemd_analyze
def test_verify_would_catch_a_typo_or_missing_binary(scratch_root: Path) -> None:
    # The check above means something only if these fail.
    unit_dir = scratch_root / "etc/systemd/system"
    typo = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    (unit_dir / "typo.service").write_text(typo)
    assert "Unknown key" in _verify(scratch_root, "typo.service").stderr

    (scratch_root / EXEC_PATH.lstrip("/")).unlink()
    result = _verify(scratch_root, UNIT.name)
    assert result.returncode != 0
    assert "is not executable" in result.stderr


@needs_systemd_analyze
def test_security_exposure_is_low() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout


# --- the seccomp sandbox, rebuilt and run ------------------------------------------

# Runs under the filters, and once without them as the baseline: both runs must print
# the same JSON. Anything a filter breaks shows up as a difference or a crash.
WORKLOAD = textwrap.dedent(
    r"""
    import asyncio, ctypes, importlib, json, mmap, os, pkgutil, socket, sqlite3, ssl, sys
    import datetime, tempfile

    out = {}
    work = sys.argv[1]

    third_party = ["aiomqtt", "paho.mqtt.client", "pymodbus.client", "pymodbus.server",
                   "serial", "serial_asyncio_fast", "pydantic", "pydantic_core", "yaml",
                   "cryptography.hazmat.primitives.asymmetric.ed25519", "cryptography.x509"]
    for name in third_party:
        importlib.import_module(name)
    out["third_party"] = third_party

    # Every module of the project that imports at all (a module broken for other reasons
    # fails in both runs the same way, so it does not fail this test).
    project = {}
    for pkg in ("gateway", "drivers"):
        try:
            mod = importlib.import_module(pkg)
        except Exception as exc:
            project[pkg] = type(exc).__name__
            continue
        for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
            if ".sim" in info.name or info.name.endswith("__main__"):
                continue
            try:
                importlib.import_module(info.name)
                project[info.name] = "ok"
            except Exception as exc:
                project[info.name] = type(exc).__name__
    out["project"] = project

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    key.public_key().verify(key.sign(b"door.open"), b"door.open")
    out["ed25519"] = "ok"

    import pydantic, yaml
    class M(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
        site: str
    out["pydantic"] = M.model_validate(yaml.safe_load("site: changqing")).site

    db = sqlite3.connect(os.path.join(work, "outbox.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE r (seq INTEGER PRIMARY KEY, body BLOB)")
    with db:
        db.executemany("INSERT INTO r (body) VALUES (?)", [(b"x" * 100,)] * 500)
    out["sqlite"] = db.execute("SELECT count(*) FROM r").fetchone()[0]
    db.close()

    import serial
    master, slave = os.openpty()
    port = serial.Serial(os.ttyname(slave), baudrate=9600, timeout=1)
    os.write(master, b"\xaa\x55")
    out["serial"] = port.read(2).hex()
    port.close()

    # TLS over loopback with a throwaway self-signed certificate, as the MQTT link uses.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    cert_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(cert_key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(cert_key, hashes.SHA256()))
    cert_pem = os.path.join(work, "cert.pem")
    key_pem = os.path.join(work, "key.pem")
    with open(cert_pem, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_pem, "wb") as f:
        f.write(cert_key.private_bytes(serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    async def network():
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert_pem, key_pem)
        client_ctx = ssl.create_default_context(cafile=cert_pem)

        async def echo(reader, writer):
            writer.write(await reader.readexactly(4))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "localhost", port, ssl=client_ctx, server_hostname="localhost")
        writer.write(b"ping")
        reply = await reader.readexactly(4)
        writer.close()
        server.close()
        await server.wait_closed()
        await asyncio.to_thread(lambda: None)  # the default executor starts a thread
        return reply.decode()

    out["tls"] = asyncio.run(network())

    # gateway/runtime/clock.py asks the kernel whether NTP has synced the clock: a read-only
    # adjtimex (glibc: clock_adjtime). The state differs by host; an error must not.
    libc = ctypes.CDLL(None, use_errno=True)
    timex = ctypes.create_string_buffer(512)  # struct timex, all zero: modes=0, read only
    state = libc.adjtimex(timex)
    out["adjtimex"] = "ok" if state >= 0 else os.strerror(ctypes.get_errno())
    with open("/proc/sys/kernel/random/boot_id") as f:
        out["boot_id"] = len(f.read().strip())
    out["getaddrinfo"] = bool(socket.getaddrinfo("localhost", 1883, type=socket.SOCK_STREAM))

    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(os.path.join(work, "notify.sock"))
    from gateway.runtime import sdnotify
    sdnotify.ready(environ={"NOTIFY_SOCKET": os.path.join(work, "notify.sock")})
    out["sdnotify"] = dgram.recv(64).decode()

    # Probes: these differ between the runs on purpose and are reported separately.
    probes = {}
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM).close()
        probes["af_netlink"] = "allowed"
    except OSError as exc:
        probes["af_netlink"] = os.strerror(exc.errno)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()
        probes["wx_mmap"] = "allowed"
    except OSError as exc:
        probes["wx_mmap"] = os.strerror(exc.errno)
    try:  # libffi closures: only code that passes Python callbacks to C needs this.
        callback = ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)
        probes["ctypes_callback"] = str(callback())
    except Exception as exc:
        probes["ctypes_callback"] = type(exc).__name__
    print(json.dumps({"result": out, "probes": probes}))
    """
)

# Runs in a Python that has the `seccomp` module, loads the filters the way systemd 252
# does (separate filters; the kernel applies the strictest verdict), then execs argv[3:].
# argv[1]: the SystemCallFilter= allow list; argv[2]: calls ProtectClock= denies.
LAUNCHER = textwrap.dedent(
    r"""
    import errno, json, os, sys
    import seccomp

    # ProtectClock=yes: its own deny filter (the names passed in argv[2]).
    c = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in json.loads(sys.argv[2]):
        try:
            c.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (RuntimeError, ValueError):
            pass  # not a syscall on this architecture
    c.load()

    # MemoryDenyWriteExecute=yes (systemd 252, seccomp_memory_deny_write_execute).
    PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
    m = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    m.add_rule(seccomp.ERRNO(errno.EPERM), "mmap",
               seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC | PROT_WRITE, PROT_EXEC | PROT_WRITE))
    for name in ("mprotect", "pkey_mprotect"):
        m.add_rule(seccomp.ERRNO(errno.EPERM), name,
                   seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
    m.add_rule(seccomp.ERRNO(errno.EPERM), "shmat",
               seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC))
    m.load()

    # RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 (1, 2, 10): socket() with any
    # other family fails with EAFNOSUPPORT.
    a = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for family in [0, 3, 4, 5, 6, 7, 8, 9]:
        a.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, family))
    a.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.GT, 10))
    a.load()

    allowed = json.loads(sys.argv[1])
    # The unit's SystemCallErrorNumber=EPERM: a filtered call fails, it does not kill.
    # (KILL_PROCESS would be stricter but is wrong here: these tests run as root, and
    # SQLite then fchown()s its journal to the database's owner, a call it never makes
    # as the estate-gateway user and whose failure it ignores anyway.)
    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for name in allowed:
        try:
            f.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # not a syscall on this architecture
    # Loaded last, as systemd does: seccomp() itself is not on the allow list.
    f.load()

    os.execv(sys.argv[3], sys.argv[3:])
    """
)


def _seccomp_python() -> str | None:
    """Return an interpreter that can `import seccomp` (python3-seccomp), if any."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        if not os.path.exists(candidate):
            continue
        probe = subprocess.run(
            [candidate, "-c", "import seccomp"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return candidate
    return None


def _expand_syscall_sets(names: list[str], cache: dict[str, set[str]]) -> set[str]:
    """Expand systemd syscall groups (@name) recursively into syscall names."""
    result: set[str] = set()
    for name in names:
        if not name.startswith("@"):
            result.add(name)
            continue
        if name not in cache:
            listing = subprocess.run(
                ["systemd-analyze", "syscall-filter", "--no-pager", name],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.splitlines()
            members = [
                line.strip()
                for line in listing[1:]
                if line.strip() and not line.strip().startswith("#")
            ]
            cache[name] = _expand_syscall_sets(members, cache)
        result |= cache[name]
    return result


def allowed_syscalls() -> set[str]:
    """The allow list systemd builds from the unit's SystemCallFilter= lines, in order.

    The first assignment without ``~`` starts an allow list; later ``~`` assignments
    remove from it and later plain ones add back (systemd.exec(5)).
    """
    allowed: set[str] = set()
    cache: dict[str, set[str]] = {}
    values = setting("SystemCallFilter")
    assert values, "the unit must filter system calls"
    assert not values[0].startswith("~"), "the unit must use an allow list"
    for value in values:
        if value.startswith("~"):
            allowed -= _expand_syscall_sets(value[1:].split(), cache)
        else:
            allowed |= _expand_syscall_sets(value.split(), cache)
    return allowed


def denied_by_protect_clock() -> set[str]:
    """ProtectClock=yes loads its own filter: every @clock call fails with EPERM."""
    if setting("ProtectClock") in ([], ["no"]):
        return set()
    return _expand_syscall_sets(["@clock"], {})


def _run_workload(tmp_path: Path, label: str, prefix: list[str]) -> dict[str, object]:
    work = tmp_path / label
    work.mkdir()
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    result = subprocess.run(
        [*prefix, sys.executable, str(script), str(work)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, (
        f"{label} run failed (rc={result.returncode})\n{result.stderr[-3000:]}"
    )
    parsed: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


@needs_systemd_analyze
def test_python_workload_runs_under_the_units_seccomp_filters(tmp_path: Path) -> None:
    launcher_python = _seccomp_python()
    if launcher_python is None:
        pytest.fail(
            "python3-seccomp missing: apt-get install python3-seccomp (scripts/test does this)"
        )
    assert setting("MemoryDenyWriteExecute") == ["yes"]
    assert setting("SystemCallErrorNumber") == ["EPERM"]
    assert setting("RestrictAddressFamilies") == ["AF_UNIX AF_INET AF_INET6"]
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)

    baseline = _run_workload(tmp_path, "baseline", [])
    sandboxed = _run_workload(
        tmp_path,
        "sandboxed",
        [
            launcher_python,
            str(launcher),
            json.dumps(sorted(allowed_syscalls())),
            json.dumps(sorted(denied_by_protect_clock())),
        ],
    )

    assert sandboxed["result"] == baseline["result"]
    # The filters really were in force (the probes are not vacuous):
    probes = sandboxed["probes"]
    assert isinstance(probes, dict)
    assert probes["af_netlink"] == os.strerror(97)  # EAFNOSUPPORT
    assert probes["wx_mmap"] == os.strerror(1)  # EPERM
    # ctypes callbacks are reported, not required: the daemon passes no Python callbacks
    # to C. If a dependency ever does, this probe is where to look first.
    print("ctypes callback under MemoryDenyWriteExecute:", probes["ctypes_callback"])
