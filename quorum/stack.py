"""The whole marketplace on one machine: the embedded Kafka broker, the four
services as processes of their own, and the dashboard.

Each service runs as ``quorum serve NAME`` in a child process with its own
SQLite file under the stack's home, so the machine's cores are shared out the
way they would be in a deployment and a service can be killed alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from quorum.broker import EmbeddedBroker, free_port, wait_for_port
from quorum.db import make_engine
from quorum.rpc import plaintext_loopback_notice, wait_healthy
from quorum.security.keyhash import KeyHasher, load_key_hasher
from quorum.security.keys import ensure_local_key
from quorum.settings import SERVICES, ServiceName, Settings
from quorum.tls import ClientTls


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


@dataclass
class LocalStack:
    """Starts and stops the embedded stack. ``ports=None`` picks free ports.

    ``extra_env`` is passed to every child (e.g. QUORUM_REDIS_URL to use a real Redis).
    The children inherit QUORUM_TLS_* from this process's environment; when they serve
    TLS, ``tls`` is how to reach them (:func:`quorum.tls.client_tls` of the same settings),
    and their certificate must name 127.0.0.1 (or set QUORUM_TLS_SERVER_NAME).
    """

    home: Path
    ports: dict[ServiceName, int] | None = None
    dashboard: bool = False
    dashboard_port: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # Each service needs a database of its own; unset, each gets a SQLite file under home.
    database_urls: dict[ServiceName, str] = field(default_factory=dict)
    tls: ClientTls | None = None
    broker: EmbeddedBroker | None = None
    # The local user's admin key, created on first start and kept in <home>/credentials.
    api_key: str = field(default="", repr=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # The argv and environment each child was started with, so that it can be restarted alone.
    _launches: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.home = self.home.expanduser().resolve()
        self.log_dir = self.home / "logs"
        if self.ports is None:
            self.ports = {name: free_port() for name in SERVICES}
        if self.dashboard and self.dashboard_port is None:
            self.dashboard_port = free_port()

    def address(self, service: ServiceName) -> str:
        if self.ports is None:
            raise RuntimeError("ports are chosen in __post_init__")
        return f"127.0.0.1:{self.ports[service]}"

    @property
    def addresses(self) -> dict[ServiceName, str]:
        return {name: self.address(name) for name in SERVICES}

    def env(self) -> dict[str, str]:
        if self.broker is None:
            raise RuntimeError("the stack is not started")
        env = {k: v for k, v in os.environ.items() if k != "QUORUM_DATABASE_URL"}
        env.update(self.extra_env)
        env["QUORUM_HOME"] = str(self.home)
        env["QUORUM_KAFKA_BOOTSTRAP"] = self.broker.bootstrap
        for name in SERVICES:
            env[f"QUORUM_{name.upper()}_ADDR"] = self.address(name)
        if "access" in self.database_urls:
            env["QUORUM_ACCESS_DATABASE_URL"] = self.database_urls["access"]
        return env

    def transport_notice(self) -> str:
        """How the services serve gRPC, for the start-up banner: the children take their TLS
        settings from this process's environment and ``extra_env``."""
        certificate = {**os.environ, **self.extra_env}.get("QUORUM_TLS_CERT_FILE", "")
        if certificate.strip():
            return "serving gRPC over TLS on 127.0.0.1"
        return plaintext_loopback_notice("127.0.0.1")

    def access_database_url(self) -> str:
        return self.database_urls.get("access") or f"sqlite:///{self.home / 'access.db'}"

    def key_hasher(self) -> KeyHasher:
        """The API key hasher the children will load: the hashing keys they inherit from this
        process's environment and ``extra_env``, else the key file under ``home``, made here
        before they start. Raises quorum.crypto.KeyConfigError like they would."""
        env = {**os.environ, **self.extra_env}
        current, previous = (env.get(f"QUORUM_{name}") for name in ("API_KEY_HASH_KEY", "PREVIOUS_API_KEY_HASH_KEYS"))
        settings = Settings(
            home=self.home,
            access_database_url=self.access_database_url(),
            api_key_hash_key=SecretStr(current) if current is not None else None,
            previous_api_key_hash_keys=SecretStr(previous) if previous is not None else None,
        )
        return load_key_hasher(settings)

    def start(self, timeout: float = 60.0) -> LocalStack:
        """Starts everything and waits until every service reports SERVING.

        Raises RuntimeError naming the port that is taken or the service that died,
        with the end of its log.
        """
        if self.ports is None:
            raise RuntimeError("ports are chosen in __post_init__")
        for name, port in self.ports.items():
            if not _port_free(port):
                raise RuntimeError(
                    f"port {port} for {name} is in use (another `quorum up`?); "
                    f"set QUORUM_{name.upper()}_ADDR to another host:port"
                )
        # Here, not at the top: quorum imports no service package at import time.
        from services.access.audit import offline_key_recorder

        self.log_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(self.access_database_url())
        try:
            audited = offline_key_recorder(engine, "offline:quorum up")
            self.api_key = ensure_local_key(engine, self.home, self.key_hasher(), recorded=audited)
        finally:
            engine.dispose()
        self.broker = EmbeddedBroker(log_path=self.log_dir / "broker.log").start()
        env = self.env()
        try:
            for name in SERVICES:
                service_env = {
                    **env,
                    **({"QUORUM_DATABASE_URL": self.database_urls[name]} if name in self.database_urls else {}),
                }
                self._spawn(name, [sys.executable, "-m", "quorum.cli", "serve", name], service_env)
            for name in SERVICES:
                self._wait_service(name, timeout)
            if self.dashboard:
                self._start_dashboard(env, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self._launches[name] = (argv, env)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.processes[name] = subprocess.Popen(  # noqa: S603 - argv is this Python and our own module
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait_service(self, name: ServiceName, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        process = self.processes[name]
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}:\n{self.log_tail(name)}")
            try:
                wait_healthy(self.address(name), timeout=0.5, tls=self.tls)
                return
            except TimeoutError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{name} did not become healthy in {timeout:.0f} s:\n{self.log_tail(name)}"
                    ) from exc

    def _start_dashboard(self, env: dict[str, str], timeout: float) -> None:
        from dashboard.launch import streamlit_command

        if self.dashboard_port is None:
            raise RuntimeError("the dashboard is not enabled")
        self._spawn("dashboard", streamlit_command("127.0.0.1", self.dashboard_port), env)
        if not wait_for_port("127.0.0.1", self.dashboard_port, timeout):
            raise RuntimeError(f"the dashboard did not start:\n{self.log_tail('dashboard')}")

    @property
    def dashboard_url(self) -> str | None:
        return f"http://127.0.0.1:{self.dashboard_port}" if self.dashboard else None

    def check_alive(self) -> list[str]:
        """Names of children that have exited."""
        return [name for name, p in self.processes.items() if p.poll() is not None]

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, timeout: float = 20.0) -> int:
        """Sends ``sig`` to one child (SIGKILL by default: no clean-up at all) and waits
        for it to exit; returns its exit code. Raises KeyError for an unknown name and
        subprocess.TimeoutExpired when it outlives ``timeout``."""
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(sig)
        return process.wait(timeout)

    def restart(self, name: ServiceName, timeout: float = 60.0) -> None:
        """Starts a service again with the argv and environment of its first start (its
        database, port and broker are the same) and waits until it is SERVING. A child
        still running is killed first. Raises RuntimeError like :meth:`start`."""
        if name in self.processes and self.processes[name].poll() is None:
            self.kill(name)
        argv, env = self._launches[name]
        # No wait for the port: its old connections linger in TIME_WAIT for a minute, but
        # the gRPC server binds with SO_REUSEADDR.
        self._spawn(name, argv, env)
        self._wait_service(name, timeout)

    def restart_broker(self, down_s: float = 0.5, timeout: float = 15.0) -> None:
        """Stops the embedded broker and starts an empty one on the same address. Its
        storage is in memory, so every topic, record, group and committed offset is gone:
        the services must notice and recover from their own databases."""
        if self.broker is None:
            raise RuntimeError("the stack is not started")
        port = self.broker.port
        self.broker.stop()
        time.sleep(down_s)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.broker = EmbeddedBroker(port=port, log_path=self.log_dir / "broker.log").start(timeout)
                return
            except RuntimeError:
                # The old process's socket may take a moment to let go of the port.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to every child at once (services drain and commit), SIGKILL after ``timeout``."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        if self.broker:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
