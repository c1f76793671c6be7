"""Routers: the protocol and frozen views (``base``), length predictors, and the one registry.

``get_router(name, ctx)`` builds any registered router; ``router_names()`` lists them.
"""

from training.routing.base import DELAY, ClusterView, InstanceView, RequestView, Router
from training.routing.registry import (
    RouterContext,
    RouterEntry,
    get_entry,
    get_router,
    register,
    register_lazy,
    router_names,
)

__all__ = [
    "DELAY",
    "ClusterView",
    "InstanceView",
    "RequestView",
    "Router",
    "RouterContext",
    "RouterEntry",
    "get_entry",
    "get_router",
    "register",
    "register_lazy",
    "router_names",
]
