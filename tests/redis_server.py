"""Real redis-servers on loopback ports, started and stopped by the tests: a single server (with
a password, ACL users or TLS under a self-signed CA), a 3-master Redis Cluster, and a primary
with a replica watched by a Sentinel."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import pytest

from .support import free_port

CLUSTER_SLOTS = 16384
SENTINEL_SERVICE = "segment"
CLUSTER_NODE_ARGUMENTS = [
    "--cluster-enabled", "yes",
    # Longer than the tests' faults, so that no node is marked failed (the other masters go on
    # serving their slots).
    "--cluster-node-timeout", "3000",
    "--cluster-require-full-coverage", "no",
]  # fmt: skip


def require_redis_server() -> str:
    """The redis-server binary; skip without it, unless CI says these tests must run."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("TEST_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed and TEST_REQUIRE_REDIS=1")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return binary


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports nothing listens on, found together so that none repeats."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def make_tls_files(directory: Path) -> dict[str, Path]:
    """A self-signed CA and a server certificate it signed for 127.0.0.1, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("TEST_REQUIRE_REDIS") == "1":
            pytest.fail("openssl is not installed and TEST_REQUIRE_REDIS=1")
        pytest.skip("openssl is not installed")
    files = {name: directory / name for name in ("ca.crt", "ca.key", "server.crt", "server.key")}
    # What Python 3.13's strict verification (VERIFY_X509_STRICT) requires of a chain: key
    # usages on both, and the server's certificate naming its issuer's key.
    (directory / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands: list[list[Any]] = [
        [openssl, "req", "-x509", *key, "-keyout", files["ca.key"], "-out", files["ca.crt"],
         "-days", "1", "-subj", "/CN=sentry-segment test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *key, "-keyout", files["server.key"], "-out", directory / "server.csr",
         "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", directory / "server.csr", "-CA", files["ca.crt"],
         "-CAkey", files["ca.key"], "-CAcreateserial", "-out", files["server.crt"], "-days", "1",
         "-extfile", directory / "san.ext"],
    ]  # fmt: skip
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True, timeout=30)
    return files


class RedisServer:
    def __init__(
        self,
        binary: str,
        port: Optional[int] = None,
        *,
        arguments: Sequence[str] = (),
        tls: Optional[dict[str, Path]] = None,
        directory: Optional[Path] = None,
    ) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.arguments = list(arguments)
        self.tls = tls
        self.directory = directory
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def uri(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            self.binary, "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--loglevel", "warning",
        ]  # fmt: skip
        if self.directory is not None:
            command += ["--dir", str(self.directory)]
        if self.tls is None:
            command += ["--port", str(self.port)]
        else:
            command += [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls["server.crt"]),
                "--tls-key-file", str(self.tls["server.key"]),
                "--tls-ca-cert-file", str(self.tls["ca.crt"]),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        self.process = subprocess.Popen([*command, *self.arguments], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers():
            assert self.process.poll() is None, f"redis-server exited: {self.arguments}"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGCONT)
                self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as in a hung host."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def client(self, **options: Any) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **options)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                if self.tls is None:
                    return self._pong(connection)
                context = ssl.create_default_context(cafile=str(self.tls["ca.crt"]))
                with context.wrap_socket(connection, server_hostname="127.0.0.1") as secured:
                    return self._pong(secured)
        except OSError:
            return False

    @staticmethod
    def _pong(connection: socket.socket) -> bool:
        connection.sendall(b"PING\r\n")
        # +PONG, or -NOAUTH from a server that wants a password first: either way it answers.
        return connection.recv(16)[:1] in (b"+", b"-")


class RedisClusterServers:
    """Three masters, no replicas, each serving a third of the slots."""

    def __init__(self, binary: str, directory: Path, masters: int = 3) -> None:
        # Each node's bus on its own free port: the default, port + 10000, may be taken or
        # past 65535.
        ports = free_ports(2 * masters)
        self.bus_ports = ports[masters:]
        self.nodes = [
            RedisServer(
                binary,
                ports[index],
                directory=directory,
                arguments=[
                    *CLUSTER_NODE_ARGUMENTS,
                    "--cluster-config-file",
                    f"nodes-{index}.conf",
                    "--cluster-port",
                    str(self.bus_ports[index]),
                ],
            )
            for index in range(masters)
        ]

    @property
    def uri(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        share = CLUSTER_SLOTS // len(self.nodes)
        for index, node in enumerate(self.nodes):
            last = CLUSTER_SLOTS - 1 if index == len(self.nodes) - 1 else (index + 1) * share - 1
            node.client().execute_command("CLUSTER", "ADDSLOTS", *range(index * share, last + 1))
        for node, bus_port in zip(self.nodes[1:], self.bus_ports[1:]):
            self.nodes[0].client().execute_command(
                "CLUSTER", "MEET", "127.0.0.1", node.port, bus_port
            )
        deadline = time.monotonic() + 20
        while not all(self._ready(node) for node in self.nodes):
            assert time.monotonic() < deadline, "the cluster did not form"
            time.sleep(0.1)

    def node_for(self, key: str) -> RedisServer:
        """The master serving the key's slot."""
        from redis.crc import key_slot

        share = CLUSTER_SLOTS // len(self.nodes)
        return self.nodes[min(key_slot(key.encode()) // share, len(self.nodes) - 1)]

    def restart(self, node: RedisServer) -> None:
        """Start a killed node again: it rejoins with its node ID and slots from its file."""
        node.start()
        deadline = time.monotonic() + 20
        while not all(self._ready(other) for other in self.nodes):
            assert time.monotonic() < deadline, "the node did not rejoin the cluster"
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _ready(self, node: RedisServer) -> bool:
        info = node.client().execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text and f"cluster_known_nodes:{len(self.nodes)}" in text


class RedisSentinelServers:
    """A primary, its replica and one Sentinel that fails over to the replica in about 1-2 s."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.primary = RedisServer(binary, directory=directory)
        self.replica = RedisServer(
            binary, directory=directory, arguments=["--replicaof", "127.0.0.1", ""]
        )
        self.replica.arguments[-1] = str(self.primary.port)
        self.sentinel_port = free_port()
        self.sentinel: Optional[subprocess.Popen[bytes]] = None

    @property
    def uri(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SENTINEL_SERVICE}"

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} 5000\n"
        )
        self.sentinel = subprocess.Popen(
            [self.binary, str(config), "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while self.primary_port() != self.primary.port:
            assert time.monotonic() < deadline, "the sentinel did not find the primary"
            time.sleep(0.1)

    def primary_port(self) -> Optional[int]:
        """The port of the primary the Sentinel names now, None before it names one."""
        import redis

        try:
            sentinel: Any = redis.Redis(host="127.0.0.1", port=self.sentinel_port, socket_timeout=2)
            address = sentinel.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE
            )
        except redis.RedisError:
            return None
        return int(address[1]) if address else None

    def stop(self) -> None:
        if self.sentinel is not None:
            self.sentinel.terminate()
            self.sentinel.wait(timeout=10)
            self.sentinel = None
        self.replica.stop()
        self.primary.stop()
