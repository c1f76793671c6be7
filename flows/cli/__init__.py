"""The ``loadwise`` command line (``loadwise = "flows.cli:app"``): this module only assembles it.

One module per command group, each with its commands at module level on its own ``app``:

- ``warehouse.py``: ``ingest``, ``export-parquet``, ``sql``
- ``replay.py``: ``replay``, ``compare``
- ``predict.py``: ``predict`` (and the ``--predictor`` option the replay and training commands share)
- ``models.py``: ``train-predictor``, ``fit-estimator``, ``train-router``, ``models``, ``promote``,
  ``rollback``
- ``nightly.py``: ``run``, ``serve``
- ``bench.py``: the ``bench`` group (``ingest``, ``replay``, ``env``, ``router``, ``predictor``)
- ``shared.py``: the option types, option checks and output helpers the groups share

Start-up: these modules import only typer and the standard library at module level; Prefect,
MLflow, DuckDB, torch and the project's packages are imported inside the commands that need them,
so ``loadwise --help`` and ``loadwise sql`` start in well under a second.
"""

from __future__ import annotations

import typer

from warehouse.run_env import apply_run_env

apply_run_env()  # before any command imports Prefect, MLflow or Hugging Face

from flows.cli import bench, models, nightly, predict, replay, warehouse  # noqa: E402

app = typer.Typer(
    name="loadwise",
    help="Learn where and when to route LLM requests across instances, from production traces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
for _group in (warehouse, replay, predict, models, nightly):  # the order of `loadwise --help`
    app.add_typer(_group.app)  # no name: the group's commands are top-level commands
app.add_typer(bench.app, name="bench")

if __name__ == "__main__":
    app()
