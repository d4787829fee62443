"""A real Ray cluster of two nodes on this machine, one CPU each, as a user would start one:
``ray start --head`` and ``ray start --address …``, each in a session of its own so that a
node can be killed whole (its raylet and its workers) and nothing outlives the test.

Token authentication is off for it: Ray reads its auth mode once, when it is first imported,
so a test process that has imported Ray already could not join a token cluster made later
(a user sets ``RAY_AUTH_TOKEN`` before starting ichaos, and joins one)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from chaos import wait_until

RAY = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ports() -> list[str]:
    # Two nodes on one machine: every port a node would take by default, its own.
    names = [
        "--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port",
    ]  # fmt: skip
    return [arg for name in names for arg in (name, str(_free_port()))]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@dataclass
class RayCluster:
    temp: Path
    address: str = ""
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "disabled"}

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        with (self.temp / f"node-{len(self.nodes)}.log").open("wb") as log:
            node = subprocess.Popen(
                [str(RAY), "start", "--block", "--num-cpus", "1", "--disable-usage-stats",
                 "--object-store-memory", str(100 * 1024**2), *_ports(), *args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **self.env},
            )  # fmt: skip
        self.nodes.append(node)
        return node

    def start(self) -> None:
        port = _free_port()
        self._start("--head", "--port", str(port), "--include-dashboard", "false",
                    "--temp-dir", str(self.temp))  # fmt: skip
        self.address = f"127.0.0.1:{port}"
        wait_until(lambda: self._answers(port), timeout=120, interval=0.2,
                   message="the Ray head's GCS port")  # fmt: skip
        self._start("--address", self.address)
        wait_until(lambda: self.alive_nodes() == 2, timeout=180, interval=1.0,
                   message="two live Ray nodes")  # fmt: skip

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    def alive_nodes(self) -> int:
        code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
                "print(sum(1 for n in ray.nodes() if n['Alive']))")  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", code, self.address], capture_output=True, text=True,
            timeout=120, env={**os.environ, **self.env}, check=False,
        )  # fmt: skip
        lines = done.stdout.strip().splitlines()
        return int(lines[-1]) if done.returncode == 0 and lines else 0

    def kill_node(self, index: int) -> None:
        """SIGKILL to a node's whole session: its raylet, its workers, what they started."""
        node = self.nodes[index]
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)

    def processes_of_node(self, index: int) -> list[int]:
        return _group(self.nodes[index].pid)

    def processes(self) -> list[int]:
        """Live processes of this cluster: in a node's session, or naming its temp dir."""
        mine = {pid for i in range(len(self.nodes)) for pid in self.processes_of_node(i)}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and str(self.temp) in _cmdline(int(entry.name)):
                mine.add(int(entry.name))
        return sorted(mine)

    def stop(self) -> None:
        # The worker node first: stopped while its head is up, it does not wait on it.
        for node in reversed(self.nodes):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
                try:
                    node.wait(timeout=45)
                except subprocess.TimeoutExpired:
                    os.killpg(node.pid, signal.SIGKILL)
                    node.wait(timeout=30)
            for pid in _group(node.pid):  # anything of its session still there
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    continue


def start_cluster() -> RayCluster:
    # Short: Ray's unix sockets live under it, and their paths are limited to 107 bytes.
    cluster = RayCluster(Path(tempfile.mkdtemp(prefix="ir-", dir="/tmp")))
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster
