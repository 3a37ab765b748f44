"""TLS for gRPC: the server's certificate (and, for mutual TLS, the CA its clients'
certificates must chain to) and what a client needs to dial a TLS server.

Both are read once from :class:`~quorum.settings.Settings`, which has already checked
that the files exist and hold PEM; nothing here parses certificates itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc

from quorum.settings import Settings


@dataclass(frozen=True)
class ServerTls:
    """The server's certificate chain and key (PEM). With ``client_ca`` set the server
    requires every client to present a certificate signed by it: mutual TLS."""

    certificate_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.mutual,
        )


@dataclass(frozen=True)
class ClientTls:
    """How a client dials a TLS server: the CA to verify it against (None: the system
    roots), a certificate and key to present for mutual TLS, and the name to check in the
    server's certificate instead of the dialled host (None: the host)."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def options(self) -> list[tuple[str, str]]:
        """Channel options to add to a secure channel's own."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def server_tls(settings: Settings) -> ServerTls | None:
    """The server side of ``settings``; None when no certificate is configured (plaintext).
    Reads the files; raises OSError when one became unreadable since start-up."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return ServerTls(
        certificate_chain=settings.tls_cert_file.read_bytes(),
        private_key=settings.tls_key_file.read_bytes(),
        client_ca=_read(settings.tls_client_ca_file),
    )


def client_tls(settings: Settings) -> ClientTls | None:
    """The client side of ``settings``; None (plaintext) unless TLS is configured.

    A process that serves TLS dials its peers over TLS too, so a server certificate turns
    it on as well as any client-side setting. A client that only needs the system roots
    sets ``QUORUM_TLS_CA_FILE`` to the system bundle. Reads the files; raises OSError when
    one became unreadable since start-up."""
    if not settings.client_tls_enabled:
        return None
    return ClientTls(
        root_certificates=_read(settings.tls_ca_file),
        certificate_chain=_read(settings.tls_client_cert_file),
        private_key=_read(settings.tls_client_key_file),
        server_name=settings.tls_server_name,
    )
