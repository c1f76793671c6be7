"""Which task runner a flow uses: the accepted forms of ``task_runner`` and their check.

Who calls this: ``NightlyConfig`` when a config is read (a typo fails before any work, without
importing Prefect) and ``flows.distributed.task_runner`` when it builds the runner.
"""

from __future__ import annotations

THREADS = "threads"
LOCAL_DASK = "dask"
SCHEDULER_PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx")
"""Dask comm protocols a scheduler address may use (``distributed.comm``; ``inproc`` is in-process only)."""


def check_task_runner(spec: str) -> str:
    """``spec`` when it is ``threads``, ``dask`` or a Dask scheduler address ``PROTOCOL://HOST[:PORT]``.

    Who calls this: ``NightlyConfig`` when a config is read (so a typo fails before any work) and
    ``task_runner``. Raises ``ValueError`` naming the accepted forms.
    """
    from urllib.parse import urlsplit

    if spec in (THREADS, LOCAL_DASK):
        return spec
    forms = f"{THREADS!r}, {LOCAL_DASK!r} or a Dask scheduler address such as 'tcp://scheduler:8786'"
    if "://" not in spec:
        raise ValueError(f"task runner must be {forms}, got {spec!r}")
    parts = urlsplit(spec)
    if parts.scheme not in SCHEDULER_PROTOCOLS:
        known = ", ".join(SCHEDULER_PROTOCOLS)
        raise ValueError(f"task runner {spec!r}: unknown protocol {parts.scheme!r}; one of {known}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"task runner {spec!r}: the port must be a number from 1 to 65535") from None
    if not parts.hostname or port == 0 or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"task runner {spec!r} is not an address PROTOCOL://HOST[:PORT]; expected {forms}")
    return spec
