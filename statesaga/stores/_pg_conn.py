"""How `PostgresStore` borrows a connection for one call (kept idle between calls), and how
its batch connections plan."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ..exceptions import SagaError

if TYPE_CHECKING:
    from .postgres import PostgresStore

# The batch connections' settings. A batch's plan is made once (planning each cost 0.25-0.4
# ms), and while the table is small a scan of all of it looks cheaper than a lookup per saga:
# such plans (a sequential scan, a hash join over the whole primary key) grew batches 2-3x
# slower as sagas piled up. With these, a batch looks up each of its sagas by key.
BY_KEY = {"enable_seqscan": "off", "enable_hashjoin": "off", "enable_mergejoin": "off",
          "plan_cache_mode": "force_generic_plan"}


class Borrowed:
    """A connection for one call: one of the store's idle ones, else one from its pool.

    Back to the idle list after it, unless a call waits for the pool (more calls at once than
    `max_size`: it would wait forever for a connection kept idle) or the driver failed: then
    to the pool (reset or replaced, for a failure), and the error becomes a `StoreError`."""

    __slots__ = ("conn", "pool", "store")

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def __aenter__(self) -> Any:
        store = self.store
        while store._idle:  # a lost connection was taken back by the pool: skip it
            conn = store._idle.pop()
            with contextlib.suppress(*store._failures):
                if not conn.is_closed():
                    self.pool, self.conn = store._pool, conn
                    return conn
                await store._pool.release(conn)
        store._waiting += 1  # no await since the idle list was found empty
        try:
            if store._pool is None:
                await store.open()
            self.pool = store._pool
            self.conn = await self.pool.acquire()
        except store._failures as exc:
            raise store._failed(exc) from exc
        finally:
            store._waiting -= 1
        return self.conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: Any) -> None:
        store = self.store
        if ((kind is None or issubclass(kind, SagaError)) and self.pool is store._pool
                and not store._waiting):
            store._idle.append(self.conn)
        else:  # the pool resets the connection, or terminates and replaces it
            with contextlib.suppress(*store._failures):
                await self.pool.release(self.conn)
        if isinstance(exc, store._failures):
            raise store._failed(exc) from exc
