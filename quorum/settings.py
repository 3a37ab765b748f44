"""One typed settings object per process, read once from ``QUORUM_*`` variables.

The embedded default needs none of them: SQLite and a local-disk object store
under ``QUORUM_HOME`` (``~/.quorum``), an in-process Redis and a broker that
``quorum up`` starts itself. The distributed deployment sets the URLs.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_serializer, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from quorum.security.principal import Role

ServiceName = Literal["ingest", "tasking", "consensus", "payments", "access"]
SERVICES: tuple[ServiceName, ...] = ("ingest", "tasking", "consensus", "payments", "access")


# URLs that may hold a password: printed and logged with the password masked.
URL_FIELDS = frozenset({"database_url", "access_database_url", "redis_url"})


def masked_url(url: str) -> str:
    """``url`` with the password in it, if any, shown as ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class Settings(BaseSettings):
    """Configuration of one Quorum process. Invalid values fail at start-up, naming the variable."""

    model_config = SettingsConfigDict(env_prefix="QUORUM_", frozen=True, extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".quorum")
    # SQLAlchemy URL. Unset: sqlite file <home>/<service>.db. Each service needs its own database.
    database_url: str | None = None
    # host:port[,host:port]. Unset: `quorum serve` refuses to start; `quorum up` starts a broker.
    kafka_bootstrap: str | None = None
    # Prefix of every topic name and consumer group, e.g. quorum.tasks.v1.
    topic_prefix: str = "quorum"
    kafka_partitions: int = Field(default=6, ge=1)
    # redis://host:port/db. Unset: an in-process Redis (one tasking replica only).
    redis_url: str | None = None
    # file:///path or s3://bucket. Unset: file://<home>/objects.
    object_store_url: str | None = None
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = ""
    s3_secret_key: SecretStr = SecretStr("")
    s3_region: str = "us-east-1"
    s3_secure: bool = False
    # Base64 of 32 random bytes: wraps the per-object data keys of the object store and seals
    # small secrets (quorum.crypto). Unset: <home>/secrets/master.key, created on first use.
    # Checked by quorum.crypto.load_master_keyring, not here: pydantic echoes the rejected
    # input in its errors, and a key must never reach a log.
    master_key: SecretStr | None = None
    # Comma-separated base64 keys that only unwrap, kept while `quorum storage rewrap` moves
    # everything to master_key after a rotation.
    previous_master_keys: SecretStr | None = None
    # Base64 of 32 random bytes: API key secrets are stored as HMAC-SHA256 under it
    # (quorum.security.keyhash), so every service needs it to check keys. Unset:
    # <home>/secrets/api-key-hash.key, created on first use; required when the access
    # database is shared. Checked where it is loaded, like master_key.
    api_key_hash_key: SecretStr | None = None
    # Comma-separated older hashing keys: keys hashed under them still verify, and are
    # re-hashed under api_key_hash_key on their next successful check.
    previous_api_key_hash_keys: SecretStr | None = None

    bind_host: str = "127.0.0.1"
    ingest_addr: str = "127.0.0.1:50051"
    tasking_addr: str = "127.0.0.1:50052"
    consensus_addr: str = "127.0.0.1:50053"
    payments_addr: str = "127.0.0.1:50054"
    access_addr: str = "127.0.0.1:50055"
    dashboard_port: int = 8501
    # Operator and admin keys must have TOTP enrolled, and give the code, to see the dashboard.
    # Over gRPC their keys keep working alone; require_mfa_roles covers every service.
    dashboard_require_totp: bool = False
    # Comma-separated roles (e.g. operator,admin) whose keys every service refuses by
    # themselves: they sign in with a TOTP code and send the session token instead (the
    # dashboard asks for the code too). Empty: keys alone work, as on the embedded default.
    require_mfa_roles: Annotated[frozenset[Role], NoDecode] = frozenset()
    # How long a session from a TOTP sign-in lasts.
    session_ttl_s: float = Field(default=12 * 3600, gt=0)
    grpc_workers: int = Field(default=32, ge=1)
    # Writes are refused (RESOURCE_EXHAUSTED, retry-after-ms) while more events than this
    # wait in the service's outbox: the broker is down or slower than the callers.
    max_outbox_backlog: int = Field(default=50_000, ge=1)
    # New work (tasking's GetNextTask, ingest's UploadFiles and ImportManifest) is refused
    # (RESOURCE_EXHAUSTED, retry-after-ms) while a consumer group of another service is more
    # than this many records behind on the topics that work feeds; 0: never refused.
    max_consumer_lag: int = Field(default=10_000, ge=0)
    # How often each service reads that lag from the broker (quorum.lag.LagMonitor).
    consumer_lag_poll_s: float = Field(default=2.0, gt=0)
    # On SIGTERM: seconds between turning health NOT_SERVING and refusing calls, so load
    # balancers stop sending first; then in-flight calls get drain_grace_s to finish.
    drain_delay_s: float = Field(default=0.5, ge=0)
    drain_grace_s: float = Field(default=5.0, ge=0)

    # Where every service checks API keys: the access service's database. Unset: the
    # access service's own (sqlite <home>/access.db by default).
    access_database_url: str | None = None
    # The key this process's clients (CLI, demo, dashboard) send. Unset: the local user's
    # key that the embedded stack stored in <home>/credentials.
    api_key: SecretStr | None = None
    # Revoked keys and changed roles take effect in every process within this many seconds.
    auth_poll_seconds: float = Field(default=2.0, gt=0)
    # Calls per second per API key and service (RESOURCE_EXHAUSTED beyond); 0: no limit.
    rate_limit_per_second: int = Field(default=200, ge=0)
    # gRPC transport security (docs/security.md); every file is PEM. With a certificate and
    # key a server serves TLS; with tls_client_ca_file too it requires client certificates
    # signed by that CA (mutual TLS). Without them it serves plaintext, on loopback only
    # unless allow_plaintext_off_loopback (for a mesh that encrypts the traffic itself).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Clients verify servers against tls_ca_file (unset: the system roots), present
    # tls_client_cert_file/tls_client_key_file for mutual TLS, and check tls_server_name
    # in the server's certificate instead of the host they dial.
    tls_ca_file: Path | None = None
    tls_client_cert_file: Path | None = None
    tls_client_key_file: Path | None = None
    tls_server_name: str | None = None
    allow_plaintext_off_loopback: bool = False
    # Set: a second, plaintext listener on bind_host:health_port that serves only
    # grpc.health.v1, for probes that cannot speak TLS (Kubernetes' grpc probes).
    health_port: int | None = Field(default=None, ge=1, le=65535)

    # Consensus re-estimates workers over each job's whole answer matrix this often; 0: never.
    consensus_refit_seconds: float = Field(default=30.0, ge=0)

    # Comma-separated absolute folders whose files an operator's or admin's manifest may name
    # (ImportManifest's `path` lines), symlinks and `..` resolved first. Empty: no manifest
    # may name a file on the server. QUORUM_HOME, SQLite databases, the TLS private keys
    # (closed_paths) and /proc, /sys and /dev stay out even under a root.
    import_roots: Annotated[tuple[Path, ...], NoDecode] = ()

    # Ingest limits.
    max_text_bytes: int = Field(default=64 * 1024, ge=1)
    max_file_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=50_000_000, ge=1)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # repr() and str() (and so every log line that shows the settings) mask URL
        # passwords; the secret fields are SecretStr, which masks itself.
        for name, value in super().__repr_args__():
            yield name, masked_url(value) if name in URL_FIELDS and isinstance(value, str) else value

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix_is_a_name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError("use letters, digits, '.', '_' or '-'")
        return value

    @field_validator("require_mfa_roles", mode="before")
    @classmethod
    def _roles_by_name(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        names = {name.strip().lower() for name in value.split(",") if name.strip()}
        unknown = sorted(names - {role.value for role in Role})
        if unknown:
            raise ValueError(f"unknown roles {', '.join(unknown)}: use {', '.join(role.value for role in Role)}")
        return frozenset(Role(name) for name in names)

    @field_serializer("require_mfa_roles")
    def _roles_as_names(self, roles: frozenset[Role]) -> str:
        # As the variable takes them, so a dump can be set back as the environment.
        return ",".join(role.value for role in Role if role in roles)

    @field_validator(
        "tls_cert_file",
        "tls_key_file",
        "tls_client_ca_file",
        "tls_ca_file",
        "tls_client_cert_file",
        "tls_client_key_file",
        "tls_server_name",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # Compose and ConfigMaps write an unset variable as an empty string.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("import_roots", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("import_roots")
    @classmethod
    def _absolute_folders(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        for root in value:
            # A relative root would depend on the folder the service happens to start in.
            if not root.is_absolute():
                raise ValueError(f"{str(root)!r} is not an absolute path")
        return value

    @field_validator("tls_cert_file", "tls_client_ca_file", "tls_ca_file", "tls_client_cert_file")
    @classmethod
    def _holds_certificates(cls, value: Path | None) -> Path | None:
        return _pem_file(value, "-----BEGIN CERTIFICATE-----", "a PEM certificate")

    @field_validator("tls_key_file", "tls_client_key_file")
    @classmethod
    def _holds_a_key(cls, value: Path | None) -> Path | None:
        return _pem_file(value, "PRIVATE KEY-----", "a PEM private key")

    @model_validator(mode="after")
    def _tls_files_come_in_pairs(self) -> Settings:
        pairs = (
            ("QUORUM_TLS_CERT_FILE", self.tls_cert_file, "QUORUM_TLS_KEY_FILE", self.tls_key_file),
            (
                "QUORUM_TLS_CLIENT_CERT_FILE",
                self.tls_client_cert_file,
                "QUORUM_TLS_CLIENT_KEY_FILE",
                self.tls_client_key_file,
            ),
        )
        for first, first_value, second, second_value in pairs:
            if (first_value is None) != (second_value is None):
                given, missing = (first, second) if second_value is None else (second, first)
                raise ValueError(f"{given} is set but {missing} is not: set both or neither")
            if first_value is not None and second_value is not None:
                _check_key_pair(first, first_value, second, second_value)
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError(
                "QUORUM_TLS_CLIENT_CA_FILE (mutual TLS) needs the server's own certificate: "
                "set QUORUM_TLS_CERT_FILE and QUORUM_TLS_KEY_FILE too"
            )
        return self

    @property
    def client_tls_enabled(self) -> bool:
        """Whether this process dials gRPC servers over TLS (see :func:`quorum.tls.client_tls`)."""
        return any(
            value is not None
            for value in (self.tls_cert_file, self.tls_ca_file, self.tls_client_cert_file, self.tls_server_name)
        )

    def service_addr(self, service: ServiceName) -> str:
        return str(getattr(self, f"{service}_addr"))

    def service_port(self, service: ServiceName) -> int:
        return int(self.service_addr(service).rsplit(":", 1)[1])

    def database_url_for(self, service: ServiceName) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / f'{service}.db'}"

    def access_database(self) -> str:
        return self.access_database_url or self.database_url_for("access")

    def access_database_is_shared(self) -> bool:
        """Whether processes on other hosts may use the access database (anything but SQLite):
        then they must all be given the same secrets instead of each making its own."""
        return not self.access_database().startswith("sqlite")

    def access_database_in_home(self) -> bool:
        """Whether the access database is a SQLite file under ``home`` (or in memory): then the
        access service using it is this home's, with this home's embedded keys."""
        import os

        from sqlalchemy.engine import make_url

        url = self.access_database()
        if not url.startswith("sqlite"):
            return False
        path = make_url(url).database
        if not path or path == ":memory:":
            return True
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(self.home))

    def client_api_key(self) -> str | None:
        """The key clients of this process send: QUORUM_API_KEY, else the local user's."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        from quorum.security.keys import read_local_key

        return read_local_key(self.home)

    def closed_paths(self) -> tuple[Path, ...]:
        """The files and folders of the service itself, which no manifest may name: the whole
        home (embedded keys, credentials, SQLite databases with key hashes and sealed TOTP
        secrets, logs, the local object store), the SQLite databases configured outside it
        (with their journal files) and the TLS private keys."""
        from sqlalchemy.engine import make_url

        databases: list[Path] = []
        for url in {self.access_database(), *(self.database_url_for(name) for name in SERVICES)}:
            path = make_url(url).database if url.startswith("sqlite") else None
            if path and path != ":memory:" and not Path(path).is_relative_to(self.home):
                databases += [Path(path + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
        keys = (self.tls_key_file, self.tls_client_key_file)
        return (self.home, *sorted(databases), *(key for key in keys if key is not None))

    def object_store(self) -> str:
        return self.object_store_url or (self.home / "objects").as_uri()

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap:
            raise RuntimeError(
                "QUORUM_KAFKA_BOOTSTRAP is not set: give the broker address (host:port), "
                "or run the whole embedded stack with `quorum up`"
            )
        return self.kafka_bootstrap


def _pem_file(path: Path | None, marker: str, what: str) -> Path | None:
    """``path`` when it names a readable file holding ``marker``; raises ValueError otherwise."""
    if path is None:
        return None
    if not path.is_file():
        raise ValueError(f"{path} does not exist or is not a file")
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ValueError(f"{path} cannot be read: {exc.strerror}") from None
    if marker not in text:
        raise ValueError(f"{path} does not hold {what}")
    return path


def _check_key_pair(cert_variable: str, cert: Path, key_variable: str, key: Path) -> None:
    """Raises ValueError naming both variables unless ``key`` is the unencrypted private key
    of the certificate in ``cert``: gRPC would only say that it cannot bind."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        # A password callback that gives none: an encrypted key fails instead of prompting.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        raise ValueError(
            f"{key_variable} ({key}) is not the unencrypted private key of {cert_variable} ({cert}): {exc.reason}"
        ) from None
