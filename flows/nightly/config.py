"""``NightlyConfig``: every setting of one nightly run, checked whole when it is read.

Who calls this: ``loadwise run --config`` / ``loadwise serve --config`` (``NightlyConfig.from_file``),
the ``nightly-retrain`` flow (Prefect validates its ``config`` parameter again when a deployment
runs) and tests, once per run. Importing it does not import Prefect, so a bad config fails fast.

**Typed sub-configs.** ``[router]`` is a ``RouterSettings``: the ``RouterTrainConfig`` fields a user
may set, without the ones the run decides (``ROUTER_FIXED``: workload, warehouse, trace filter,
profile, rate, instances), with the nightly's own defaults (20,000 steps, a checkpoint every 100,000)
and ``seed`` defaulting to the run's. ``[estimator]`` is an ``EstimatorSettings``: ``EstimatorConfig``
with ``profile`` defaulting to the run's. ``[predictor]`` is a ``PredictorConfig``. The first two are
built from the training configs' own field definitions (``_settable``), so a field added there is
settable here with the same type, default, bounds and description, and nothing is written twice.

**Checked before any work.** Validation covers every value the run uses, the way the run uses it:
the router settings are validated as the ``RouterTrainConfig`` of each candidate the run trains
(``router_configs``), the estimator's as the ``EstimatorConfig`` it fits (``estimator_config``),
``profile`` against the known profiles, ``where`` as one SQL condition bound against the warehouse
schema (``warehouse.filters``), ``task_runner`` against its accepted forms (``flows.task_runners``), seeds
non-negative and distinct, and at least ``gate.min_seeds`` evaluation seeds. A config that fails any
of these raises a pydantic ``ValidationError`` (the CLI prints ``flows.config_files.error_line``: one
line, exit 2) before the run ingests, trains or writes a row in ``ops.nightly_runs``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from eval.gate import GateConfig
from features.drift import DriftThresholds
from training.impact.fit import EstimatorConfig
from training.length.config import PredictorConfig
from training.rl.config import RouterTrainConfig
from training.workloads.episodes import WAREHOUSE_WORKLOAD

ROUTER_FIXED = ("workload", "warehouse", "where", "profile", "rate_rps", "num_instances", "predictor")
"""``RouterTrainConfig`` fields the nightly run sets itself (``[router]`` may not)."""

PLACEHOLDER_RATE_RPS = 12.0
"""Stands in for the profile's default rate while validating (any positive rate validates alike)."""

Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
"""A seed: ``[0, 2**32)`` (``training.rl.config.MAX_SEED``; NumPy's legacy seeding takes no more)."""

