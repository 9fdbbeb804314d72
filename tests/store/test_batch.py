"""Group commit: writes from many threads, each committed before submit returns."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from stripesync.store import Store
from stripesync.store.batch import BatchWriter
from stripesync.store.schema import sources
from stripesync.store.types import utcnow


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store.open(database_url)
    yield opened
    opened.close()


def _add(name: str) -> object:
    def write(conn: Connection) -> int:
        now = utcnow()
        result = conn.execute(
            sa.insert(sources)
            .values(
                name=name,
                status="active",
                key_hint="k",
                key_kind="secret",
                livemode=False,
                api_base="http://x",
                start_mode="all",
                interval_seconds=60,
                permissions={},
                polling_only=True,
                profile_settings={},
                created_at=now,
                updated_at=now,
            )
            .returning(sources.c.id)
        )
        new_id = int(result.scalar_one())
        if name.startswith("bad"):
            raise ValueError(name)
        return new_id

    return write


def test_many_threads_each_get_their_result_and_failures_stay_alone(store: Store) -> None:
    results: dict[str, object] = {}
    lock = threading.Lock()
    with BatchWriter(store, max_batch=8) as writer:

        def worker(n: int) -> None:
            for i in range(10):
                name = f"{'bad' if i == 3 else 'ok'}-{n}-{i}"
                try:
                    value: object = writer.submit(_add(name))  # type: ignore[arg-type]
                except ValueError as exc:
                    value = exc
                with lock:
                    results[name] = value

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 60
    assert all(isinstance(v, ValueError) for k, v in results.items() if k.startswith("bad"))
    ids = [v for k, v in results.items() if k.startswith("ok")]
    assert all(isinstance(v, int) for v in ids) and len(set(ids)) == 54  # type: ignore[arg-type]
    with store.read() as conn:
        names = set(conn.execute(sa.select(sources.c.name)).scalars())
    assert len(names) == 54 and not any(n.startswith("bad") for n in names)
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(_add("late"))  # type: ignore[arg-type]
