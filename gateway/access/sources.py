"""Which access list the doors decide with (``access.source``), and with what time.

``file``: the local card file (``drivers.access_file``), version ``None``.
``platform``: the platform's signed list in ``access.sqlite3``
(``gateway.access.store``). Switching from one to the other imports nothing:
a gateway switched to ``platform`` denies every card until the first snapshot.
"""

from __future__ import annotations

from datetime import UTC

from drivers.access_file import FileAccessList
from drivers.access_rules import DoorAccess, TrustedTime
from gateway.config import LoadedConfig


def file_door_access(loaded: LoadedConfig, time: TrustedTime) -> DoorAccess:
    """The doors' access from the local card file of the config."""
    config = loaded.config
    cards = config.access.cards
    path = loaded.path(cards) if cards is not None else loaded.data_dir / "cards.txt"
    tz = config.gateway.tz
    # A file has no profiles, so its decisions never need the zone; its dates
    # without an offset use gateway.timezone, else the system's zone as before.
    return DoorAccess(FileAccessList(path, tz=tz), time, tz or UTC)
