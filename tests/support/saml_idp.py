"""A real SAML 2.0 identity provider for the tests: pysaml2's `Server`, in process.

Uses pysaml2 with the Debian `xmlsec1` binary (`apt-get install xmlsec1`) to
sign. Each `SamlIdp` makes its own RSA key and self-signed certificate in a
temporary directory removed on close, so a second instance is a foreign IdP
whose signatures the SP must refuse.

No HTTP server runs: in the HTTP-POST binding the IdP never talks to the SP.
The browser posts the form field `SAMLResponse` (what `response()` returns) to
the SP's ACS, so a test posts it there itself. The SSO URL in the metadata is
a loopback address nothing listens on; an SP-initiated flow reads the SP's
redirect with `read_authn_request()` to answer its request ID.

Knobs on `response()` make deliberately bad responses: an unsigned assertion,
a wrong audience, an expired assertion, a wrong recipient or destination, and
(with `issuer=`) a foreign IdP's response claiming the trusted IdP's name.
"""

from __future__ import annotations

import base64
import datetime
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, samlp
from saml2.assertion import Policy
from saml2.attribute_converter import AttributeConverter, do_ava
from saml2.authn_context import PASSWORD
from saml2.config import IdPConfig, SPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import (
    NAME_FORMAT_BASIC,
    NAME_FORMAT_URI,
    NAMEID_FORMAT_PERSISTENT,
    SCM_BEARER,
    Attribute,
    Audience,
    AudienceRestriction,
    Conditions,
    NameID,
)
from saml2.server import Server
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

SAML_TIME = "%Y-%m-%dT%H:%M:%SZ"


def xmlsec1_binary() -> str:
    """The xmlsec1 program pysaml2 signs and verifies with."""
    found = shutil.which("xmlsec1")
    if found is None:
        raise RuntimeError(
            "xmlsec1 is not installed; pysaml2 signs and verifies with it (apt-get install xmlsec1)"
        )
    return found


def _saml_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime(SAML_TIME)


def _metadata_string(descriptor: Any) -> str:
    descriptor.extensions = None  # pysaml2's algorithm list (md5 and all): noise here
    return str(descriptor)


def sp_metadata_xml(entity_id: str, acs_url: str, *, want_assertions_signed: bool = True) -> str:
    """Minimal SP metadata (entity ID, one HTTP-POST ACS, no key), as pysaml2 writes it."""
    config = SPConfig()
    config.load(
        {
            "entityid": entity_id,
            "xmlsec_binary": xmlsec1_binary(),
            "service": {
                "sp": {
                    "endpoints": {"assertion_consumer_service": [(acs_url, BINDING_HTTP_POST)]},
                    "want_assertions_signed": want_assertions_signed,
                    "want_response_signed": False,
                }
            },
        }
    )
    return _metadata_string(entity_descriptor(config))


@dataclass(frozen=True)
class AuthnRequestInfo:
    """What an IdP reads from an SP's AuthnRequest."""

    id: str
    issuer: str | None
    acs_url: str | None
    destination: str | None


class _Verbatim(AttributeConverter):  # type: ignore[misc]
    """Writes attributes under the names given: URI format when the name has a colon
    (`urn:oid:…`, `http://…`), basic otherwise. pysaml2's own maps would rename them."""

    def __init__(self) -> None:
        super().__init__(NAME_FORMAT_URI)

    def to_(self, attrvals: dict[str, list[str]]) -> list[Attribute]:
        return [
            Attribute(
                name=name,
                name_format=NAME_FORMAT_URI if ":" in name else NAME_FORMAT_BASIC,
                attribute_value=do_ava(values),
            )
            for name, values in attrvals.items()
        ]


class _Policy(Policy):  # type: ignore[misc]
    """Release every attribute; conditions with the audience and times asked for."""

    def __init__(self, audience: str, not_before: str, not_on_or_after: str) -> None:
        super().__init__()
        self._audience = audience
        self._not_before = not_before
        self._not_on_or_after = not_on_or_after

    def not_on_or_after(self, sp_entity_id: str) -> str:
        return self._not_on_or_after

    def conditions(self, sp_entity_id: str) -> Conditions:
        return Conditions(
            not_before=self._not_before,
            not_on_or_after=self._not_on_or_after,
            audience_restriction=[AudienceRestriction(audience=[Audience(text=self._audience)])],
        )


