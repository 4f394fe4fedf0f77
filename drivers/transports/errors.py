"""The transport layer's one error family."""


class TransportError(Exception):
    """The port or bus failed: gone, timed out, or refused to open."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class TransportTimeoutError(TransportError):
    """No (complete) answer within the request timeout."""
