"""The layers of the project, checked on every module: no import runs against the documented order.

Who runs this: the default suite. Three checks:

1. Every ``import x`` / ``from x import y`` (module level, function level and under ``TYPE_CHECKING``,
   relative ones resolved) of every module of the five packages goes down the order or stays in its
   own package: ``warehouse -> features -> training -> eval -> flows`` at the top level (a package
   imports only itself and packages before it), within ``training`` the subpackages in
   ``TRAINING_ORDER``, within ``training.rl`` its modules in ``RL_ORDER``. The serving modules logged
   as MLflow models' code import nothing of the project at all. (A router registered lazily by an
   import-path *string*, ``register_lazy("rl", "training.rl.router:make_router")``, is not an import:
   the registry loads it only when asked for by name.)
2. The simulator and the routers, with the reference length predictors and the synthetic benchmark
   trace they use, import no I/O or ML framework (a fresh interpreter).
3. Each module of the simulator, routing, workloads and (torch-free) RL modules imports first, on its
   own, in a fresh interpreter: a module-level import in the wrong place would make the result depend
   on which module a caller happens to import first.

The order is written down in docs/architecture.md ("Layers") as well.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ORDER = ("warehouse", "features", "training", "eval", "flows")
"""Top-level packages, lowest first: each may import only itself and the packages before it."""

TRAINING_ORDER = ("simulator", "length", "workloads", "routing", "impact", "rl")
"""Subpackages of ``training``, lowest first: ``simulator`` (the replay and its interface: the Router
and LengthPredictor protocols, the frozen views), ``length`` (output-length predictors), ``workloads``
(the requests replays and RL episodes are made of), ``routing`` (the router registry and built-in
routers), ``impact`` (the workload impact estimator), ``rl`` (env, rewards, training, learned router)."""

RL_ORDER = (
    "policy_serving",
    "rewards",
    "observation",
    "kernel",
    "env",
    "config",
    "algos",
    "train",
    "distill",
    "router",
    "bench",
)
"""Modules of ``training.rl``, lowest first (each imports only those before it)."""

SELF_CONTAINED = ("training.rl.policy_serving", "training.length.serving", "training.impact.serving")
"""Copied as the registered models' code (MLflow models from code): they import nothing of the project."""

HEAVY = ("torch", "pandas", "duckdb", "prefect", "mlflow", "transformers", "pydantic", "gymnasium")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in ORDER for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module or ``module.attr``) of every import statement anywhere in the module."""
    is_package = path.name == "__init__.py"
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            out.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
    return out


def _place(order: tuple[str, ...], name: str) -> int:
    """``name``'s rank in ``order``; one past the end when it has none (so nothing listed may import
    it; the first test names it)."""
    return order.index(name) if name in order else len(order)


def _rank(module: str) -> tuple[int, int, int]:
    """(top-level rank, training subpackage rank, rl module rank); -1 where the level does not apply."""
    parts = module.split(".")
    top = ORDER.index(parts[0])
    sub = _place(TRAINING_ORDER, parts[1]) if parts[0] == "training" and len(parts) > 1 else -1
    rl = _place(RL_ORDER, parts[2]) if parts[:2] == ["training", "rl"] and len(parts) > 2 else -1
    return top, sub, rl


def _allowed(importer: str, target: str) -> bool:
    (top, sub, rl), (t_top, t_sub, t_rl) = _rank(importer), _rank(target)
    if t_top != top:
        return t_top < top
    if top != ORDER.index("training") or t_sub == -1:
        return True
    if t_sub != sub:
        return t_sub < sub
    if sub != TRAINING_ORDER.index("rl") or t_rl == -1:
        return True
    return t_rl <= rl


def _project_target(target: str, modules: dict[str, Path]) -> str | None:
    """The project module ``target`` names (``pkg.mod.attr`` -> ``pkg.mod``), else None."""
    if target.split(".")[0] not in ORDER:
        return None
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def test_every_subpackage_and_rl_module_has_a_place_in_the_order():
    training = {p.name for p in (ROOT / "training").iterdir() if (p / "__init__.py").is_file()}
    assert training == set(TRAINING_ORDER)
    rl = {p.stem for p in (ROOT / "training" / "rl").glob("*.py") if p.stem != "__init__"}
    assert rl == set(RL_ORDER)
    stray = [p.name for p in (ROOT / "training").glob("*.py") if p.name != "__init__.py"]
    assert stray == [], "a module directly under training/ has no place in TRAINING_ORDER"


def test_no_import_runs_against_the_order():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        for line, raw in _imports(name, path):
            target = _project_target(raw, modules)
            if target is None or target == name:
                continue
            if name in SELF_CONTAINED:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} (must stay self-contained)")
            elif not _allowed(name, target):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert bad == [], "imports against the documented order:\n" + "\n".join(sorted(set(bad)))


def test_the_check_sees_an_arrow_against_the_order(tmp_path):
    """The walker itself: relative, function-level and TYPE_CHECKING imports count."""
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from training.rl.env import RouterEnv\n"
        "def f():\n    from ..routing import registry\n    import eval.harness\n"
    )
    found = [t for _, t in _imports("training.simulator.m", src)]
    assert "training.rl.env" in found
    assert "training.routing.registry" in found
    assert "eval.harness" in found
    assert not _allowed("training.simulator.engine", "training.routing.registry")
    assert not _allowed("features.drift", "training.simulator.request")
    assert not _allowed("training.rl.env", "training.rl.train")
    assert _allowed("training.rl.train", "training.rl.env")
    assert _allowed("eval.harness", "training.routing.registry")


def _pure_modules() -> list[str]:
    names = [
        m
        for m in _modules()
        if m.startswith(("training.simulator", "training.routing"))
        or m in ("training.length.baselines", "training.workloads.synthetic")
    ]
    return sorted(names)


def test_simulator_and_routing_import_no_heavy_frameworks():
    code = (
        "import importlib, json, sys\n"
        f"for m in {_pure_modules()!r}: importlib.import_module(m)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _imports_first(module: str) -> str | None:
    r = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    return f"{module}: {r.stderr.strip().splitlines()[-1]}" if r.returncode else None


def test_each_module_imports_first_on_its_own():
    heavy_rl = ("training.rl.algos", "training.rl.train")  # torch / stable-baselines3: seconds each
    names = [
        m
        for m in _modules()
        if m.startswith(("training.simulator", "training.routing", "training.workloads", "training.rl"))
        and m not in heavy_rl
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [f for f in pool.map(_imports_first, sorted(names)) if f]
    assert failed == []
