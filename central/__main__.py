"""``python -m central``: the platform's command line."""

from central.cli import main_entry

main_entry()
