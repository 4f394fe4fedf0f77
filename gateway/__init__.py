"""The estate gateway.

Importing the package defers the stdlib modules its libraries load but never
use (``gateway.lazy_imports``), before any of those libraries is imported.
"""

from gateway.lazy_imports import defer_unused

defer_unused()
