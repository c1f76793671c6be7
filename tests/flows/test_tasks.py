"""The Prefect tasks' shared settings (flows/tasks.py): retries only on I/O errors."""

from __future__ import annotations


def test_retry_only_on_io() -> None:
    from prefect.states import Failed

    from flows.tasks import retry_on_io
    from warehouse.errors import DataCheckError, WarehouseBusyError

    assert retry_on_io(None, None, Failed(data=OSError("disk")))
    assert retry_on_io(None, None, Failed(data=WarehouseBusyError("locked")))
    assert not retry_on_io(None, None, Failed(data=DataCheckError(["bad"])))
