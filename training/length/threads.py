"""One thread per numeric library: how the predictor trains and predicts on a shared 2-core CPU.

Who calls this: ``training.length.train.train_from_rows`` (the whole training, and its second
thread), ``training.length.predictor.predict_inputs`` (every batched prediction: the nightly
``predict-lengths`` step, replays with a predictor folder); once per call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

_LOCK = threading.Lock()
_users = 0
"""Sections open in this process (``one_thread``), any thread."""
_restore: Callable[[], None] | None = None
"""Puts back the BLAS pools' and torch's thread counts the first open section found."""


@contextmanager
def one_thread(*, torch_too: bool) -> Iterator[None]:
    """BLAS and OpenMP pools (``threadpoolctl``) at one thread, and with ``torch_too`` torch's
    intra-op threads too, for the block; restored afterwards.

    OpenMP's count is per calling thread (each thread that runs OpenMP code, e.g. scikit-learn's
    fits, enters its own section). The BLAS pools' and torch's counts are process-wide: sections
    open in several threads at once (training's two threads, concurrent ``predict_inputs`` calls)
    share them, counted, so the first one to open records the caller's settings and the last one
    to close restores them; one closing early never puts a second thread back at two threads.

    Why (measured, docs/length_predictor.md "Training time"): on this 2-core machine a two-thread
    kernel waits for its second thread whenever another process holds a core: 400 prompts encoded in
    4.2 s with one torch thread against 42.9 s with two at load 7, and one logistic-regression fit
    1.4 s of CPU against 9.2 s (OpenBLAS / OpenMP at two threads). Multi-threaded kernels also split
    their sums by thread count, so a model trained with them depends on the machine's cores (the
    encoder's features differ by up to 4e-3 between one and two threads).
    """
    from threadpoolctl import threadpool_limits

    global _users, _restore
    with _LOCK:  # process-wide settings: the first section sets them, the last one restores them
        if _users == 0:
            before = torch.get_num_threads()
            blas = threadpool_limits(limits=1, user_api="blas")

            def restore() -> None:
                blas.restore_original_limits()
                torch.set_num_threads(before)

            _restore = restore
        _users += 1
        if torch_too:
            torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="openmp"):  # per calling thread
            yield
    finally:
        with _LOCK:
            _users -= 1
            if _users == 0 and _restore is not None:
                _restore()
                _restore = None
