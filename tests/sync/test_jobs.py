"""Jobs: registered by name, JSON arguments only, run in process, deferring more jobs."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stripesync.errors import InvalidInput
from stripesync.jobs import REGISTRY, InProcessRunner, Job, JobContext, job

SEEN: list[tuple[str, Any]] = []
LOCK = threading.Lock()


@job("tests.count_down")
def count_down(ctx: JobContext, *, n: int, tag: str) -> None:
    with LOCK:
        SEEN.append((tag, n))
    if n > 0:
        ctx.defer("tests.count_down", n=n - 1, tag=tag)
    assert ctx.get("greeting") == "hello"


@job("tests.explode")
def explode(ctx: JobContext, *, why: str) -> None:
    raise RuntimeError(why)


def test_jobs_run_and_their_deferred_jobs_are_waited_for() -> None:
    SEEN.clear()
    with InProcessRunner({"greeting": "hello"}, max_workers=4) as runner:
        runner.defer("tests.count_down", n=3, tag="a")
        runner.defer("tests.count_down", n=2, tag="b")
        assert runner.join(timeout=10) == []
    assert sorted(SEEN) == [("a", 0), ("a", 1), ("a", 2), ("a", 3), ("b", 0), ("b", 1), ("b", 2)]


def test_failures_are_reported_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    with InProcessRunner(max_workers=2) as runner:
        runner.defer("tests.explode", why="boom")
        failures = runner.join(timeout=10)
    assert len(failures) == 1
    assert failures[0].job == Job("tests.explode", {"why": "boom"})
    assert "boom" in str(failures[0].error)
    assert "tests.explode" in caplog.text


def test_arguments_must_survive_a_queue() -> None:
    with pytest.raises(InvalidInput, match="JSON"):
        Job("tests.explode", {"why": object()})
    with pytest.raises(InvalidInput, match="JSON"):
        Job("tests.explode", {"why": (1, 2)})  # a tuple comes back as a list
    with pytest.raises(InvalidInput, match="no job named"):
        Job("tests.nope", {})


def test_the_backfill_job_is_registered() -> None:
    import stripesync.sync.backfill  # noqa: F401

    assert "sync.import_slice" in REGISTRY
    with pytest.raises(ValueError, match="twice"):
        job("sync.import_slice")(lambda ctx: None)
