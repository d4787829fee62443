"""Every injector applies and reverts for real: the real toxiproxy-server, real processes, a real
worker's fault hooks and a real registry."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chaos import (
    ApplyError,
    Corruption,
    GpuFault,
    GpuFaultInjector,
    Injector,
    ModelCorruptionInjector,
    PartitionInjector,
    RevertError,
    SignalInjector,
    SignalKind,
    Toxic,
    ToxicInjector,
    ToxicType,
    ToxiproxyClient,
    restore_leftovers,
    wait_until,
)
from chaos._faults import InjectorGroup
from chaos.injectors import process_state
from tests.conftest import ADMIN_TOKEN, Workers, needs_service


def fetch(port: int, timeout: float = 5.0) -> float:
    started = time.monotonic()
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=timeout).text == "hello"
    return time.monotonic() - started


def test_latency_toxic_adds_its_latency_and_reverts_idempotently(
    client: ToxiproxyClient, upstream: str
) -> None:
    port = client.create_proxy("hop", upstream).port
    latency = Toxic(name="lag", type=ToxicType.LATENCY, attributes={"latency": 250, "jitter": 0})
    injector = ToxicInjector(client, "hop", latency)
    with injector:
        injector.apply()  # a second apply is a no-op, not a 409
        assert [t.name for t in client.toxics("hop")] == ["lag"]
        assert fetch(port) >= 0.25  # a lower bound on the round trip
    assert client.toxics("hop") == [] and not injector.applied
    injector.revert()  # reverting twice is harmless
    assert fetch(port) < 0.25


def test_a_toxic_the_server_does_not_hold_as_asked_is_refused_and_removed(
    client: ToxiproxyClient, upstream: str
) -> None:
    client.create_proxy("hop", upstream)
    # Toxiproxy takes the toxic but drops an attribute it does not know: what applied is not
    # what the scenario asked for, so it is not left in place under that name.
    odd = Toxic(name="odd", type=ToxicType.LATENCY, attributes={"latency": 100, "spread": 7})
    injector = ToxicInjector(client, "hop", odd)
    with pytest.raises(ApplyError, match=r"read back from Toxiproxy, its attributes are"):
        injector.apply()
    assert client.toxics("hop") == [] and not injector.applied


def test_a_refused_toxic_is_an_apply_error_and_leaves_nothing(
    client: ToxiproxyClient, upstream: str
) -> None:
    client.create_proxy("hop", upstream)
    absent = ToxicInjector(client, "no-such-proxy", Toxic(name="x", type=ToxicType.TIMEOUT))
    with pytest.raises(ApplyError, match=r"no-such-proxy.*HTTP 404"):
        absent.apply()
    assert not absent.applied
    absent.revert()  # nothing was applied: nothing to undo, no error


def test_partition_refuses_connections_until_reverted(
    client: ToxiproxyClient, upstream: str
) -> None:
    port = client.create_proxy("hop", upstream).port
    with PartitionInjector(client, "hop"):
        assert not client.proxy("hop").enabled
        with pytest.raises(httpx.TransportError):
            fetch(port, timeout=2)
    assert client.proxy("hop").enabled
    fetch(port)


def _state(pid: int) -> str:
    # /proc/<pid>/stat: "pid (comm) S ..." — the state letter follows the command name.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def test_kill_kills_every_target(sleepers: list[subprocess.Popen[bytes]]) -> None:
    injector = SignalInjector([p.pid for p in sleepers], SignalKind.KILL, marker="sleep")
    injector.apply()  # returns once both are read back as ended (zombies until reaped)
    assert all(process_state(p.pid) == "Z" for p in sleepers)
    assert [p.wait(timeout=5) for p in sleepers] == [-9, -9]


def test_pause_stops_and_revert_resumes(sleepers: list[subprocess.Popen[bytes]]) -> None:
    pids = [p.pid for p in sleepers]
    with SignalInjector(pids, SignalKind.PAUSE, label="two sleepers"):
        # Signals are delivered asynchronously: wait for the state, do not sleep.
        wait_until(lambda: [_state(pid) for pid in pids] == ["T", "T"], timeout=5)
    wait_until(lambda: all(_state(pid) != "T" for pid in pids), timeout=5)


def test_a_missing_target_resumes_what_the_pause_already_stopped(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    injector = SignalInjector([sleepers[0].pid, gone.pid], SignalKind.PAUSE)
    with pytest.raises(ApplyError, match=rf"pid {gone.pid} is no longer the target: it is gone"):
        injector.apply()
    assert not injector.applied
    wait_until(lambda: _state(sleepers[0].pid) != "T", timeout=5)


def test_a_pid_that_is_no_longer_the_target_is_never_signalled(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    # The state file said a worker had this pid; now it is a `sleep` (restarted, pid reused).
    injector = SignalInjector([sleepers[0].pid], SignalKind.KILL, marker="target_service worker")
    with pytest.raises(ApplyError, match="no longer the target: its command line is 'sleep 60'"):
        injector.apply()
    assert sleepers[0].poll() is None and process_state(sleepers[0].pid) in ("S", "R")


def test_a_signal_that_does_not_take_effect_is_an_apply_error() -> None:
    stubborn = subprocess.Popen([sys.executable, "-c", (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )], stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
        injector = SignalInjector([stubborn.pid], SignalKind.TERMINATE, settle=0.5)
        with pytest.raises(ApplyError, match=r"signalled but not ended within 0\.5s"):
            injector.apply()
        assert stubborn.poll() is None  # it ignored SIGTERM: the fault did not happen
    finally:
        stubborn.kill()
        stubborn.wait()
        assert stubborn.stdout is not None
        stubborn.stdout.close()


@pytest.fixture(scope="module")
def hooked_worker(module_workers: Workers, built_registry: Path) -> Any:
    return module_workers.start(built_registry)


@needs_service
def test_gpu_fault_hook_is_set_and_cleared(hooked_worker: Any) -> None:
    auth = {"X-Admin-Token": ADMIN_TOKEN}
    injector = GpuFaultInjector(hooked_worker.url, GpuFault.SLOW, ADMIN_TOKEN, {"ms_per_token": 50})
    with injector:
        faults = httpx.get(f"{hooked_worker.url}/admin/faults", headers=auth).json()
        assert faults["slow"] == {"active": True, "ms_per_token": 50}
        started = time.monotonic()
        body = {"prompt": "hello", "max_new_tokens": 6}
        httpx.post(f"{hooked_worker.url}/v1/generate", json=body, timeout=30).raise_for_status()
        assert time.monotonic() - started >= 6 * 0.05
    faults = httpx.get(f"{hooked_worker.url}/admin/faults", headers=auth).json()
    assert not faults["slow"]["active"]


@needs_service
def test_gpu_fault_with_a_wrong_token_is_an_apply_error(hooked_worker: Any) -> None:
    with pytest.raises(ApplyError, match="HTTP 403"):
        GpuFaultInjector(hooked_worker.url, GpuFault.HANG, "wrong").apply()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@needs_service
@pytest.mark.parametrize("mode", list(Corruption))
def test_corruption_is_detected_then_restored_byte_for_byte(
    registry: Path, tmp_path: Path, mode: Corruption
) -> None:
    from target_service import ModelRef, Registry

    weights = registry / "primary" / "v1" / "model.safetensors"
    original = weights.read_bytes()
    injector = ModelCorruptionInjector(
        weights, mode, tmp_path / "state", seed=7,
        swap_with=registry / "canary" / "v2" / "model.safetensors",
    )  # fmt: skip
    ref = ModelRef.parse("primary:v1")
    with injector:
        assert weights.read_bytes() != original
        problems = Registry(registry).problems(ref)
        assert {p.path for p in problems} == {"model.safetensors"}
    assert weights.read_bytes() == original
    assert Registry(registry).problems(ref) == []
    assert not (tmp_path / "state" / "model-backups").exists() or not any(
        (tmp_path / "state" / "model-backups").iterdir()
    )


def test_bit_flip_is_seeded(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    target.write_bytes(bytes(range(256)) * 64)
    damaged = []
    for _ in range(2):
        with ModelCorruptionInjector(target, Corruption.BIT_FLIP, tmp_path / "s", seed=3):
            damaged.append(target.read_bytes())
    assert damaged[0] == damaged[1] != target.read_bytes()
    flipped = [
        i for i, (a, b) in enumerate(zip(damaged[0], target.read_bytes(), strict=True)) if a != b
    ]
    assert len(flipped) == 1


def test_a_killed_run_leaves_what_the_next_run_restores(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"weights" * 1000)
    before = _digest(target)
    # A run applies the corruption and is SIGKILLed: no revert ever runs.
    ModelCorruptionInjector(target, Corruption.TRUNCATE, tmp_path / "state", seed=1).apply()
    assert _digest(target) != before
    messages: list[str] = []
    assert restore_leftovers(tmp_path / "state", log=messages.append) == [str(target.resolve())]
    assert _digest(target) == before and "left corrupted" in messages[0]
    assert restore_leftovers(tmp_path / "state") == []  # repaired once, nothing left


def test_corrupting_a_missing_file_is_an_apply_error(tmp_path: Path) -> None:
    injector = ModelCorruptionInjector(tmp_path / "absent", Corruption.BIT_FLIP, tmp_path / "s")
    with pytest.raises(ApplyError, match="no such file"):
        injector.apply()
    assert restore_leftovers(tmp_path / "s") == []


def test_a_no_op_corruption_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    target, twin = tmp_path / "v1" / "model.safetensors", tmp_path / "v2" / "model.safetensors"
    for path in (target, twin):
        path.parent.mkdir()
        path.write_bytes(b"the very same weights")
    state = tmp_path / "state"
    injector = ModelCorruptionInjector(target, Corruption.SWAP, state, swap_with=twin)
    with pytest.raises(ApplyError, match="byte for byte the original"):
        injector.apply()
    assert target.read_bytes() == b"the very same weights" and not injector.applied
    assert not any((state / "model-backups").glob("*"))


class _Part(Injector):
    def __init__(self, name: str, *, apply_fails: bool = False, revert_fails: int = 0) -> None:
        super().__init__()
        self.name, self.apply_fails, self.revert_fails = name, apply_fails, revert_fails
        self.live = False

    @property
    def description(self) -> str:
        return self.name

    def _apply(self) -> None:
        if self.apply_fails:
            raise ApplyError(f"{self.name} refused")
        self.live = True

    def _revert(self) -> None:
        if self.revert_fails:
            self.revert_fails -= 1
            raise RevertError(f"{self.name} would not undo")
        self.live = False


def test_a_group_whose_rollback_fails_says_so_and_stays_applied() -> None:
    first, second = _Part("first", revert_fails=1), _Part("second", apply_fails=True)
    group = InjectorGroup("both", [first, second])
    with pytest.raises(RevertError, match=r"second refused; undoing .* first would not undo"):
        group.apply()
    assert group.applied and first.live  # not "nothing left applied": first still is
    group.revert()  # the runner's final revert: this time it undoes
    assert not group.applied and not first.live
