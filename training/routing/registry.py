"""The one router registry: every router (baselines, paper heuristics, the learned one) is an entry here.

Who calls this: the evaluation harness and the CLI (``get_router(name, ctx)`` once per replay), the
contract test suite (``router_names()``, parametrised over every entry), and modules that define
routers (``register`` at import time). Adding a router = one ``register`` (or ``register_lazy``)
call; the contract suite then tests it for free.

Entries carry metadata the harness needs:

- ``oracle``: the router reads true output lengths (the harness injects ``OraclePredictor``; reports
  label it ORACLE). Every other router is replayed with the configured, non-oracle predictor.
- ``needs_predictions``: the router reads ``predicted_output_tokens`` / ``outstanding_decode_tokens``
  (so the predictor matters for it).
- ``needs_latency_model``: the router estimates times with ``RouterContext.latency_model``.

Heavy routers (the learned RL router imports torch / stable-baselines3) are registered *lazily*
by import path (``register_lazy("rl", "training.rl.router:make_router")``): nothing heavy is
imported until ``get_router`` asks for that name.

The built-in routers are defined in ``baselines``, ``llmd``, ``latency_aware`` and ``admission`` (the
``<name>+hold`` admission-control wrappers) and registered
when this module first needs them (``_load_builtins``), so importing the registry alone is cheap
and free of import cycles.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from training.simulator.interface import Router
from training.simulator.latency import LatencyModel

DEFAULT_LENGTH_THRESHOLD_TOKENS = 256.0
"""Short/long output boundary when the context gives none (about 5 s of decode on the paper's V100)."""


@dataclass(frozen=True)
class RouterContext:
    """What a router factory may use to configure itself (never live simulator state).

    Attributes:
        num_instances: instances in the cluster (``route`` returns an index below it).
        latency_model: the profile's latency model, for routers that estimate times; ``None`` lets
            them fall back to the paper's linear V100 constants (``v100-llama2-7b-paper``).
        length_threshold_tokens: predicted output length (tokens) separating "short" from "long"
            requests (``dedicated_small_large``); the harness sets it so that about half of the
            workload's training requests fall on each side (``eval.harness.split_threshold_tokens``).
        block_size: KV-cache block size in tokens (to turn ``kv_used_blocks`` into context tokens).
        max_batch_size: the instances' running-batch limit (for capacity estimates).
        options: free-form, router-specific settings (e.g. gie weights), read by factories.
    """

    num_instances: int
    latency_model: LatencyModel | None = None
    length_threshold_tokens: float = DEFAULT_LENGTH_THRESHOLD_TOKENS
    block_size: int = 16
    max_batch_size: int = 256
    options: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_instances < 1:
            raise ValueError(f"num_instances must be >= 1, got {self.num_instances}")
        if self.length_threshold_tokens <= 0:
            raise ValueError(f"length_threshold_tokens must be > 0, got {self.length_threshold_tokens}")


RouterFactory = Callable[[RouterContext], Router]


@dataclass(frozen=True)
class RouterEntry:
    """One registered router and what the harness must know about it."""

    name: str
    description: str
    oracle: bool = False
    needs_predictions: bool = False
    needs_latency_model: bool = False
    mirrors: str = ""
    """The production system or paper the router mirrors (for docs and reports)."""
    admission: bool = False
    """The router holds requests (DELAY) while instances still accept, until one has room
    (``training.routing.admission``); every other router places a request whenever all instances
    accept."""
    factory: RouterFactory | None = None
    import_path: str | None = None
    """``"module:attr"`` of the factory, for lazily registered (heavy) routers."""
    required_options: tuple[str, ...] = ()
    """``RouterContext.options`` keys the factory cannot work without (the learned router's
    ``policy_dir``). Such routers are listed by ``router_names`` only on request, so "every router"
    (the contract suite, ``--routers all``) means every router that runs without options."""

    @property
    def is_lazy(self) -> bool:
        return self.factory is None

    @property
    def module(self) -> str:
        """The module that defines the factory (for lazy entries, the one its import path names)."""
        if self.factory is not None:
            return str(getattr(self.factory, "__module__", ""))
        return (self.import_path or "").partition(":")[0]

    def load_factory(self) -> RouterFactory:
        if self.factory is not None:
            return self.factory
        assert self.import_path is not None
        module_name, _, attr = self.import_path.partition(":")
        if not module_name or not attr:
            raise ValueError(
                f"router {self.name!r}: import path must be 'module:attr', got {self.import_path!r}"
            )
        factory = getattr(importlib.import_module(module_name), attr)
        if not callable(factory):
            raise TypeError(f"router {self.name!r}: {self.import_path} is not callable")
        return factory


_REGISTRY: dict[str, RouterEntry] = {}
_BUILTINS_LOADED = False
_BUILTIN_MODULES = (
    "training.routing.baselines",
    "training.routing.llmd",
    "training.routing.latency_aware",
    "training.routing.admission",  # after the others: it wraps their entries
)


def _add(entry: RouterEntry) -> None:
    if not entry.name or entry.name != entry.name.strip() or "," in entry.name:
        raise ValueError(f"invalid router name {entry.name!r} (non-empty, no spaces at the ends, no commas)")
    if entry.name in _REGISTRY:
        raise ValueError(f"router {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry


def register(
    name: str,
    factory: RouterFactory,
    *,
    description: str,
    oracle: bool = False,
    needs_predictions: bool = False,
    needs_latency_model: bool = False,
    mirrors: str = "",
    admission: bool = False,
) -> RouterEntry:
    """Register ``factory`` under ``name``. Raises ``ValueError`` if the name is taken."""
    entry = RouterEntry(
        name=name,
        description=description,
        oracle=oracle,
        needs_predictions=needs_predictions or oracle,
        needs_latency_model=needs_latency_model,
        mirrors=mirrors,
        admission=admission,
        factory=factory,
    )
    _add(entry)
    return entry


def register_lazy(
    name: str,
    import_path: str,
    *,
    description: str,
    oracle: bool = False,
    needs_predictions: bool = False,
    needs_latency_model: bool = False,
    mirrors: str = "",
    required_options: tuple[str, ...] = (),
) -> RouterEntry:
    """Register a router whose factory is imported (``"module:attr"``) only when first requested."""
    entry = RouterEntry(
        name=name,
        description=description,
        oracle=oracle,
        needs_predictions=needs_predictions or oracle,
        needs_latency_model=needs_latency_model,
        mirrors=mirrors,
        import_path=import_path,
        required_options=tuple(required_options),
    )
    _add(entry)
    return entry


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    if "rl" not in _REGISTRY:
        register_lazy(
            "rl",
            "training.rl.router:make_router",
            description="learned RL router (Double DQN / MaskablePPO policy exported to numpy); "
            "needs options['policy_dir']",
            needs_predictions=True,
            needs_latency_model=True,
            mirrors="paper's workload-guided RL router (Jain et al., arXiv 2408.13510)",
            required_options=("policy_dir",),
        )
    if "lookahead" not in _REGISTRY:  # slow, teacher-only: needs the replay state (issue 17)
        register_lazy(
            "lookahead",
            "training.routing.lookahead:make_router",
            description="lookahead teacher: forks the replay per candidate, rollouts under a base "
            "router with sampled futures; run with lookahead.simulate_with_lookahead",
            needs_predictions=True,
            needs_latency_model=True,
            required_options=("lookahead",),
        )


def _entries() -> list[RouterEntry]:
    """Every entry: the built-ins in ``_BUILTIN_MODULES`` order, then the others in registration order.

    A built-in module registers its routers when it is first imported, and anything may import one
    before the registry loads them all (the RL observation builder imports ``latency_aware``), so
    the registration order depends on what a process imported first; this order does not."""
    _load_builtins()
    rank = {m: i for i, m in enumerate(_BUILTIN_MODULES)}
    return sorted(_REGISTRY.values(), key=lambda e: rank.get(e.module, len(rank)))


def router_names(*, include_oracle: bool = True, include_configured: bool = False) -> list[str]:
    """Registered names: the built-ins in a fixed order (``_entries``), then the others in
    registration order.

    ``include_configured``: also list routers with ``required_options`` (the learned ``rl``, which
    needs a policy folder); they are left out by default.
    """
    return [
        e.name
        for e in _entries()
        if (include_oracle or not e.oracle) and (include_configured or not e.required_options)
    ]


def get_entry(name: str) -> RouterEntry:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        names = ", ".join(e.name for e in _entries())
        raise KeyError(f"unknown router {name!r}; registered: {names}") from None


def get_router(name: str, ctx: RouterContext) -> Router:
    """A fresh router instance for one replay (call ``reset`` before routing)."""
    entry = get_entry(name)
    missing = [k for k in entry.required_options if k not in ctx.options]
    if missing:
        raise KeyError(f"router {name!r} needs RouterContext.options {missing} (e.g. context_options=...)")
    router = entry.load_factory()(ctx)
    if not isinstance(router, Router):
        raise TypeError(f"router {name!r}: factory returned {type(router).__name__}, not a Router")
    return router
