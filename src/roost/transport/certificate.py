"""A verified TLS client certificate as the authenticator sees it, and the identity it
gives a client on a ``use_identity_as_username`` listener.

Pure: it reads the dictionary ``ssl.SSLSocket.getpeercert()`` returns (subject and issuer
as tuples of relative distinguished names, dates as text) and makes it plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Certificate = dict[str, object]


def certificate_fields(peercert: Mapping[str, object]) -> Certificate:
    """``subject`` and ``issuer`` as {attribute: value}, ``subject_alt_names`` as
    ["DNS:name", ...], ``serial_number``, ``not_before``, ``not_after``."""
    names = peercert.get("subjectAltName", ())
    return {
        "subject": _names(peercert.get("subject", ())),
        "issuer": _names(peercert.get("issuer", ())),
        "subject_alt_names": [f"{kind}:{value}" for kind, value in _pairs(names)],
        "serial_number": peercert.get("serialNumber"),
        "not_before": peercert.get("notBefore"),
        "not_after": peercert.get("notAfter"),
    }


def common_name(certificate: Certificate) -> str | None:
    """The subject's (first) CN (commonName), the identity Mosquitto's
    ``use_identity_as_username`` takes; None when the certificate has none."""
    subject = certificate.get("subject")
    if not isinstance(subject, dict):
        return None
    name = subject.get("commonName")
    return name if isinstance(name, str) and name else None


def _names(rdns: object) -> dict[str, str]:
    """{attribute: value} of a distinguished name; a repeated attribute keeps its first (the
    CN Mosquitto's ``use_identity_as_username`` takes too)."""
    names: dict[str, str] = {}
    if isinstance(rdns, Iterable):
        for rdn in rdns:
            for key, value in _pairs(rdn):
                names.setdefault(key, value)
    return names


def _pairs(items: object) -> list[tuple[str, str]]:
    if not isinstance(items, Iterable):
        return []
    return [
        (str(item[0]), str(item[1])) for item in items if isinstance(item, tuple) and len(item) == 2
    ]
