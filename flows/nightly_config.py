"""``NightlyConfig``: every setting of one nightly run, checked whole when it is read.

Who calls this: ``loadwise run --config`` / ``loadwise serve --config`` (``NightlyConfig.from_file``),
the ``nightly-retrain`` flow (Prefect validates its ``config`` parameter again when a deployment
runs) and tests, once per run. Importing it does not import Prefect, so a bad config fails fast.

**Checked before any work.** Validation covers every value the run uses, the way the run uses it:
the ``router`` table is validated as the ``RouterTrainConfig`` the run builds from it
(``router_train_settings``: seed, workload, profile, rate and instances filled in), ``predictor`` /
``estimator`` as ``PredictorConfig`` / ``EstimatorConfig``, ``profile`` against the known profiles,
``where`` as one SQL condition bound against the warehouse schema (``warehouse.filters``),
``task_runner`` against its accepted forms (``flows.runners``), seeds non-negative and distinct, and
at least ``gate.min_seeds`` evaluation seeds. A config that fails any of these raises a pydantic
``ValidationError`` (the CLI prints ``flows.config_files.error_line``: one line, exit 2) before the
run ingests, trains or writes a row in ``ops.nightly_runs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from eval.gate import GateConfig
from features.drift import DriftThresholds

ROUTER_FIXED = frozenset({"workload", "warehouse", "where", "profile", "rate_rps", "num_instances"})
"""``RouterTrainConfig`` fields the nightly run sets itself (``NightlyConfig.router`` may not)."""

PLACEHOLDER_RATE_RPS = 12.0
"""Stands in for the profile's default rate while validating (any positive rate validates alike)."""

Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
"""A seed: ``[0, 2**32)`` (``training.rl.config.MAX_SEED``; NumPy's legacy seeding takes no more)."""


