"""Stdlib modules our libraries import at load time but use only on paths we never take.

Two modules cost the idle daemon 2.9 MB of RSS (issue 8, "Memory": idle
RSS <= 45 MB) for nothing:

- paho-mqtt imports ``urllib.request`` (with ``http.client``, ``email`` and
  about forty modules) only to read proxy settings, and reads them only when
  PySocks is installed, which we do not install.
- pydantic imports ``importlib.metadata`` (``email``, ``zipfile``, ``csv``:
  44 modules) to look for plugins through entry points at the first model.
  The gateway has no pydantic plugin: ``PYDANTIC_DISABLE_PLUGINS`` (pydantic's
  own switch; an operator's value is kept) tells it not to look, and the
  ``entry_points`` it imports by name is a stand-in that loads the real module
  if it is ever called.

``defer`` puts a placeholder in ``sys.modules`` that runs the real module's
code on the first attribute it is asked for, so ``import urllib.request``
keeps working everywhere and code that does use a module gets the real one.
``importlib.util.LazyLoader`` does not serve: under Python 3.11 the next
``import`` statement of the module reads its ``__spec__``, which loads it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

# Module -> names other modules import from it by name at load time (``from m
# import name``): those become stand-ins that load the module when called.
DEFERRED: dict[str, tuple[str, ...]] = {
    "urllib.request": (),
    "importlib.metadata": ("entry_points",),
}
_LOAD_LOCK = threading.Lock()


class _DeferredModule(types.ModuleType):
    """A module whose code runs when an attribute it has not set yet is first read.

    ``__spec__``, ``__name__`` and the other attributes the import system sets
    are plain attributes, so importing the module again does not load it.
    """

    def __getattr__(self, attr: str) -> Any:
        return getattr(_load(self), attr)


def _load(module: types.ModuleType) -> types.ModuleType:
    with _LOAD_LOCK:
        deferred = type(module) is _DeferredModule  # not loaded by another thread meanwhile
        if deferred:
            spec = module.__spec__
            assert spec is not None and spec.loader is not None
            module.__class__ = types.ModuleType
            spec.loader.exec_module(module)  # replaces the stand-ins too
    return module


def _stand_in(module: types.ModuleType, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(_load(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def defer(name: str, callables: tuple[str, ...] = ()) -> None:
    """Register ``name`` so that importing it costs nothing until it is used.

    ``callables`` are functions of the module that may be imported by name
    before any use. A module already imported is left as it is.
    """
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _DeferredModule
    for attr in callables:
        setattr(module, attr, _stand_in(module, attr))
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)  # as the import system would


def defer_unused() -> None:
    """Defer every module of ``DEFERRED`` and turn pydantic's plugin search off."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    for name, callables in DEFERRED.items():
        defer(name, callables)
