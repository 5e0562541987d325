"""A verified client certificate as plain data, and the CN a use_identity_as_username
listener takes from it (roost.transport.certificate)."""

from __future__ import annotations

from roost.transport.certificate import certificate_fields, common_name


def test_the_first_cn_is_the_identity_as_in_mosquitto() -> None:
    peercert = {
        "subject": (
            (("organizationName", "Acme"),),
            (("commonName", "device-7"),),
            (("commonName", "admin"),),
        ),
        "issuer": ((("commonName", "Acme CA"),),),
    }
    fields = certificate_fields(peercert)
    assert common_name(fields) == "device-7"
    assert fields["issuer"] == {"commonName": "Acme CA"}


def test_a_certificate_without_cn_has_no_identity() -> None:
    assert common_name(certificate_fields({"subject": ((("organizationName", "Acme"),),)})) is None
