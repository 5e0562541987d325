"""The server TLS context of a ``tls`` or ``wss`` listener.

Client certificates: without ``cafile`` none is asked for; with it, one is asked for and,
when presented, verified against those CAs (a bad one fails the handshake); with
``require_certificate`` a client without a valid one fails the handshake too.
"""

from __future__ import annotations

import ssl

from roost.config import Listener
from roost.errors import ConfigError

MINIMUM_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def server_context(listener: Listener) -> ssl.SSLContext:
    """Raises ConfigError naming the listener and the file that cannot be used."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSIONS[listener.min_tls_version]
    context.options |= ssl.OP_NO_RENEGOTIATION  # TLS 1.2 renegotiation: a CPU cost per request
    try:
        context.load_cert_chain(listener.certfile, listener.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{listener.name}: cannot use 'certfile' {listener.certfile!r} with 'keyfile' "
            f"{listener.keyfile!r}: {exc}"
        ) from exc
    if listener.cafile:
        try:
            context.load_verify_locations(cafile=listener.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{listener.name}: cannot use 'cafile' {listener.cafile!r}: {exc}"
            ) from exc
        context.verify_mode = (
            ssl.CERT_REQUIRED if listener.require_certificate else ssl.CERT_OPTIONAL
        )
    return context
