"""A shard's side of the protocol: one :class:`LoadGenerator` on an event loop of its own
thread, started at the run's common instant, its finished records handed over in batches.
Whatever hosts it (a Ray actor, a Job's pod) only calls :meth:`ShardRunner.start`,
:meth:`take` and :meth:`stop`, each of which returns at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
import time

from chaos._loadgen import LoadGenerator, LoadRecord, LoadResult, frozen_heap, run_loop
from chaos._version import __version__

from ._protocol import Batch, ShardHello, ShardWork


def hello(node: str) -> ShardHello:
    return ShardHello(node=node, host=socket.gethostname(), pid=os.getpid(), version=__version__)


class ShardRunner:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._finished: list[LoadRecord] = []
        self._generator: LoadGenerator | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_asked = False
        self._result: LoadResult | None = None
        self._error: str | None = None
        self._shard = -1

    def start(self, work: ShardWork) -> None:
        if self._thread is not None:
            raise RuntimeError(f"shard {work.shard} was started already")
        self._shard = work.shard
        settings = work.settings
        context = None if settings.ca_pem is None else ssl.create_default_context(
            cadata=settings.ca_pem
        )  # fmt: skip
        specs = dict(zip(work.indices, work.specs, strict=True))
        self._generator = LoadGenerator(
            work.url, work.offsets, specs.__getitem__, indices=work.indices,
            timeout_s=settings.timeout_s, max_in_flight=settings.max_in_flight,
            max_lag_p99_s=settings.max_lag_p99_s, max_cpu_share=settings.max_cpu_share,
            on_record=self._on_record, headers=settings.headers, rules=settings.rules,
            server_hostname=settings.server_hostname, ssl_context=context,
        )  # fmt: skip
        self._thread = threading.Thread(
            target=self._run, args=(work,), name=f"ichaos-shard-{work.shard}", daemon=True
        )
        self._thread.start()

    def _run(self, work: ShardWork) -> None:
        try:
            with frozen_heap():
                self._result = run_loop(self._drive(work))
        except Exception as exc:  # the controller says so: a failed shard invalidates the run
            self._error = f"{type(exc).__name__}: {exc}"

    async def _drive(self, work: ShardWork) -> LoadResult:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._stop_asked:
            self._stop.set()
        # t = 0 is the controller's start_wall; on this machine's clock that is start_wall +
        # offset, and on its monotonic clock the origin the generator counts from.
        local_start = work.start_wall + work.clock_offset
        assert self._generator is not None
        self._generator.origin = time.monotonic() + (local_start - time.time())
        return await self._generator.run(self._stop)

    def _on_record(self, record: LoadRecord) -> None:
        with self._lock:
            self._finished.append(record)

    def take(self) -> Batch:
        """The records finished since the last call, the requests in flight, and, once the
        generator has ended, its health or its failure (then ``done``)."""
        done = self._thread is not None and not self._thread.is_alive()
        with self._lock:
            records, self._finished = self._finished, []
        generator = self._generator
        pending = [] if generator is None or done else generator.pending()
        health = None if self._result is None else self._result.health
        return Batch(self._shard, records, pending, done=done, health=health, error=self._error)

    def stop(self) -> None:
        """End the schedule now (the requests out still finish, within their timeout)."""
        self._stop_asked = True
        loop, event = self._loop, self._stop
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has finished already
                loop.call_soon_threadsafe(event.set)