_STRICT = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class _RouterSettings(BaseModel):
    """The fields of ``[router]`` whose default or meaning differ from ``RouterTrainConfig``'s; the
    others are added by ``_settable`` (see ``RouterSettings``)."""

    model_config = _STRICT

    seed: Seed | None = Field(default=None, description="training seed (default: the run's seed)")
    total_timesteps: int = Field(default=20_000, ge=1, description="environment steps (routing decisions)")
    checkpoint_every_steps: int = Field(default=100_000, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _setting_is_the_runs(cls, data: Any) -> Any:
        clash = sorted(set(ROUTER_FIXED) & set(data)) if isinstance(data, dict) else []
        if clash:
            raise ValueError(f"may not set {clash}: the nightly config decides them")
        return data

    def train_config(
        self,
        seed: int,
        *,
        warehouse: str | None,
        where: str,
        profile: str,
        rate_rps: float,
        num_instances: int,
    ) -> RouterTrainConfig:
        """The ``RouterTrainConfig`` the run trains: these settings on seed ``seed`` (this table's
        ``seed`` is the caller's concern: ``NightlyConfig.router_configs``) and the run's setting."""
        return RouterTrainConfig.model_validate(
            {
                **self.model_dump(exclude={"seed"}),
                "seed": seed,
                "workload": WAREHOUSE_WORKLOAD,
                "warehouse": warehouse,
                "where": where,
                "profile": profile,
                "rate_rps": rate_rps,
                "num_instances": num_instances,
            }
        )


class _EstimatorSettings(BaseModel):
    """The field of ``[estimator]`` whose default differs from ``EstimatorConfig``'s (the others are
    added by ``_settable``, see ``EstimatorSettings``)."""

    model_config = _STRICT

    profile: str | None = Field(default=None, description="GPU profile to fit (default: the run's)")

    def fit_config(self, profile: str) -> EstimatorConfig:
        """The ``EstimatorConfig`` the run fits: these settings, for the run's ``profile`` unless set."""
        return EstimatorConfig.model_validate(
            {**self.model_dump(exclude={"profile"}), "profile": self.profile or profile}
        )


_Base = TypeVar("_Base", bound=BaseModel)


def _settable(name: str, source: type[BaseModel], base: type[_Base], omit: tuple[str, ...]) -> type[_Base]:
    """``base`` plus every field of ``source`` that ``base`` does not declare and ``omit`` does not
    name, with ``source``'s type, default, bounds and description (built, so nothing is written twice)."""
    fields: dict[str, Any] = {
        key: (info.annotation, copy.copy(info))
        for key, info in source.model_fields.items()
        if key not in omit and key not in base.model_fields
    }
    return create_model(name, __base__=base, __module__=__name__, __doc__=base.__doc__, **fields)


if TYPE_CHECKING:  # the type checker sees the declared fields; the built classes have them all
    RouterSettings = _RouterSettings
    EstimatorSettings = _EstimatorSettings
else:
    RouterSettings = _settable("RouterSettings", RouterTrainConfig, _RouterSettings, ROUTER_FIXED)
    RouterSettings.__doc__ = """``[router]``: ``RouterTrainConfig``'s fields except ``ROUTER_FIXED``;
    ``seed`` defaults to the run's, ``total_timesteps`` to 20,000, ``checkpoint_every_steps`` to 100,000."""
    EstimatorSettings = _settable("EstimatorSettings", EstimatorConfig, _EstimatorSettings, ())
    EstimatorSettings.__doc__ = """``[estimator]``: ``EstimatorConfig``'s fields; ``profile`` defaults
    to the run's."""


class NightlyConfig(BaseModel):
    """Every setting of one nightly run (``loadwise run --config FILE``: TOML, YAML or JSON).

    Units: requests, req/s, environment steps. ``router`` / ``estimator`` / ``predictor`` are typed
    sub-configs (module docstring); ``router`` may not set the workload, profile, rate or instances:
    the nightly run decides them.
    """

    model_config = _STRICT

    warehouse: str | None = Field(default=None, description="DuckDB file (default: the data home's)")
    data_dir: str | None = Field(default=None, description="trace folder (default: ../shared/data)")
    synthetic_rows: int = Field(default=20_000, ge=100, description="rows when no real traces exist")
    seed: Seed = 0
    where: str = Field(
        default="format = 'azure'",
        description="SQL filter over marts.requests: the production trace the router learns from, is "
        "judged on, and whose drift is checked",
    )
    profile: str | None = Field(default=None, description="GPU profile (default: eval.spec.pick_profile)")
    rate_rps: float | None = Field(default=None, gt=0, description="default: the profile's loaded rate")
    num_instances: int = Field(default=4, ge=1)
    estimator: EstimatorSettings = Field(default_factory=EstimatorSettings)
    predictor: PredictorConfig = Field(default_factory=PredictorConfig)
    train_predictor: bool = True
    routing_predictor: str = Field(
        default="registered",
        description="length predictor of the router steps (training episodes, evaluation): 'registered' "
        "(the length-predictor champion after the predictor step; task-mean when there is none), "
        "'registered:VERSION', 'task-mean' or a predictor folder; never 'oracle' (true lengths)",
    )
    router: RouterSettings = Field(default_factory=RouterSettings)
    eval_seeds: tuple[Seed, ...] = Field(default=(0, 1, 2, 3, 4), min_length=1)
    eval_requests: int = Field(default=2000, ge=10, description="requests per held-out window")
    router_seeds: tuple[Seed, ...] | None = Field(
        default=None,
        min_length=1,
        description="train one candidate per seed (in parallel on the task runner) and keep the best by "
        "validation on training windows; default: one, the router's seed (else the run's)",
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
    def _distinct_seeds(cls, seeds: tuple[int, ...] | None, info: ValidationInfo) -> tuple[int, ...] | None:
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

    @field_validator("routing_predictor")
    @classmethod
    def _known_predictor(cls, text: str) -> str:
        from flows.models.predictions import parse_predictor

        kind, _ = parse_predictor(text)
        if kind == "oracle":
            raise ValueError("'oracle' reads true output lengths: a router judged with it proves nothing")
        return text

    @field_validator("task_runner")
    @classmethod
    def _known_task_runner(cls, spec: str) -> str:
        from flows.task_runners import check_task_runner

        return check_task_runner(spec)

    @model_validator(mode="after")
    def _steps_accept_their_settings(self) -> NightlyConfig:
        """Each step's config, built as the run builds it, validates (else the step would fail mid-run)."""
        from training.simulator.profiles import PAPER_PROFILE

        if len(self.eval_seeds) < self.gate.min_seeds:
            raise ValueError(
                f"eval_seeds has {len(self.eval_seeds)} seed(s), fewer than gate.min_seeds = "
                f"{self.gate.min_seeds}: the gate would refuse every challenger"
            )
        profile = self.profile or PAPER_PROFILE  # the run picks one of the known profiles when unset
        checks = (
            (
                "router",
                lambda: self.router_configs(self.warehouse, profile, self.rate_rps or PLACEHOLDER_RATE_RPS),
            ),
            ("estimator", lambda: self.estimator.fit_config(profile)),
        )
        for name, build in checks:
            try:
                build()
            except ValidationError as exc:
                from flows.config_files import validation_message

                raise ValueError(f"{name}: {validation_message(exc)}") from None
        return self

    def router_configs(
        self, warehouse: str | None, profile: str, rate_rps: float
    ) -> dict[int, RouterTrainConfig]:
        """The ``RouterTrainConfig`` of each router candidate, by seed, in order: one per
        ``router_seeds``, else one on ``[router] seed`` (default: the run's ``seed``); the run's
        warehouse trace (``where``), profile, rate and cluster size.

        Who calls this: the flow (``flows.nightly.router``) with the resolved warehouse, profile and
        rate, and this config's validation with stand-ins for those it resolves at run time."""
        seeds = self.router_seeds or (self.seed if self.router.seed is None else self.router.seed,)
        return {
            seed: self.router.train_config(
                seed,
                warehouse=warehouse,
                where=self.where,
                profile=profile,
                rate_rps=rate_rps,
                num_instances=self.num_instances,
            )
            for seed in dict.fromkeys(seeds)
        }

    @classmethod
    def from_file(cls, path: str | Path) -> NightlyConfig:
        """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file (unknown keys are an error).

        Raises ``flows.config_files.ConfigError`` (unreadable or malformed file: one line with the
        position) or pydantic's ``ValidationError`` (a value the run would fail on)."""
        from flows.config_files import read_config_file

        return cls.model_validate(read_config_file(path))
