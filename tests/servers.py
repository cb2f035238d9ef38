"""Real servers for the cluster tests: Ray nodes started with ``ray start`` and a PostgreSQL
on 127.0.0.1. Each is stopped by the PIDs this module started, never with ``ray stop``."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray() -> str:
    return str(Path(sys.executable).with_name("ray"))


@dataclass
class RayNode:
    """One ``ray start --block`` process and what it started."""

    process: subprocess.Popen
    node_id: str = ""
    tree: list[psutil.Process] = field(default_factory=list)

    def remember_tree(self) -> None:
        """Record the processes this node runs (so they can be stopped even if orphaned)."""
        try:
            parent = psutil.Process(self.process.pid)
            known = {p.pid for p in self.tree}
            self.tree += [p for p in parent.children(recursive=True) if p.pid not in known]
        except psutil.NoSuchProcess:
            pass

    def raylet(self) -> psutil.Process:
        """This node's raylet."""
        self.remember_tree()
        return next(p for p in self.tree if p.is_running() and p.name() == "raylet")

    def trial_workers(self) -> list[psutil.Process]:
        """Trial actors running on this node (children of its raylet)."""
        try:
            return [p for p in self.raylet().children() if "ImplicitFunc" in " ".join(p.cmdline())]
        except (psutil.Error, StopIteration):
            return []

    def stop(self) -> None:
        """SIGTERM the ``ray start`` process, then SIGKILL whatever of this node is left."""
        self.remember_tree()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for proc in self.tree:
            try:
                proc.kill()
            except psutil.Error:
                pass


@dataclass
class RayCluster:
    """A head and worker nodes on 127.0.0.1 with token auth, in a private temp dir and HOME."""

    root: Path
    port: int
    env: dict[str, str]
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The head's GCS address."""
        return f"127.0.0.1:{self.port}"

    def start_node(self, head: bool = False, wrap: list[str] | None = None) -> RayNode:
        """Start a node (1 CPU, capped memory); ``wrap`` runs it under another command (e.g. unshare)."""
        before = self._node_ids()
        args = [_ray(), "start", "--num-cpus", "1", "--object-store-memory", "100000000", "--memory", "2000000000"]
        if head:
            args += ["--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port)]
            args += ["--temp-dir", str(self.root / "ray"), "--include-dashboard=false"]
        else:
            args += ["--address", self.address]
        log = (self.root / f"node-{len(self.nodes)}.log").open("w")
        command = [*(wrap or []), *args, "--block"]
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        node = RayNode(process)
        self.nodes.append(node)
        deadline = time.time() + 120
        while time.time() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"ray start exited: {(self.root / f'node-{len(self.nodes) - 1}.log').read_text()}")
            new = self._node_ids() - before
            if new:
                node.node_id = new.pop()
                node.remember_tree()
                return node
            time.sleep(1)
        raise RuntimeError("the Ray node did not join within 120 s")

    def _node_ids(self) -> set[str]:
        """Alive node ids, asked in a fresh process (this one must not become a Ray driver)."""
        if not self.nodes:
            return set()
        code = (
            "import ray, logging;"
            f"ray.init(address='{self.address}', include_dashboard=False, logging_level=logging.ERROR);"
            "print(' '.join(n['NodeID'] for n in ray.nodes() if n['Alive']))"
        )
        proc = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        return set(proc.stdout.split()) if proc.returncode == 0 else set()

    def stop(self) -> None:
        """Stop every node, workers first."""
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def ray_cluster() -> RayCluster:
    """A cluster with no nodes yet: token auth on with a generated token, private HOME."""
    root = Path(tempfile.mkdtemp(prefix="ag-ray-"))  # short: Ray's socket paths have a length limit
    (root / "home").mkdir()
    env = {**os.environ, "HOME": str(root / "home"), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    env["PYTHONWARNINGS"] = "ignore"
    return RayCluster(root, free_port(), env)


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server binaries, if installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@dataclass
class Postgres:
    """A PostgreSQL server on 127.0.0.1 with password authentication, run as user postgres."""

    root: Path
    port: int
    password: str

    def url(self, database: str = "postgres", with_password: bool = True) -> str:
        """A SQLAlchemy URL for ``database``."""
        secret = f":{self.password}" if with_password else ""
        return f"postgresql+psycopg://postgres{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE name``."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", password=self.password, autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        """``pg_ctl stop`` on this server's own data folder (its postmaster PID)."""
        bindir = postgres_bin()
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(bindir / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "fast",
                "stop",
            ],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> Postgres:
    """initdb + pg_ctl start as user postgres, listening on 127.0.0.1 only."""
    bindir = postgres_bin()
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="ag-pg-"))
    password = "pw-" + secrets.token_hex(12)
    (root / "pwfile").write_text(password + "\n")
    shutil.chown(root, "postgres")
    shutil.chown(root / "pwfile", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [
            *as_postgres,
            str(bindir / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={root / 'pwfile'}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
    subprocess.run(
        [
            *as_postgres,
            str(bindir / "pg_ctl"),
            "-D",
            str(root / "data"),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return Postgres(root, port, password)
