"""Backends by name: the built-in ones, and those third-party packages add by entry point.

A package adds a backend by declaring, in its ``pyproject.toml``::

    [project.entry-points."bwc_sim.backends"]
    mybench = "mypackage.bench:MyBackend"

where ``MyBackend`` subclasses ``device.backends.HardwareBackend``. Built-in names win over
entry points of the same name. Modules are imported only when their backend is asked for, so
``import device`` needs neither pyserial nor any plug-in.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Final

from device.backends.base import HardwareBackend
from device.errors import HardwareError

ENTRY_POINT_GROUP: Final = "bwc_sim.backends"

BUILT_IN: Final[dict[str, str]] = {
    "sim": "device.backends.sim:SimBackend",
    "serial": "device.backends.serial:SerialBackend",
}


def _plugins() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_backends() -> list[str]:
    """Every backend name that can be asked for, built-in first."""
    plugins = [name for name in sorted(_plugins()) if name not in BUILT_IN]
    return [*BUILT_IN, *plugins]


def backend_class(name: str) -> type[HardwareBackend]:
    """The class registered as ``name``; ``HardwareError`` when there is none or it is broken."""
    target = BUILT_IN.get(name) or _plugins().get(name)
    if target is None:
        raise HardwareError(
            f"no hardware backend named {name!r}; available: {', '.join(available_backends())}"
        )
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attribute) if attribute else module
    except (ImportError, AttributeError) as exc:
        raise HardwareError(
            f"hardware backend {name!r} ({target}) cannot be loaded: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, HardwareBackend)):
        raise HardwareError(
            f"hardware backend {name!r} ({target}) is not a device.backends.HardwareBackend"
        )
    return cls


def open_backend(name: str, **options: Any) -> HardwareBackend:
    """A new, not yet opened, backend ``name`` built with ``options`` (e.g. ``port=URL``)."""
    cls = backend_class(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise HardwareError(f"hardware backend {name!r}: bad options {options}: {exc}") from exc
