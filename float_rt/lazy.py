"""Package attributes imported on first use (PEP 562), so that a package's light modules (configs,
folder layouts) load without the heavy ones (torch)."""
from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]):
    """A module ``__getattr__`` resolving ``name`` from ``package.<exports[name]>``."""
    def __getattr__(name: str):
        if name in exports:
            return getattr(import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
