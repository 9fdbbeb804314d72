"""Jobs: work that can be shared out, written so that a queue can run it later.

A job is a registered function plus JSON-serializable keyword arguments, and nothing
else: no open connections, no objects from the caller's memory. What a job needs beyond
its arguments (the store, the settings, a Stripe client for a source) it takes from the
`JobContext` of the process running it. Today `InProcessRunner` runs jobs on a thread
pool in the calling process; on PostgreSQL the same functions can run as procrastinate
tasks in worker processes (issue 9), with `JobContext.defer` mapped onto its
``defer``.

    @job("sync.import_slice")
    def import_slice(ctx: JobContext, *, source_id: int, slice_id: int) -> None: ...

    runner = InProcessRunner(env, max_workers=32)
    runner.defer("sync.import_slice", source_id=1, slice_id=7)
    failures = runner.join()
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from stripesync.errors import InvalidInput

__all__ = [
    "REGISTRY",
    "InProcessRunner",
    "Job",
    "JobContext",
    "JobFailure",
    "job",
]

log = logging.getLogger(__name__)

JobFunction = Callable[..., None]

#: Every job function by name.
REGISTRY: dict[str, JobFunction] = {}


def job(name: str) -> Callable[[JobFunction], JobFunction]:
    """Register ``fn(ctx, **args)`` as the job ``name``."""

    def decorate(fn: JobFunction) -> JobFunction:
        if name in REGISTRY and REGISTRY[name] is not fn:
            raise ValueError(f"job {name!r} is registered twice")
        REGISTRY[name] = fn
        return fn

    return decorate


@dataclass(frozen=True)
class Job:
    name: str
    args: dict[str, Any]

    def __post_init__(self) -> None:
        if self.name not in REGISTRY:
            raise InvalidInput(f"no job named {self.name!r}; known: {', '.join(sorted(REGISTRY))}")
        try:
            # What a queue would store; a round trip proves the job needs nothing else.
            if json.loads(json.dumps(self.args)) != self.args:
                raise TypeError("arguments change in a JSON round trip")
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"job {self.name!r} arguments must be JSON values (ints, strings, lists, "
                f"dicts): {exc}"
            ) from exc


class Deferrer(Protocol):
    def defer(self, name: str, /, **args: Any) -> None: ...


@dataclass
class JobContext:
    """What the running process offers its jobs: shared resources and a way to defer."""

    runner: Deferrer
    #: Process-wide resources by name (``store``, ``settings``, ...), set by the owner.
    resources: dict[str, Any] = field(default_factory=dict)

    def defer(self, name: str, /, **args: Any) -> None:
        self.runner.defer(name, **args)

    def get(self, name: str) -> Any:
        try:
            return self.resources[name]
        except KeyError:
            raise InvalidInput(f"this process offers jobs no {name!r}") from None


@dataclass(frozen=True)
class JobFailure:
    job: Job
    error: BaseException


class InProcessRunner:
    """Runs jobs on a thread pool; `join` waits for them and for the jobs they defer."""

    def __init__(self, resources: dict[str, Any] | None = None, *, max_workers: int = 8) -> None:
        self.context = JobContext(self, dict(resources or {}))
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="job")
        self._lock = threading.Condition()
        self._pending = 0
        self._failures: list[JobFailure] = []
        self._closed = False

    def defer(self, name: str, /, **args: Any) -> None:
        work = Job(name, args)
        with self._lock:
            if self._closed:
                raise InvalidInput(f"the runner is shut down; cannot run {name!r}")
            self._pending += 1
        self._pool.submit(self._run, work)

    def _run(self, work: Job) -> None:
        try:
            REGISTRY[work.name](self.context, **work.args)
        except BaseException as exc:  # recorded for join(), never lost in a pool thread
            log.exception("job %s(%s) failed", work.name, work.args)
            with self._lock:
                self._failures.append(JobFailure(work, exc))
        finally:
            with self._lock:
                self._pending -= 1
                self._lock.notify_all()

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def join(self, timeout: float | None = None) -> list[JobFailure]:
        """Wait until no job is queued or running; the failures so far."""
        with self._lock:
            self._lock.wait_for(lambda: self._pending == 0, timeout=timeout)
            return list(self._failures)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=False)

    def __enter__(self) -> InProcessRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