class SamlIdp:
    """A pysaml2 IdP with its own key; `response()` gives a base64 SAMLResponse."""

    def __init__(self, entity_id: str | None = None) -> None:
        xmlsec1 = xmlsec1_binary()
        self.entity_id = entity_id or f"http://127.0.0.1/saml/idp/{uuid.uuid4().hex[:8]}"
        self.sso_url = f"{self.entity_id}/sso"
        self.root = Path(tempfile.mkdtemp(prefix="hacs-saml-idp-"))
        self.key_file = self.root / "idp.key"
        self.cert_file = self.root / "idp.crt"
        self._write_key_and_certificate()
        config = IdPConfig()
        config.load(
            {
                "entityid": self.entity_id,
                "key_file": str(self.key_file),
                "cert_file": str(self.cert_file),
                "xmlsec_binary": xmlsec1,
                "crypto_backend": "xmlsec1",
                "signing_algorithm": SIG_RSA_SHA256,
                "digest_algorithm": DIGEST_SHA256,
                "metadata": {"inline": []},  # SPs are added by register_sp
                "service": {
                    "idp": {
                        "endpoints": {
                            "single_sign_on_service": [
                                (self.sso_url, BINDING_HTTP_REDIRECT),
                                (self.sso_url, BINDING_HTTP_POST),
                            ]
                        },
                        "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                        "want_authn_requests_signed": False,
                    }
                },
            }
        )
        config.attribute_converters = [_Verbatim()]
        self._config = config
        self.server = Server(config=config)
        self._known_sps: set[str] = set()

    def _write_key_and_certificate(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HACS test IdP")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    @property
    def certificate_pem(self) -> str:
        return self.cert_file.read_text()

    def metadata_xml(self) -> str:
        """The IdP's metadata (entity ID, signing certificate, SSO endpoints), unsigned."""
        return _metadata_string(entity_descriptor(self._config))

    def register_sp(self, metadata_xml: str) -> None:
        """Trust an SP's metadata (e.g. what HACS's SP metadata endpoint serves).

        pysaml2's IdP looks the SP up in its metadata when it builds a response;
        `response()` registers a minimal one itself for an SP it does not know."""
        self.server.metadata.load("inline", metadata_xml)
        self._known_sps.update(self.server.metadata.keys())

    def read_authn_request(self, redirect_url_or_request: str) -> AuthnRequestInfo:
        """An SP's AuthnRequest, from its HTTP-Redirect URL or a bare SAMLRequest value
        (deflated for HTTP-Redirect, plain base64 for HTTP-POST). Not signature-checked."""
        value = redirect_url_or_request
        if value.startswith(("http://", "https://")):
            value = parse_qs(urlsplit(value).query)["SAMLRequest"][0]
        raw = base64.b64decode(value)
        try:
            xml = zlib.decompress(raw, -15)
        except zlib.error:
            xml = raw
        request = samlp.authn_request_from_string(xml.decode("utf-8"))
        if request is None:
            raise ValueError("not a SAML AuthnRequest")
        return AuthnRequestInfo(
            id=request.id,
            issuer=request.issuer.text if request.issuer is not None else None,
            acs_url=request.assertion_consumer_service_url,
            destination=request.destination,
        )

    def response(
        self,
        sp_entity_id: str,
        acs_url: str,
        user: str,
        attributes: dict[str, list[str]],
        *,
        in_response_to: str | None = None,
        sign_assertion: bool = True,
        sign_response: bool = True,
        audience: str | None = None,
        not_on_or_after_delta: datetime.timedelta = datetime.timedelta(minutes=5),
        recipient: str | None = None,
        destination: str | None = None,
        issuer: str | None = None,
        signing_algorithm: str = SIG_RSA_SHA256,
        digest_algorithm: str = DIGEST_SHA256,
    ) -> str:
        """A base64 SAMLResponse for the HTTP-POST binding, for `user` (a persistent NameID).

        Defaults make a valid response: signed assertion in a signed response,
        audience `sp_entity_id`, recipient and destination `acs_url`, valid for
        five minutes, RSA-SHA256. `audience`, `recipient`, `destination` and
        `issuer` replace those values; a negative `not_on_or_after_delta` gives
        an expired assertion (NotBefore moves back too, so only the expiry is
        wrong); the algorithms take xmldsig URIs (e.g. saml2.xmldsig.SIG_RSA_SHA1)."""
        if sp_entity_id not in self._known_sps:
            self.register_sp(sp_metadata_xml(sp_entity_id, acs_url))
        now = datetime.datetime.now(datetime.UTC)
        not_on_or_after = now + not_on_or_after_delta
        not_before = min(now, not_on_or_after - datetime.timedelta(minutes=5))
        policy = _Policy(
            audience=audience or sp_entity_id,
            not_before=_saml_time(not_before),
            not_on_or_after=_saml_time(not_on_or_after),
        )
        confirmation_data: dict[str, Any] = {"recipient": recipient or acs_url}
        if in_response_to is not None:
            confirmation_data["in_response_to"] = in_response_to
        farg = {
            "assertion": {
                "subject": {
                    "subject_confirmation": {
                        "method": SCM_BEARER,
                        "subject_confirmation_data": confirmation_data,
                    }
                }
            }
        }
        result = self.server.create_authn_response(
            identity={name: list(values) for name, values in attributes.items()},
            in_response_to=in_response_to,
            destination=destination or acs_url,
            sp_entity_id=sp_entity_id,
            name_id=NameID(
                text=user,
                format=NAMEID_FORMAT_PERSISTENT,
                name_qualifier=self.entity_id,
                sp_name_qualifier=sp_entity_id,
            ),
            authn={"class_ref": PASSWORD, "authn_auth": self.entity_id},
            issuer=issuer,
            sign_assertion=sign_assertion,
            sign_response=sign_response,
            sign_alg=signing_algorithm,
            digest_alg=digest_algorithm,
            release_policy=policy,
            farg=farg,
        )
        if isinstance(result, list):  # pysaml2's error path: the lines of an error response
            raise RuntimeError("pysaml2 made an error response:\n" + "\n".join(result))
        return base64.b64encode(str(result).encode("utf-8")).decode("ascii")

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SamlIdp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def saml_idp() -> Iterator[SamlIdp]:
    """A SAML IdP for one test, its key and certificate removed after it."""
    idp = SamlIdp()
    try:
        yield idp
    finally:
        idp.close()
