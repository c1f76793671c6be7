"""Step 2 of the nightly flow, ``check-drift``: the new window against the one the models learned from.

Who calls this: the flow (``flows.nightly.flow``), once per run. The requests of files after the last
watermark (``warehouse.ops``) are compared with those up to it: per-task PSI / KS of prompt and
output lengths and the arrival rate (``features.drift``), in the ``check-drift`` task (artifact
``nightly-drift``). With ``retrain = "on-drift"`` a drift above the thresholds is what triggers
retraining (``flows.nightly.flow``).
"""

from __future__ import annotations

from flows import tasks
from flows.nightly.config import NightlyConfig
from flows.nightly.results import DriftResult


def drift_step(cfg: NightlyConfig, db: str) -> DriftResult:
    """The drift check of the requests matching ``cfg.where`` since the last successful run."""
    from warehouse.ops import last_watermark

    mark = last_watermark(db)
    drift = tasks.check_drift(db, cfg.where, mark.file_id if mark else None, cfg.drift)
    print(f"drift: {drift.new_requests} new requests; {'; '.join(drift.reasons) or 'no drift'}")
    return drift
