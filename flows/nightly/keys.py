"""The nightly flow's step caches: explicit keys over each step's inputs, results under the data home.

Who calls this: the step modules of ``flows.nightly``, a few times per run. A step's key is a
SHA-256 of its inputs: the content hashes of the warehouse files it reads, its resolved config, the
source code it runs (``STEP_SOURCES``, ``flows.registry.code_fingerprint``), the model store
(``flows.registry.store_key``: the default store as its path in the data home, so a copied home
keeps its keys) and,
for the evaluation, the champion it replays. A shared task of ``flows.tasks`` (which caches nothing
by itself) becomes a cached step with ``cached``: its result is stored under
``$LOADWISE_HOME/nightly/cache/<key>``, so a second run with the same inputs is a cache hit, and
``force`` refreshes it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from flows.registry import code_fingerprint, store_key
from warehouse.settings import loadwise_home

if TYPE_CHECKING:
    from prefect import Task

P = ParamSpec("P")
R = TypeVar("R")

STEP_SOURCES = {
    "estimator": ("training/impact", "training/simulator", "flows/models"),
    "predictor": ("training/length", "warehouse", "flows/models"),
    "router": ("training", "eval", "warehouse"),
}
"""The source folders each step's result depends on: their code is part of its cache key (changed
training code retrains; a change to, say, the report renderer in ``flows`` does not). The estimator
and predictor steps are one task each that trains, registers and gates, so the registration and
gate code (``flows/models``) is theirs too: a changed gate decides again. The router's cached
training does not register; its ``register-router`` step's key adds ``flows/models``' code."""

FINGERPRINT_PREFIX = "nightly:"
"""Router versions registered by this flow carry ``loadwise.data_fingerprint = nightly:<train key>``."""


def step_key(step: str, **inputs: object) -> str:
    """The cache key of ``step`` for ``inputs`` (JSON-able; order-free). A path inside the data home
    (e.g. the default warehouse in a router config) counts as its path relative to the home
    (``home_relative``), so a copied or moved home keeps its keys."""
    text = json.dumps(home_relative({"step": step, **inputs}), sort_keys=True, default=str)
    return f"{step}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def home_relative(value: object, home: Path | None = None) -> object:
    """``value`` with every string that is an absolute path inside ``home`` (default: the data home)
    replaced by ``home:<relative path>``; dicts, lists and tuples walked, anything else unchanged."""
    root = home or loadwise_home()
    if isinstance(value, str | Path) and Path(value).is_absolute() and Path(value).is_relative_to(root):
        return f"home:{Path(value).relative_to(root).as_posix()}"
    if isinstance(value, dict):
        return {k: home_relative(v, root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [home_relative(v, root) for v in value]
    return value


@dataclass(frozen=True)
class StepCache:
    """Where the run's cached step results live, and whether to refresh them (``force``)."""

    folder: Path
    tracking_uri: str
    force: bool

    def inputs(self, step: str) -> dict[str, str]:
        """What every key of ``step`` includes: its source code and the model store."""
        return {"code": code_fingerprint(STEP_SOURCES[step]), "tracking_uri": store_key(self.tracking_uri)}

    def cached(self, task_: Task[P, R], key: str) -> Task[P, R]:
        """``task_`` cached on ``key``: its result persisted under ``folder`` and reused by a later
        call with the same key (a ``Cached`` state), unless ``force``."""
        from prefect.cache_policies import CachePolicy

        keyed = task_.with_options(
            cache_policy=CachePolicy.from_cache_key_fn(lambda context, parameters: key),
            persist_result=True,
            result_storage=self.folder,
        )
        return keyed.with_options(refresh_cache=True) if self.force else keyed
