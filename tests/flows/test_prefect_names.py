"""Every Prefect flow and task of the project has a name of its own (issue 14).

Before, ``ingest-traces``, ``train-router``, ``register-router`` and ``retrain-length-predictor`` each
named two different tasks or flows (``flows/ingest.py`` vs ``flows/pipeline.py``, ``flows/models.py``
vs ``flows/nightly.py``): a run's task list and the UI's filters mixed them up. Now every task lives
in ``flows/tasks.py``, shared by the standalone flows and the nightly, and no name is used twice.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections import defaultdict

import flows

USER_FLOWS = {
    "ingest-traces",
    "retrain-length-predictor",
    "refit-impact-estimator",
    "train-router",
    "evaluate-routers-distributed",
    "nightly-retrain",
}
"""The flows users see in Prefect (``loadwise ... --flow``, ``loadwise run`` / ``serve``): names kept."""


def _prefect_objects() -> dict[int, tuple[str, str, str]]:
    """Every ``Flow`` / ``Task`` object reachable from a module of ``flows``: id -> (kind, name, module
    that defines its function)."""
    from prefect import Flow, Task

    found: dict[int, tuple[str, str, str]] = {}
    for info in pkgutil.walk_packages(flows.__path__, "flows."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, Flow | Task):
                kind = "flow" if isinstance(value, Flow) else "task"
                found[id(value)] = (kind, value.name, value.fn.__module__)
    return found


def test_every_flow_and_task_name_is_used_once():
    by_name: dict[str, list[str]] = defaultdict(list)
    for kind, name, module in _prefect_objects().values():
        by_name[name].append(f"{kind} in {module}")
    repeated = {name: where for name, where in by_name.items() if len(where) > 1}
    assert repeated == {}


def test_the_flows_keep_their_names_and_every_task_is_in_one_module():
    objects = list(_prefect_objects().values())
    assert {name for kind, name, _ in objects if kind == "flow"} == USER_FLOWS
    assert {module for kind, _, module in objects if kind == "task"} == {"flows.tasks"}
