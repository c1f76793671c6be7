"""Routers: the one registry and every built-in router (baselines, llm-d scorers, latency-aware rules,
admission control), plus the replay-speed benchmark.

``get_router(name, ctx)`` builds any registered router; ``router_names()`` lists them. The Router
protocol and the frozen views routers decide on are the simulator's interface
(``training.simulator.interface``).
"""

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
    "RouterContext",
    "RouterEntry",
    "get_entry",
    "get_router",
    "register",
    "register_lazy",
    "router_names",
]
