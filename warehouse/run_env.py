"""Environment for quiet, offline, local runs (see ../shared/STACK.md for why each one matters).

The one definition. Applied with ``setdefault`` (a caller's own values win) by every entry point
before anything imports Prefect, MLflow or Hugging Face: the CLI (``flows/cli/__init__.py``) and
the test suite (``tests/conftest.py``, which therefore imports nothing of
``flows``). Here, in the lowest layer, so that both can; pure stdlib, any layer may import it.
"""

from __future__ import annotations

import os

RUN_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",  # a hub name would otherwise retry for ~47 s before failing
    "MLFLOW_DISABLE_TELEMETRY": "true",  # mlflow accepts only the string "true"
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",  # the default 20 s is tight here
    # Prefect's loggers at INFO: the flows' and tasks' step logs reach the API (the UI's Logs tab);
    # the terminal stays quiet through the console handler's level, not by dropping the logs
    "PREFECT_LOGGING_LEVEL": "INFO",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "DO_NOT_TRACK": "1",  # Prefect's client telemetry and its first-run notice in a terminal
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # not "Creating initial MLflow database tables..." on every new store
    "TOKENIZERS_PARALLELISM": "false",  # no fork warnings from HF tokenizers under Prefect/pytest
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # also transformers' "Loading weights" bars
    "DASK_LOGGING__DISTRIBUTED": "warning",  # not a dozen INFO lines per local cluster start/stop
}


def apply_run_env() -> None:
    """Set each ``RUN_ENV`` variable the process does not set already."""
    for key, value in RUN_ENV.items():
        os.environ.setdefault(key, value)
