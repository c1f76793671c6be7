"""Test-only registry helper: remove routers a test registered (production code never unregisters)."""

from __future__ import annotations

from training.routing import registry


def unregister(name: str) -> None:
    """Remove the entry ``name`` (absent: nothing happens)."""
    registry._REGISTRY.pop(name, None)
