"""Environment for quiet, offline, local runs: the CLI's name for ``warehouse.run_env`` (defined there,
in the lowest layer, so that the test suite sets it without importing ``flows``).
"""

from __future__ import annotations

from warehouse.run_env import RUN_ENV, apply_run_env

__all__ = ["RUN_ENV", "apply_run_env"]
