"""Every module of the simulator and routing packages imports first, on its own, in a fresh interpreter.

The two packages reference each other (the simulator consumes the Router protocol and predictors;
the routers use the simulator's latency profiles); a module-level import in the wrong place makes
the result depend on which module a caller happens to import first.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import training.routing
import training.simulator


def _modules() -> list[str]:
    out = []
    for pkg in (training.simulator, training.routing):
        out.append(pkg.__name__)
        out.extend(f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__))
    return out


def test_each_module_imports_first():
    script = (
        "import importlib, subprocess, sys\n"
        "failed = []\n"
        "for m in sys.argv[1:]:\n"
        "    r = subprocess.run([sys.executable, '-c', f'import {m}'], capture_output=True, text=True)\n"
        "    if r.returncode:\n"
        "        failed.append((m, r.stderr.strip().splitlines()[-1]))\n"
        "print(failed)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *_modules()], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "[]", out.stdout
