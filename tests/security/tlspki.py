"""A test PKI for the TLS and WSS listener tests: a CA made with trustme, the broker's
certificate (for localhost and 127.0.0.1) and client certificates, written as PEM files the
broker and the clients read; and what a paho client needs to reach a listener of a running
broker (its address, TLS, the WebSocket transport)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import trustme

from brokerthread import RunningBroker

SERVER_NAME = "127.0.0.1"  # the broker certificate names it (and localhost)


@dataclass(frozen=True)
class ClientCert:
    certfile: str
    keyfile: str


class Pki:
    """A CA and the broker's certificate and key, as files in ``directory``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ca = trustme.CA()
        self.cafile = str(directory / "ca.pem")
        self.ca.cert_pem.write_to_path(self.cafile)
        server = self.ca.issue_cert(SERVER_NAME, "localhost")
        self.certfile = str(directory / "server.pem")
        self.keyfile = str(directory / "server.key")
        server.private_key_pem.write_to_path(self.keyfile)
        for blob in server.cert_chain_pems:
            blob.write_to_path(self.certfile, append=True)

    def client_cert(self, common_name: str | None) -> ClientCert:
        """A client certificate with this CN (None: a certificate with a SAN and no CN)."""
        if common_name is None:
            leaf = self.ca.issue_cert("client.example")
            common_name = "no-cn"
        else:
            leaf = self.ca.issue_cert(common_name=common_name)
        cert = ClientCert(
            str(self.directory / f"{common_name}.pem"), str(self.directory / f"{common_name}.key")
        )
        leaf.cert_chain_pems[0].write_to_path(cert.certfile)
        leaf.private_key_pem.write_to_path(cert.keyfile)
        return cert

    def server_settings(self, **more: object) -> dict[str, object]:
        """The settings of a TLS listener with this PKI's certificate (and CA)."""
        return {"certfile": self.certfile, "keyfile": self.keyfile, **more}

    def client_context(
        self, cert: ClientCert | None = None, maximum: ssl.TLSVersion | None = None
    ) -> ssl.SSLContext:
        """A client context that trusts the CA (server certificate verified)."""
        context = ssl.create_default_context(cafile=self.cafile)
        if cert is not None:
            context.load_cert_chain(cert.certfile, cert.keyfile)
        if maximum is not None:
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.maximum_version = maximum
        return context

    def paho_tls(self, cert: ClientCert | None = None) -> Callable[[mqtt.Client], None]:
        """``prepare`` for paho_helpers.connect: TLS, the server certificate verified."""

        def prepare(client: mqtt.Client) -> None:
            client.tls_set_context(self.client_context(cert))

        return prepare


@dataclass(frozen=True)
class Endpoint:
    """Where a client connects (``host``/``port``, as paho_helpers.connect wants)."""

    host: str
    port: int


def endpoint(running: RunningBroker, kind: str) -> Endpoint:
    """The first listener of ``kind`` of ``running``, by the name its certificate has."""
    return Endpoint(SERVER_NAME, running.broker.port_of(kind))


def over_websocket(path: str = "/mqtt", pki: Pki | None = None) -> Callable[[mqtt.Client], None]:
    """``prepare`` for paho_helpers.connect: WebSocket transport (over TLS with ``pki``)."""

    def prepare(client: mqtt.Client) -> None:
        client.transport = "websockets"
        client.ws_set_options(path=path)
        if pki is not None:
            client.tls_set_context(pki.client_context())

    return prepare
