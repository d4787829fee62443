"""Shards as Ray actors: one CPU each, spread over the cluster's nodes. Ray is imported here
only, when a sharded run opens its engine (the ``distributed`` extra)."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from chaos._errors import ShardError

from ._protocol import Batch, ShardHello, ShardWork

NEEDS_RAY = (
    "sharded load (load.shards > 1) runs on Ray, which is not installed: "
    "pip install 'inference-chaos[distributed]'"
)
# A local cluster's object store: the records of a run, batch by batch, are small; Ray's
# default (30 % of memory, in /dev/shm) is far more than a load run needs.
_LOCAL_OBJECT_STORE = 128 * 1024**2


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _actor_class(ray: Any) -> Any:
    from ._worker import ShardRunner, hello

    class RayShard:
        """One shard: a ShardRunner in this actor's process."""

        def __init__(self) -> None:
            self.runner = ShardRunner()

        def hello(self) -> ShardHello:
            return hello(ray.get_runtime_context().get_node_id())

        def clock(self) -> float:
            import time

            return time.time()

        def start(self, work: ShardWork) -> None:
            self.runner.start(work)

        def take(self) -> Batch:
            return self.runner.take()

        def stop(self) -> None:
            self.runner.stop()

    return ray.remote(RayShard)


class RayEngine:
    """Connects to ``address`` (else ``RAY_ADDRESS``; else starts a local cluster, stopped
    again at :meth:`close`), places one actor per shard and relays the protocol's calls."""

    def __init__(self, address: str | None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self._ray: Any = None
        self._connected = False  # by this engine (then closed by it)
        self._actors: list[Any] = []

    @property
    def where(self) -> str:
        return f"the Ray cluster at {self.address}" if self.address else "a local Ray cluster"

    def open(self, shards: int) -> None:
        try:
            import ray
        except ImportError:
            raise ShardError(NEEDS_RAY) from None
        self._ray = ray
        if not ray.is_initialized():
            quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
            try:
                if self.address:
                    ray.init(address=self.address, **quiet)
                else:
                    ray.init(num_cpus=shards, include_dashboard=False,
                             object_store_memory=_LOCAL_OBJECT_STORE, **quiet)  # fmt: skip
            except Exception as exc:  # Ray's own errors say what was wrong: keep its words
                raise ShardError(f"could not join {self.where}: {exc}") from exc
            self._connected = True
        free = float(ray.available_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]
        if free < shards:
            self.close()
            raise ShardError(
                f"{self.where} has {free:g} free CPUs; {shards} load shards need one each"
            )
        actor = _actor_class(ray)
        # SPREAD: one shard per node while there are nodes, so that a machine's NIC and cores
        # are not shared by two shards when the cluster has room elsewhere.
        self._actors = [
            actor.options(num_cpus=1, scheduling_strategy="SPREAD", max_restarts=0).remote()
            for _ in range(shards)
        ]

    def hellos(self, timeout: float) -> list[ShardHello]:
        ray = self._ray
        try:
            return list(ray.get([a.hello.remote() for a in self._actors], timeout=timeout))
        except ray.exceptions.GetTimeoutError:
            raise ShardError(f"the load shards did not start on {self.where} within "
                             f"{timeout:g}s") from None  # fmt: skip
        except ray.exceptions.RayError as exc:
            raise ShardError(f"a load shard failed to start on {self.where}: {exc}") from exc

    def clock(self, shard: int, timeout: float) -> float:
        return float(self._ray.get(self._actors[shard].clock.remote(), timeout=timeout))

    def start(self, works: list[ShardWork], timeout: float) -> None:
        ray = self._ray
        try:
            ray.get([self._actors[w.shard].start.remote(w) for w in works], timeout=timeout)
        except ray.exceptions.RayError as exc:
            raise ShardError(f"the load shards could not be started: {exc}") from exc

    def take(self, shards: list[int], timeout: float) -> dict[int, Batch | str]:
        """Each shard's batch, or why there is none: its actor or node is gone, or it did not
        answer within ``timeout``."""
        ray = self._ray
        refs = {shard: self._actors[shard].take.remote() for shard in shards}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
        done = set(ready)
        out: dict[int, Batch | str] = {}
        for shard, ref in refs.items():
            if ref not in done:
                out[shard] = f"did not answer for {timeout:g}s"
                continue
            try:
                out[shard] = ray.get(ref)
            except ray.exceptions.RayError as exc:
                out[shard] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return out

    def stop(self, shards: list[int]) -> None:
        for shard in shards:
            self._actors[shard].stop.remote()

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for actor in self._actors:
            with contextlib.suppress(Exception):  # gone already (its node died): nothing to end
                ray.kill(actor)
        self._actors = []
        if self._connected:
            ray.shutdown()
            self._connected = False
