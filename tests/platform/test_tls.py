"""gRPC transport security against real servers: TLS, mutual TLS, the server name
check, plaintext refused off loopback, and the settings that configure it all.

Certificates are made here, per test session, by a throwaway CA (``cryptography``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError
from quorum_testing import admin_key

from quorum import cli
from quorum.client import QuorumClient
from quorum.errors import PermissionDenied
from quorum.rpc import PlaintextRefused, RunningServer, channel, is_loopback, start_server, wait_healthy
from quorum.service import ServiceContext, ServiceParts, start_service
from quorum.settings import SERVICES, Settings
from quorum.stack import LocalStack
from quorum.tls import ClientTls, client_tls, server_tls
from services.ingest.server_files import ServerFiles
from services.payments.bootstrap import build as build_payments

SERVER_NAMES = ("localhost", "ingest")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    # Signed by a CA nobody here trusts.
    stranger_ca: Path
    stranger_cert: Path
    stranger_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return _validity(builder).sign(key, hashes.SHA256()), key


def _issue(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    common_name: str,
    usage: x509.ObjectIdentifier,
    names: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = _key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return _validity(builder).sign(ca_key, hashes.SHA256()), key


def _write(folder: Path, stem: str, pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> tuple[Path, Path]:
    cert, key = pair
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = _make_ca("quorum test CA")
    stranger = _make_ca("someone else's CA")
    ca_path, _ = _write(folder, "ca", ca)
    stranger_ca_path, _ = _write(folder, "stranger-ca", stranger)
    server = _issue(ca, "quorum", ExtendedKeyUsageOID.SERVER_AUTH, names=SERVER_NAMES, ips=("127.0.0.1", "::1"))
    server_cert, server_key = _write(folder, "server", server)
    client_cert, client_key = _write(folder, "client", _issue(ca, "dashboard", ExtendedKeyUsageOID.CLIENT_AUTH))
    stranger_cert, stranger_key = _write(
        folder, "stranger", _issue(stranger, "intruder", ExtendedKeyUsageOID.CLIENT_AUTH)
    )
    return Pki(ca_path, server_cert, server_key, client_cert, client_key, stranger_ca_path, stranger_cert, stranger_key)


def server_settings(pki: Pki, mutual: bool = False) -> Settings:
    return Settings(
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca if mutual else None,
    )


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningServer]]:
    """Starts health-only servers on 127.0.0.1 (keyword arguments go to start_server)."""
    started: list[RunningServer] = []

    def start(**kwargs: object) -> RunningServer:
        kwargs.setdefault("address", "127.0.0.1:0")
        running = start_server([], **kwargs)  # type: ignore[arg-type]
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop(0)


def check(address: str, tls: ClientTls | None) -> int:
    """One health check; returns the status or raises grpc.RpcError."""
    with channel(address, tls=tls) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return int(reply.status)


def unavailable(address: str, tls: ClientTls | None) -> str:
    """The details of the UNAVAILABLE a health check fails with."""
    with pytest.raises(grpc.RpcError) as caught:
        check(address, tls)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    return str(caught.value.details())


SERVING = health_pb2.HealthCheckResponse.SERVING


# --- TLS -----------------------------------------------------------------------------------


def test_a_client_trusting_the_ca_reaches_a_tls_server(pki: Pki, serve: Callable[..., RunningServer]) -> None:
    running = serve(tls=server_tls(server_settings(pki)))
    tls = client_tls(Settings(tls_ca_file=pki.ca))
    assert tls is not None
    for host in ("127.0.0.1", "localhost"):
        assert check(f"{host}:{running.port}", tls) == SERVING
    wait_healthy(f"127.0.0.1:{running.port}", timeout=10, tls=tls)


def test_a_plaintext_client_cannot_talk_to_a_tls_server(pki: Pki, serve: Callable[..., RunningServer]) -> None:
    running = serve(tls=server_tls(server_settings(pki)))
    unavailable(f"127.0.0.1:{running.port}", None)
    with pytest.raises(TimeoutError):
        wait_healthy(f"127.0.0.1:{running.port}", timeout=0.5)


def test_a_client_that_does_not_trust_the_ca_is_refused(pki: Pki, serve: Callable[..., RunningServer]) -> None:
    running = serve(tls=server_tls(server_settings(pki)))
    address = f"127.0.0.1:{running.port}"
    unavailable(address, ClientTls(root_certificates=pki.stranger_ca.read_bytes()))
    # The system roots do not know a private CA either.
    unavailable(address, ClientTls())


def test_the_server_name_is_checked(pki: Pki, serve: Callable[..., RunningServer]) -> None:
    running = serve(tls=server_tls(server_settings(pki)))
    address = f"127.0.0.1:{running.port}"
    named = client_tls(Settings(tls_ca_file=pki.ca, tls_server_name="ingest"))
    assert check(address, named) == SERVING
    # Signed by the trusted CA, but for other names.
    unavailable(address, ClientTls(root_certificates=pki.ca.read_bytes(), server_name="payments"))


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki: Pki, serve: Callable[..., RunningServer]) -> None:
    tls = server_tls(server_settings(pki, mutual=True))
    assert tls is not None and tls.mutual
    address = f"127.0.0.1:{serve(tls=tls).port}"
    ca = pki.ca.read_bytes()

    unavailable(address, ClientTls(root_certificates=ca))
    stranger = ClientTls(ca, pki.stranger_cert.read_bytes(), pki.stranger_key.read_bytes())
    unavailable(address, stranger)
    unavailable(address, None)

    member = client_tls(
        Settings(tls_ca_file=pki.ca, tls_client_cert_file=pki.client_cert, tls_client_key_file=pki.client_key)
    )
    assert check(address, member) == SERVING


def test_a_tls_server_logs_no_plaintext_warning(
    pki: Pki, serve: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="quorum.rpc"):
        running = serve(tls=server_tls(server_settings(pki, mutual=True)))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"serving gRPC over TLS on 127.0.0.1:{running.port} (mutual TLS" in caplog.text


# --- plaintext ---------------------------------------------------------------------------------


def test_plaintext_on_loopback_is_served_with_one_warning(
    serve: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="quorum.rpc"):
        running = serve()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"serving plaintext gRPC on loopback 127.0.0.1:{running.port} only; "
        "set QUORUM_TLS_CERT_FILE/QUORUM_TLS_KEY_FILE for TLS"
    ]
    assert check(f"127.0.0.1:{running.port}", None) == SERVING


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", "192.0.2.10:50051", "ingest:50051"])
def test_plaintext_off_loopback_is_refused(serve: Callable[..., RunningServer], address: str) -> None:
    with pytest.raises(PlaintextRefused) as caught:
        serve(address=address)
    message = str(caught.value)
    for variable in ("QUORUM_TLS_CERT_FILE", "QUORUM_TLS_KEY_FILE", "QUORUM_ALLOW_PLAINTEXT_OFF_LOOPBACK"):
        assert variable in message


def test_plaintext_off_loopback_when_allowed_says_so(
    serve: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="quorum.rpc"):
        running = serve(address="0.0.0.0:0", allow_plaintext_off_loopback=True)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"plaintext gRPC on 0.0.0.0:{running.port}" in warning
    assert "QUORUM_ALLOW_PLAINTEXT_OFF_LOOPBACK" in warning
    assert check(f"127.0.0.1:{running.port}", None) == SERVING


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.0.0.2:1", True),
        ("[::1]:50051", True),
        ("localhost:50051", True),
        ("unix:/tmp/quorum.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.0.0.7:50051", False),
        ("ingest:50051", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_a_service_refuses_plaintext_before_connecting_to_anything(tmp_path: Path) -> None:
    def build(context: ServiceContext) -> ServiceParts:
        raise AssertionError("built a service that must not start")

    # No broker either: the transport is refused first, so nothing was opened.
    settings = Settings(home=tmp_path, bind_host="0.0.0.0", kafka_bootstrap=None)
    with pytest.raises(PlaintextRefused, match="QUORUM_TLS_CERT_FILE and QUORUM_TLS_KEY_FILE"):
        start_service(build, settings)


# --- the plaintext health listener ---------------------------------------------------------


def test_the_health_listener_serves_health_only_in_plaintext(pki: Pki, serve: Callable[..., RunningServer]) -> None:
    running = serve(tls=server_tls(server_settings(pki, mutual=True)), health_address="127.0.0.1:0")
    assert running.health_port is not None
    probe = f"127.0.0.1:{running.health_port}"
    assert check(probe, None) == SERVING
    running.set_serving(False)
    assert check(probe, None) == health_pb2.HealthCheckResponse.NOT_SERVING
    # Nothing but health: reflection (on the TLS port) is not there.
    with channel(probe) as ch, pytest.raises(grpc.RpcError) as caught:
        ch.unary_unary("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")(b"", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --- a real service --------------------------------------------------------------------------------


def test_a_real_service_over_mutual_tls(pki: Pki, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca,
        tls_ca_file=pki.ca,
        tls_client_cert_file=pki.client_cert,
        tls_client_key_file=pki.client_key,
    )
    service = start_service(build_payments, settings, address="127.0.0.1:0")
    try:
        address = f"127.0.0.1:{service.port}"
        addresses = {name: address for name in SERVICES}
        with QuorumClient(addresses, api_key=admin_key(settings), tls=client_tls(settings)) as client:
            assert client.money().currency in ("", "USD")
        unavailable(address, ClientTls(root_certificates=pki.ca.read_bytes()))
    finally:
        service.stop()


# --- settings ----------------------------------------------------------------------------------------


def test_no_tls_settings_mean_plaintext() -> None:
    settings = Settings()
    assert server_tls(settings) is None
    assert client_tls(settings) is None


def test_blank_variables_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CERT_FILE", "KEY_FILE", "CA_FILE", "SERVER_NAME"):
        monkeypatch.setenv(f"QUORUM_TLS_{name}", "")
    assert client_tls(Settings()) is None


def test_a_server_certificate_makes_its_process_dial_tls(pki: Pki) -> None:
    tls = client_tls(server_settings(pki))
    assert tls == ClientTls()  # TLS against the system roots: no CA was given


@pytest.mark.parametrize(
    ("set_", "named"),
    [
        ({"CERT_FILE": "server_cert"}, "QUORUM_TLS_CERT_FILE is set but QUORUM_TLS_KEY_FILE is not"),
        ({"KEY_FILE": "server_key"}, "QUORUM_TLS_KEY_FILE is set but QUORUM_TLS_CERT_FILE is not"),
        ({"CLIENT_CERT_FILE": "client_cert"}, "QUORUM_TLS_CLIENT_CERT_FILE is set but QUORUM_TLS_CLIENT_KEY_FILE"),
        ({"CLIENT_CA_FILE": "ca"}, "QUORUM_TLS_CLIENT_CA_FILE (mutual TLS) needs"),
    ],
)
def test_incomplete_tls_settings_name_the_variables(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, set_: dict[str, str], named: str
) -> None:
    for variable, attribute in set_.items():
        monkeypatch.setenv(f"QUORUM_TLS_{variable}", str(getattr(pki, attribute)))
    with pytest.raises(SystemExit) as caught:
        cli._load_settings()
    assert named in str(caught.value)


def test_missing_or_wrong_files_name_the_variable(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUORUM_TLS_CERT_FILE", str(pki.server_cert))
    monkeypatch.setenv("QUORUM_TLS_KEY_FILE", str(tmp_path / "missing.key"))
    with pytest.raises(SystemExit, match=r"QUORUM_TLS_KEY_FILE: .*missing\.key does not exist"):
        cli._load_settings()
    # A certificate where the key belongs, and the other way round.
    monkeypatch.setenv("QUORUM_TLS_KEY_FILE", str(pki.server_cert))
    with pytest.raises(SystemExit, match=r"QUORUM_TLS_KEY_FILE: .*does not hold a PEM private key"):
        cli._load_settings()
    with pytest.raises(ValidationError, match="tls_ca_file"):
        Settings(tls_ca_file=pki.server_key)


@pytest.mark.slow
def test_the_embedded_stack_over_mutual_tls(pki: Pki, tmp_path: Path) -> None:
    env = {
        "QUORUM_TLS_CERT_FILE": str(pki.server_cert),
        "QUORUM_TLS_KEY_FILE": str(pki.server_key),
        "QUORUM_TLS_CLIENT_CA_FILE": str(pki.ca),
        "QUORUM_TLS_CA_FILE": str(pki.ca),
    }
    member = client_tls(
        Settings(tls_ca_file=pki.ca, tls_client_cert_file=pki.client_cert, tls_client_key_file=pki.client_key)
    )
    # start() waits until every child answers a health check over mutual TLS.
    with LocalStack(home=tmp_path / "stack", extra_env=env, tls=member) as stack:
        with QuorumClient(stack.addresses, api_key=stack.api_key, tls=member) as client:
            assert client.verify_ledger().balanced
        for name in SERVICES:
            unavailable(stack.address(name), None)
            assert "serving gRPC over TLS" in stack.log_tail(name, lines=200)


def test_a_key_that_does_not_match_its_certificate_is_named(pki: Pki) -> None:
    with pytest.raises(ValidationError, match=r"QUORUM_TLS_KEY_FILE .* is not the unencrypted private key"):
        Settings(tls_cert_file=pki.server_cert, tls_key_file=pki.client_key)
    with pytest.raises(ValidationError, match=r"QUORUM_TLS_CLIENT_KEY_FILE .* of QUORUM_TLS_CLIENT_CERT_FILE"):
        Settings(tls_client_cert_file=pki.client_cert, tls_client_key_file=pki.stranger_key)


def test_no_manifest_may_name_the_tls_private_keys(pki: Pki, tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_cert_file=pki.client_cert,
        tls_client_key_file=pki.client_key,
        import_roots=(pki.ca.parent,),
    )
    files = ServerFiles.under(settings.import_roots, settings.closed_paths())
    for key in (pki.server_key, pki.client_key):
        with pytest.raises(PermissionDenied, match="among the service's own files"):
            files.locate(key.name, str(key.parent))
    assert files.locate(str(pki.ca), "") == pki.ca
