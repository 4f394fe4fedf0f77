"""Where the broker is and how to reach it: the one home of broker URLs, the topic root and TLS.

Used by the configuration (``mqtt.brokers``, ``mqtt.topic_root``), the uplink
and the operator's ``send-command``, so each of these facts is parsed or built
in one place only.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

MQTT_PORT = 1883
MQTTS_PORT = 8883
DEFAULT_TOPIC_ROOT = "estates/{site}/gateways/{gateway_id}"


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        """Whether the broker is on this machine (plaintext never leaves it)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name other than localhost
            return False


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse ``mqtt://host[:port]`` or ``mqtts://host[:port]`` (port defaults 1883/8883).

    Raises:
        ValueError: another scheme, no host, credentials, a path or query, or a bad port.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"broker URL must start with mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"broker URL has no host: {url!r}")
    if parts.username or parts.password:
        raise ValueError("put no credentials in the broker URL (use a password file)")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"broker URL takes no path or query: {url!r}")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (MQTTS_PORT if tls else MQTT_PORT)
    except ValueError as exc:
        raise ValueError(f"broker URL has a bad port: {url!r}") from exc
    return BrokerUrl(parts.hostname, port, tls)


def topic_root(site: str, gateway_id: str, template: str | None = None) -> str:
    """The gateway's topic root; ``{site}`` and ``{gateway_id}`` in ``template`` are filled in."""
    return (template or DEFAULT_TOPIC_ROOT).format(site=site, gateway_id=gateway_id)


def make_tls_context(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A verifying TLS context: certificate chain and host name always checked.

    ``ca`` None means the system CAs; ``cert`` and ``key`` add a client certificate.
    """
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


class Topics:
    """The topics of one gateway under its root (CONTRACT.md, "Identity and topics")."""

    def __init__(self, root: str) -> None:
        self.readings = f"{root}/readings"
        self.alarms = f"{root}/alarms"
        self.status = f"{root}/status"
        self.commands = f"{root}/commands"
        self.results = f"{root}/commands/results"
        self.access = f"{root}/access"
        self.access_state = f"{root}/access/state"
