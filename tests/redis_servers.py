"""Real Redis servers for the tests: started on free 127.0.0.1 ports with
persistence off, stopped at the end of the session.

``redis_server`` is one standalone server; ``redis_cluster`` is three masters
joined by ``redis-cli --cluster create``. Both are session-scoped; the
``flushed_*`` fixtures empty them before each test. ``RedisServer`` can also be
used directly for a server a test stops and restarts. Everything is skipped
(with the reason) when redis-server / redis-cli are not installed, or when
redis-py is not.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def require_redis() -> None:
    """Skip the calling test unless redis-server, redis-cli and redis-py are there."""
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.skip(
            "redis-server / redis-cli are not installed "
            "(apt-get install redis-server redis-tools; .ci/run does)"
        )
    pytest.importorskip("redis", reason='redis-py is not installed (pip install ".[redis]")')


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port(*, cluster: bool = False) -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now. A cluster node also
    needs port + 10000 (its bus), so its port is at most 55535."""
    if not cluster:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            return int(s.getsockname()[1])
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, 55535)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1:`port`, persistence off; ``stop()``
    and ``start()`` again keep the port (an empty server comes back)."""

    def __init__(self, folder: Path, *, port: int | None = None, cluster: bool = False) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(cluster=cluster)
        self.cluster = cluster
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.folder),
            "--logfile", str(self.folder / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.folder / "nodes.conf"),
                "--cluster-node-timeout", "2000",
            ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def cli(self, *args: str) -> str:
        """``redis-cli -p PORT ARGS...``'s output."""
        assert REDIS_CLI is not None
        return subprocess.run(
            [REDIS_CLI, "-h", HOST, "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout


class RedisCluster:
    """Three cluster-enabled masters (no replicas) covering all 16384 slots."""

    def __init__(self, folder: Path) -> None:
        self.nodes = [RedisServer(folder / f"node{i}", cluster=True) for i in range(3)]

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        try:
            self.nodes[0].cli(
                "--cluster", "create",
                *[f"{HOST}:{n.port}" for n in self.nodes],
                "--cluster-replicas", "0",
                "--cluster-yes",
            )  # fmt: skip
            deadline = time.monotonic() + START_TIMEOUT
            while not all("cluster_state:ok" in n.cli("cluster", "info") for n in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the redis cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flush(self) -> None:
        for node in self.nodes:
            node.cli("flushall")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A standalone redis-server for the whole session."""
    require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A three-master Redis Cluster for the whole session."""
    require_redis()
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def flushed_server(redis_server: RedisServer) -> RedisServer:
    """The session's server, emptied for this test."""
    redis_server.cli("flushall")
    return redis_server


@pytest.fixture
def flushed_cluster(redis_cluster: RedisCluster) -> RedisCluster:
    """The session's cluster, emptied for this test."""
    redis_cluster.flush()
    return redis_cluster


__all__ = [
    "HOST",
    "RedisCluster",
    "RedisServer",
    "flushed_cluster",
    "flushed_server",
    "free_port",
    "redis_cluster",
    "redis_server",
    "require_redis",
]
