"""The configuration file: pydantic v2 models, YAML loading and readable errors.

Every model forbids unknown keys and is frozen, so a typo fails loudly at
start-up instead of being ignored (the shape of Frigate's config). The keys of
``gateway``, ``mqtt``, ``commands``, ``outbox`` and ``devices`` are fixed by the
backbone issue: operators' tooling writes them.

Longer than 400 lines because every section's model is here with the field descriptions
that document ``config.yaml``, and the error formatter that points at YAML lines; device
sections live with their drivers.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from drivers.registry import DeviceConfig, door_ids, udp_listen
from gateway.commands.model import CommandsConfig
from gateway.uplink.broker import DEFAULT_TOPIC_ROOT, BrokerUrl, parse_broker_url, topic_root

_LOGGER = logging.getLogger(__name__)

__all__ = ["BrokerUrl", "Config", "ConfigError", "LoadedConfig", "MqttConfig", "load_config"]

ID_PATTERN = r"^[a-z0-9-]{1,64}$"
DEFAULT_RESPONSE_PREFIX = "{root}/commands/results/"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one line per error."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Model):
    site: str = Field(pattern=ID_PATTERN, description="The estate, e.g. changqing.")
    id: str = Field(pattern=ID_PATTERN, description="This gateway, e.g. north-gate-1.")
    data_dir: Path = Field(
        default=Path("data"),
        description="Where the SQLite files live; relative to the config file.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    timezone: str | None = Field(
        default=None,
        description="The site's time zone, an IANA name (e.g. Asia/Shanghai): access "
        "profiles and the card file's dates are judged in its local time. Required with "
        "access.source: platform; without it the card file uses the system's zone.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str | None) -> str | None:
        if name is not None:
            site_zone(name)
        return name

    @property
    def tz(self) -> ZoneInfo | None:
        return site_zone(self.timezone) if self.timezone is not None else None


def site_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (from the pinned ``tzdata`` when the system has none).

    Raises:
        ValueError: not a known IANA zone name.
    """
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"not an IANA time zone name: {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. Asia/Shanghai)") from exc


class TlsConfig(_Model):
    ca: Path | None = Field(default=None, description="CA bundle; the system CAs when absent.")
    cert: Path | None = Field(default=None, description="Client certificate (PEM).")
    key: Path | None = Field(default=None, description="Client private key (PEM).")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key go together: set both or neither")
        return self


