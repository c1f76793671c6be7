"""``flows.nightly.router.wait_reporting``: the progress loop of ``train-router`` over futures that
finish while it reads them."""

from __future__ import annotations

from dataclasses import dataclass, field

from flows.nightly.router import wait_reporting


@dataclass
class _State:
    future: _Future

    def is_final(self) -> bool:
        self.future.reads += 1
        return self.future.reads > self.future.final_after


@dataclass
class _Future:
    """A future that turns final after ``final_after`` reads of its state, wherever they happen."""

    final_after: int
    reads: int = 0
    waits: list[float] = field(default_factory=list)

    @property
    def state(self) -> _State:
        return _State(self)

    def wait(self, timeout: float) -> None:
        self.waits.append(timeout)


def test_a_future_finishing_between_two_reads_ends_the_wait() -> None:
    # pending on the first read, final on the second: the old loop's second read found nothing
    # pending and raised StopIteration (a CI failure of the Dask nightly test)
    future = _Future(final_after=1)
    reports: list[int] = []
    wait_reporting([future], lambda: reports.append(1), every_s=0.5)
    assert reports == [1]
    assert future.waits == [0.5]


def test_it_reports_before_each_wait_until_all_are_final() -> None:
    futures = [_Future(final_after=0), _Future(final_after=3), _Future(final_after=2)]
    reports: list[int] = []
    wait_reporting(futures, lambda: reports.append(1), every_s=1.0)
    assert all(f.state.is_final() for f in futures)
    assert len(reports) == sum(len(f.waits) for f in futures) >= 1