class NightlyConfig(BaseModel):
    """Every setting of one nightly run (``loadwise run --config FILE``: TOML, YAML or JSON).

    Units: requests, req/s, environment steps. ``predictor`` / ``estimator`` / ``router`` are passed
    to ``PredictorConfig`` / ``EstimatorConfig`` / ``RouterTrainConfig`` (their fields, validated
    here as the run will build them); ``router`` may not set the workload, profile or rate: the
    nightly run decides them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    warehouse: str | None = Field(default=None, description="DuckDB file (default: the data home's)")
    data_dir: str | None = Field(default=None, description="trace folder (default: ../shared/data)")
    synthetic_rows: int = Field(default=20_000, ge=100, description="rows when no real traces exist")
    seed: Seed = 0
    where: str = Field(
        default="format = 'azure'",
        description="SQL filter over marts.requests: the production trace the router learns from, is "
        "judged on, and whose drift is checked",
    )
    profile: str | None = Field(
        default=None, description="GPU profile (default: eval.scheduled.pick_profile)"
    )
    rate_rps: float | None = Field(default=None, gt=0, description="default: the profile's loaded rate")
    num_instances: int = Field(default=4, ge=1)
    estimator: dict[str, Any] = Field(default_factory=dict)
    predictor: dict[str, Any] = Field(default_factory=dict)
    train_predictor: bool = True
    router: dict[str, Any] = Field(
        default_factory=lambda: {"total_timesteps": 20_000, "checkpoint_every_steps": 100_000}
    )
    eval_seeds: tuple[Seed, ...] = Field(default=(0, 1, 2, 3, 4), min_length=1)
    eval_requests: int = Field(default=2000, ge=10, description="requests per held-out window")
    router_seeds: tuple[Seed, ...] | None = Field(
        default=None,
        min_length=1,
        description="train one candidate per seed (in parallel on the task runner) and keep the best by "
        "validation on training windows; default: one, the run's seed",
    )
    task_runner: str = Field(
        default="threads",
        description="where submitted work runs (router candidates, evaluation replays): 'threads', "
        "'dask' (a local cluster) or a Dask scheduler address tcp://host:8786 (flows.distributed)",
    )
    workers: int = Field(default=2, ge=1, description="threads / local Dask worker processes")
    drift: DriftThresholds = DriftThresholds()
    gate: GateConfig = GateConfig()
    retrain: Literal["changed", "on-drift"] = Field(
        default="changed",
        description="'changed': retrain every step whose inputs changed (nightly); 'on-drift': only when "
        "the new window drifted or no champion exists (the frequent drift-watch schedule)",
    )
    force: bool = Field(default=False, description="ignore the step caches (retrain everything)")

    @field_validator("router")
    @classmethod
    def _router_setting_is_the_runs(cls, router: dict[str, Any]) -> dict[str, Any]:
        clash = ROUTER_FIXED & set(router)
        if clash:
            raise ValueError(f"router config may not set {sorted(clash)}: the nightly config decides them")
        return router

    @field_validator("data_dir")
    @classmethod
    def _data_dir_exists(cls, data_dir: str | None) -> str | None:
        """A given folder must exist: a missing one used to mean "no traces", and the run silently
        trained on a synthetic workload instead (the default folder may be absent: that is the
        documented synthetic fallback)."""
        if data_dir is not None and not Path(data_dir).expanduser().is_dir():
            raise ValueError(f"{data_dir!r} is not a folder (the trace folder to ingest from)")
        return data_dir

    @field_validator("eval_seeds", "router_seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: tuple[int, ...] | None, info: Any) -> tuple[int, ...] | None:
        """A repeated seed replays (or trains) the same window twice: it adds no evidence, and in
        ``eval_seeds`` it narrows the gate's interval (``[0, 0]`` gave a zero-width one)."""
        if seeds is not None and len(set(seeds)) != len(seeds):
            repeated = sorted({s for s in seeds if seeds.count(s) > 1})
            raise ValueError(f"seeds must be distinct; repeated: {repeated}")
        return seeds

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, profile: str | None) -> str | None:
        from training.simulator.profiles import PROFILE_NAMES

        if profile is not None and profile not in PROFILE_NAMES:
            raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILE_NAMES)}")
        return profile

    @field_validator("where")
    @classmethod
    def _where_is_a_condition(cls, where: str) -> str:
        from warehouse.filters import check_where

        return check_where(where)

    @field_validator("task_runner")
    @classmethod
    def _known_task_runner(cls, spec: str) -> str:
        from flows.runners import check_task_runner

        return check_task_runner(spec)

    @model_validator(mode="after")
    def _steps_accept_their_settings(self) -> NightlyConfig:
        """Each step's config, built as the run builds it, validates (else the step would fail mid-run)."""
        from training.impact.fit import EstimatorConfig
        from training.length.config import PredictorConfig
        from training.rl.config import RouterTrainConfig
        from training.simulator.profiles import PAPER_PROFILE

        if len(self.eval_seeds) < self.gate.min_seeds:
            raise ValueError(
                f"eval_seeds has {len(self.eval_seeds)} seed(s), fewer than gate.min_seeds = "
                f"{self.gate.min_seeds}: the gate would refuse every challenger"
            )
        profile = self.profile or PAPER_PROFILE  # the run picks one of the known profiles when unset
        rate = self.rate_rps or PLACEHOLDER_RATE_RPS
        router = router_train_settings(self, self.warehouse, profile, rate)
        candidates = [{**router, "seed": s} for s in self.router_seeds or ()]  # one per router seed
        checks: list[tuple[str, type[BaseModel], list[dict[str, Any]]]] = [
            ("router", RouterTrainConfig, [router, *candidates]),
            ("predictor", PredictorConfig, [dict(self.predictor)]),
            ("estimator", EstimatorConfig, [{"profile": profile, **self.estimator}]),
        ]
        for name, model, configs in checks:
            for config in configs:
                try:
                    model.model_validate(config)
                except ValidationError as exc:
                    from flows.config_files import validation_message

                    raise ValueError(f"{name}: {validation_message(exc)}") from None
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> NightlyConfig:
        """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file (unknown keys are an error).

        Raises ``flows.config_files.ConfigError`` (unreadable or malformed file: one line with the
        position) or pydantic's ``ValidationError`` (a value the run would fail on)."""
        from flows.config_files import read_config_file

        return cls.model_validate(read_config_file(path))


def router_train_settings(
    cfg: NightlyConfig, warehouse: str | None, profile: str, rate: float
) -> dict[str, Any]:
    """The ``RouterTrainConfig`` settings of a nightly run: the config's ``router`` table with the
    run's seed (unless the table sets one), warehouse trace, profile, rate and cluster size.

    Who calls this: the flow (``flows.nightly``) with the resolved warehouse, profile and rate, and
    ``NightlyConfig``'s validation with stand-ins for those it resolves at run time."""
    return {
        "seed": cfg.seed,
        **cfg.router,
        "workload": "warehouse",
        "warehouse": warehouse,
        "where": cfg.where,
        "profile": profile,
        "rate_rps": rate,
        "num_instances": cfg.num_instances,
    }