class MqttConfig(_Model):
    brokers: list[str] = Field(
        min_length=1,
        description="mqtt://host:port or mqtts://host:port, tried in order, failing over "
        "to the next and back to the first.",
    )
    username: str | None = None
    password_file: Path | None = Field(
        default=None, description="File holding the password (never written inline)."
    )
    password_env: str | None = Field(
        default=None, description="Or: the environment variable holding the password."
    )
    tls: TlsConfig = Field(default_factory=TlsConfig)
    topic_root: str = Field(
        default=DEFAULT_TOPIC_ROOT,
        description="Topic root; {site} and {gateway_id} are substituted.",
    )
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version.")
    keepalive_s: int = Field(default=30, ge=5, le=600)
    session_expiry_s: int = Field(
        default=3600,
        ge=0,
        description="How long the broker keeps our session (and queued commands) across a drop.",
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    publish_timeout_s: float = Field(default=10.0, gt=0, le=120)
    reconnect_min_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(
        default=4.0,
        gt=0,
        le=600,
        description="Cap of the reconnect backoff (full jitter, so a fleet does not stampede).",
    )
    failback_s: float = Field(
        default=300.0, ge=1, description="While on a fallback broker, retry the first this often."
    )
    batch_max_readings: int = Field(default=1000, ge=1, le=100_000)
    batch_max_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_inflight: int = Field(default=8, ge=1, le=64, description="Batches awaiting PUBACK.")
    status_interval_s: float = Field(default=30.0, ge=1, le=60)
    response_topic_prefix: str = Field(
        default=DEFAULT_RESPONSE_PREFIX,
        min_length=1,
        description="A command's MQTT 5 response topic is honoured only under this prefix "
        "({root} is the topic root), and only once its signature verified.",
    )
    allow_plaintext: bool = Field(
        default=False,
        description="Allow a password over mqtt:// to a broker off this machine, and a "
        "broker list mixing mqtts:// and mqtt:// (whoever blocks 8883 then forces plaintext).",
    )

    @field_validator("brokers")
    @classmethod
    def _valid_urls(cls, brokers: list[str]) -> list[str]:
        for url in brokers:
            parse_broker_url(url)
        return brokers

    @field_validator("topic_root")
    @classmethod
    def _valid_root(cls, root: str) -> str:
        if any(c in root for c in "#+") or root.startswith("/") or root.endswith("/"):
            raise ValueError("topic_root has no wildcards and no leading or trailing '/'")
        return root

    @field_validator("response_topic_prefix")
    @classmethod
    def _valid_prefix(cls, prefix: str) -> str:
        if any(c in prefix for c in "#+") or prefix.startswith("/"):
            raise ValueError("response_topic_prefix has no wildcards and no leading '/'")
        return prefix

    @model_validator(mode="after")
    def _no_silent_plaintext(self) -> MqttConfig:
        if self.allow_plaintext:
            return self
        urls = self.broker_urls
        if any(url.tls for url in urls) and not all(url.tls for url in urls):
            raise ValueError(
                "brokers mix mqtts:// and mqtt://: blocking port 8883 would force plaintext; "
                "use mqtts:// for all, or set mqtt.allow_plaintext: true"
            )
        has_password = self.password_file is not None or self.password_env is not None
        exposed = [str(url) for url in urls if not url.tls and not url.loopback]
        if has_password and exposed:
            raise ValueError(
                f"the password would cross the network in plaintext to {', '.join(exposed)}: "
                "use mqtts://, or set mqtt.allow_plaintext: true"
            )
        return self

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set mqtt.password_file or mqtt.password_env, not both")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("mqtt.reconnect_min_s must not exceed mqtt.reconnect_max_s")
        return self

    @property
    def broker_urls(self) -> list[BrokerUrl]:
        return [parse_broker_url(url) for url in self.brokers]

    def password(self, base_dir: Path) -> SecretStr | None:
        """Read the password from its file or variable (never from the config itself)."""
        if self.password_file is not None:
            path = resolve(base_dir, self.password_file)
            warn_if_readable_by_others(path)
            return SecretStr(path.read_text(encoding="utf-8").strip())
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError([f"mqtt.password_env: variable {self.password_env} is not set"])
            return SecretStr(value)
        return None


def warn_if_readable_by_others(path: Path) -> bool:
    """Log a warning when a secret file is group- or world-readable; return whether it is."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False  # reading it will fail with the real error
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        _LOGGER.warning(
            "password file is readable by group or others: path=%s mode=%s (chmod 600 it)",
            path,
            oct(stat.S_IMODE(mode)),
        )
        return True
    return False


class OutboxConfig(_Model):
    max_mb: float = Field(
        default=256, gt=0, description="Size cap; above it the oldest routine readings go."
    )
    commit_interval_ms: int = Field(
        default=200, ge=10, le=10_000, description="Crash window: readings are group-committed."
    )
    sync_interval_ms: int = Field(
        default=1000,
        ge=10,
        le=60_000,
        description="Power-cut window: the WAL is synced this often.",
    )

    @model_validator(mode="after")
    def _sync_not_faster_than_commit(self) -> OutboxConfig:
        if self.sync_interval_ms < self.commit_interval_ms:
            raise ValueError("outbox.sync_interval_ms must be >= outbox.commit_interval_ms")
        return self


class ClockConfig(_Model):
    source: Literal["kernel", "trust"] = Field(
        default="kernel",
        description="kernel: ask the kernel whether NTP has synchronised the clock "
        "(adjtimex); trust: assume the wall clock is always right.",
    )


class AccessConfig(_Model):
    source: Literal["file", "platform"] = Field(
        default="file",
        description="file: the local card file (access.cards); platform: the platform's "
        "signed list on {root}/access, kept in access.sqlite3. Switching imports nothing: "
        "a gateway switched to platform denies every card until the first snapshot.",
    )
    cards: Path | None = Field(
        default=None, description="File of allowed card ids; relative to the config file."
    )
    key_ids: frozenset[str] = Field(
        default_factory=frozenset,
        description="Keys (names in commands.public_keys) allowed to write access lists.",
    )


class MetricsConfig(_Model):
    enabled: bool = Field(
        default=True, description="Serve Prometheus metrics (and feed `status --live`)."
    )
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address to listen on; keep the loopback unless a scraper elsewhere "
        "needs it (the endpoint has no authentication).",
    )
    port: int = Field(default=9108, ge=1, le=65535, description="TCP port of /metrics.")
    max_connections: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Connections served at once; beyond it the oldest one that has not sent "
        "its request yet is dropped, so idle sockets cannot keep a scrape out.",
    )
    idle_timeout_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="A connection that has not sent its whole request in this long is closed.",
    )

    @property
    def url(self) -> str:
        """Where ``/metrics`` answers, for local clients such as ``status --live``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"


class Config(_Model):
    gateway: GatewaySection
    mqtt: MqttConfig
    commands: CommandsConfig = Field(default_factory=CommandsConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    devices: list[DeviceConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_device_ids(self) -> Config:
        seen: set[str] = set()
        for device in self.devices:
            for name in (device.id, *door_ids(device)):
                if name in seen:
                    raise ValueError(f"device or door id {name!r} is used twice")
                seen.add(name)
        return self

    @model_validator(mode="after")
    def _one_listener_per_port(self) -> Config:
        seen: dict[str, str] = {}
        for device in self.devices:
            listen = udp_listen(device)
            if listen is None:
                continue
            port = listen.rpartition(":")[2]
            if port in seen:
                raise ValueError(
                    f"devices {seen[port]!r} and {device.id!r} both listen on UDP port {port}: "
                    "give each controller its own listen port"
                )
            seen[port] = device.id
        return self

    @model_validator(mode="after")
    def _permissions_name_real_devices(self) -> Config:
        known = {device.id for device in self.devices} | {self.gateway.id}
        known |= {door for device in self.devices for door in door_ids(device)}
        unknown = sorted(set(self.commands.permissions) - known)
        if unknown:
            raise ValueError(
                "commands.permissions names devices that are not configured: "
                + ", ".join(unknown)
                + f" (devices: {', '.join(sorted(known))})"
            )
        return self

    @model_validator(mode="after")
    def _doors_need_an_access_list(self) -> Config:
        access = self.access
        if (
            access.source == "file"
            and access.cards is None
            and any(d.kind == "door_node" for d in self.devices)
        ):
            raise ValueError("door nodes decide cards locally: set access.cards to the card file")
        if access.source == "platform":
            if self.gateway.timezone is None:
                raise ValueError(
                    "access.source platform judges profiles in local time: set gateway.timezone"
                )
            if not access.key_ids:
                raise ValueError("access.source platform needs access.key_ids")
        unknown = sorted(access.key_ids - self.commands.public_keys.keys())
        if unknown:
            raise ValueError(
                "access.key_ids names keys missing from commands.public_keys: " + ", ".join(unknown)
            )
        return self

    @property
    def topic_root(self) -> str:
        return topic_root(self.gateway.site, self.gateway.id, self.mqtt.topic_root)

    @property
    def response_prefix(self) -> str:
        """Where a verified command's response topic must lie (``{root}`` substituted)."""
        return self.mqtt.response_topic_prefix.format(
            root=self.topic_root, site=self.gateway.site, gateway_id=self.gateway.id
        )

    @property
    def client_id(self) -> str:
        return f"{self.gateway.site}-{self.gateway.id}"


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config and the folder its relative paths are relative to."""

    config: Config
    base_dir: Path
    source: Path | None = None
    """The file it was read from (SIGHUP reads it again); None when built in memory."""

    def path(self, p: Path) -> Path:
        return resolve(self.base_dir, p)

    @property
    def data_dir(self) -> Path:
        return self.path(self.config.gateway.data_dir)


def resolve(base_dir: Path, p: Path) -> Path:
    return p if p.is_absolute() else base_dir / p


def load_config(path: Path) -> LoadedConfig:
    """Read and validate a config file.

    Raises:
        ConfigError: with one line per problem (dotted path, message, YAML line).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    try:
        raw = yaml.safe_load(text)
        lines = _line_index(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: not valid YAML: {problem}{where}"]) from exc
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, raw, lines)) from exc
    return LoadedConfig(config, path.resolve().parent, path.resolve())


def format_errors(exc: ValidationError, raw: Any, lines: dict[str, int]) -> list[str]:
    """One line per error: ``devices[2].transport.baudrate: message (line N)``.

    Input values are not echoed: they may be secrets.
    """
    problems: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        dotted = _dotted_path(error["loc"], raw)
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if error["type"] == "extra_forbidden":
            message = "unknown key (typo?)"
        ctx = error.get("ctx") or {}
        if error["type"] == "union_tag_invalid" and "expected_tags" in ctx:
            message = f"unknown value; valid: {ctx['expected_tags']}"
        line = _nearest_line(dotted, lines)
        suffix = f" (line {line})" if line is not None else ""
        problems.append(f"{dotted or '(top level)'}: {message}{suffix}")
    return problems


def _dotted_path(loc: tuple[int | str, ...], raw: Any) -> str:
    """Turn a pydantic location into ``a.b[2].c``, skipping union tags it inserts."""
    out = ""
    node = raw
    for part in loc:
        if isinstance(part, int) and isinstance(node, list):
            out += f"[{part}]"
            node = node[part] if part < len(node) else None
        elif isinstance(node, dict) and part in node:
            out += f".{part}" if out else str(part)
            node = node[part]
        elif isinstance(node, dict) or node is None:
            # A key the input lacks (a missing field) or a discriminator tag.
            if isinstance(node, dict) and _is_union_tag(part, node):
                continue
            out += f".{part}" if out else str(part)
            node = None
        else:
            continue
    return out


def _is_union_tag(part: int | str, node: dict[str, Any]) -> bool:
    return isinstance(part, str) and part in (node.get("kind"), node.get("type"))


def _line_index(text: str) -> dict[str, int]:
    """Map dotted paths to 1-based YAML line numbers, from the node tree."""
    index: dict[str, int] = {}
    root = yaml.compose(text)

    def walk(node: yaml.Node, path: str) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                index[child] = key.start_mark.line + 1
                walk(value, child)
                index[child] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{path}[{i}]")

    if root is not None:
        walk(root, "")
    return index


def _nearest_line(dotted: str, lines: dict[str, int]) -> int | None:
    path = dotted
    while path:
        if path in lines:
            return lines[path]
        shorter = re.sub(r"(\.?[^.\[]+|\[\d+\])$", "", path)
        if shorter == path:
            break
        path = shorter
    return None
