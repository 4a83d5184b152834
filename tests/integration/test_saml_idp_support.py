"""The test IdP (tests/support/saml_idp.py) against pysaml2's own SP.

The SP is `saml2.client.Saml2Client`, configured in code with the IdP's
metadata, signed assertions required and xmlsec1 as crypto backend. A good
response parses; each deliberately bad one is refused, with the exception
pysaml2 raises for it recorded here. Two gaps the HACS SP must close itself
are shown too: pysaml2 only checks the SubjectConfirmation recipient when
given `conv_info`, and keeps no record of the responses it has accepted.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.response import AuthnResponse, UnsolicitedResponse, VerificationError
from saml2.sigver import MissingKey, SignatureError
from saml2.validate import ResponseLifetimeExceed

from tests.support.saml_idp import (
    SamlIdp,
    saml_idp,  # noqa: F401  (the fixture)
    sp_metadata_xml,
    xmlsec1_binary,
)

SP_ENTITY_ID = "http://127.0.0.1:8080/saml/metadata"
ACS_URL = "http://127.0.0.1:8080/saml/acs"
USER = "clinician-42"
ATTRIBUTES = {
    "email": ["ann@example.org"],
    "hacs_tenant": ["tenant-a"],
    "roles": ["clinician", "auditor"],
}


def make_sp(
    idp: SamlIdp, *, allow_unsolicited: bool = True, accepted_time_diff: int | None = None
) -> Saml2Client:
    config: dict[str, Any] = {
        "entityid": SP_ENTITY_ID,
        "xmlsec_binary": xmlsec1_binary(),
        "crypto_backend": "xmlsec1",
        "metadata": {"inline": [idp.metadata_xml()]},
        "allow_unknown_attributes": True,
        "service": {
            "sp": {
                "endpoints": {"assertion_consumer_service": [(ACS_URL, BINDING_HTTP_POST)]},
                "want_assertions_signed": True,
                "want_response_signed": False,
                "allow_unsolicited": allow_unsolicited,
            }
        },
    }
    if accepted_time_diff is not None:
        config["accepted_time_diff"] = accepted_time_diff
    sp_config = SPConfig()
    sp_config.load(config)
    return Saml2Client(config=sp_config)


def parse(sp: Saml2Client, saml_response: str, **kwargs: Any) -> AuthnResponse:
    response = sp.parse_authn_request_response(saml_response, BINDING_HTTP_POST, **kwargs)
    assert isinstance(response, AuthnResponse)
    return response


@pytest.fixture
def foreign_idp() -> Iterator[SamlIdp]:
    with SamlIdp() as idp:
        yield idp


def test_a_good_response_gives_the_name_id_and_attributes(saml_idp: SamlIdp) -> None:  # noqa: F811
    response = parse(
        make_sp(saml_idp),
        saml_idp.response(SP_ENTITY_ID, ACS_URL, USER, ATTRIBUTES),
        conv_info={"entity_id": SP_ENTITY_ID},
    )
    assert response.name_id.text == USER
    assert response.ava == ATTRIBUTES
    assert response.assertion.issuer.text == saml_idp.entity_id
    assert response.assertion.signature is not None


def test_an_sp_initiated_login_answers_the_request(saml_idp: SamlIdp) -> None:  # noqa: F811
    sp = make_sp(saml_idp, allow_unsolicited=False)
    request_id, info = sp.prepare_for_authenticate(
        entityid=saml_idp.entity_id, relay_state="/after", binding=BINDING_HTTP_REDIRECT
    )
    location = dict(info["headers"])["Location"]
    assert location.startswith(saml_idp.sso_url)
    request = saml_idp.read_authn_request(location)
    assert request.id == request_id
    assert request.issuer == SP_ENTITY_ID
    assert request.acs_url == ACS_URL

    saml_response = saml_idp.response(
        SP_ENTITY_ID, ACS_URL, USER, ATTRIBUTES, in_response_to=request_id
    )
    response = parse(sp, saml_response, outstanding={request_id: "/after"})
    assert response.came_from == "/after"
    assert response.name_id.text == USER


def test_the_idp_reads_an_sp_metadata_document(saml_idp: SamlIdp) -> None:  # noqa: F811
    saml_idp.register_sp(sp_metadata_xml(SP_ENTITY_ID, ACS_URL))
    acs = saml_idp.server.metadata.assertion_consumer_service(SP_ENTITY_ID, BINDING_HTTP_POST)
    assert [endpoint["location"] for endpoint in acs] == [ACS_URL]


def test_an_unsigned_assertion_is_refused(saml_idp: SamlIdp) -> None:  # noqa: F811
    sp = make_sp(saml_idp)
    signed_envelope_only = saml_idp.response(
        SP_ENTITY_ID, ACS_URL, USER, ATTRIBUTES, sign_assertion=False
    )
    with pytest.raises(SignatureError, match="Signature missing for assertion"):
        parse(sp, signed_envelope_only)
    nothing_signed = saml_idp.response(
        SP_ENTITY_ID, ACS_URL, USER, ATTRIBUTES, sign_assertion=False, sign_response=False
    )
    with pytest.raises(SignatureError, match="Signature missing for assertion"):
        parse(sp, nothing_signed)


def test_a_signed_assertion_in_an_unsigned_response_is_accepted(
    saml_idp: SamlIdp,  # noqa: F811
) -> None:
    """With want_response_signed=False only the assertion's signature is required."""
    response = parse(
        make_sp(saml_idp),
        saml_idp.response(SP_ENTITY_ID, ACS_URL, USER, ATTRIBUTES, sign_response=False),
    )
    assert response.name_id.text == USER


def test_a_wrong_audience_is_refused(saml_idp: SamlIdp) -> None:  # noqa: F811
    saml_response = saml_idp.response(
        SP_ENTITY_ID, ACS_URL, USER, ATTRIBUTES, audience="http://127.0.0.1:9999/other-sp"
    )
    # pysaml2 raises a bare Exception here, no subclass of its own.
    with pytest.raises(Exception, match="AudienceRestrictions conditions not satisfied"):
        parse(make_sp(saml_idp), saml_response)


def test_an_expired_assertion_is_refused_beyond_the_clock_skew(
    saml_idp: SamlIdp,  # noqa: F811
) -> None:
    expired = saml_idp.response(
        SP_ENTITY_ID,
        ACS_URL,
        USER,
        ATTRIBUTES,
        not_on_or_after_delta=datetime.timedelta(minutes=-10),
    )
    with pytest.raises(ResponseLifetimeExceed, match="too old"):
        parse(make_sp(saml_idp), expired)

    just_expired = saml_idp.response(
        SP_ENTITY_ID,
        ACS_URL,
        USER,
        ATTRIBUTES,
        not_on_or_after_delta=datetime.timedelta(seconds=-30),
    )
    with pytest.raises(ResponseLifetimeExceed):
        parse(make_sp(saml_idp), just_expired)
    # accepted_time_diff (seconds) is the allowed clock skew, both ways.
    response = parse(make_sp(saml_idp, accepted_time_diff=120), just_expired)
    assert response.name_id.text == USER


def test_a_wrong_recipient_is_refused_only_with_conv_info(saml_idp: SamlIdp) -> None:  # noqa: F811
    saml_response = saml_idp.response(
        SP_ENTITY_ID, ACS_URL, USER, ATTRIBUTES, recipient="http://127.0.0.1:9999/other-acs"
    )
    with pytest.raises(VerificationError, match="No valid recipient"):
        parse(make_sp(saml_idp), saml_response, conv_info={"entity_id": SP_ENTITY_ID})
    # Without conv_info pysaml2 skips the recipient check altogether.
    accepted = parse(make_sp(saml_idp), saml_response)
    assert accepted.name_id.text == USER


def test_a_wrong_destination_yields_no_assertion(saml_idp: SamlIdp) -> None:  # noqa: F811
    saml_response = saml_idp.response(
        SP_ENTITY_ID, ACS_URL, USER, ATTRIBUTES, destination="http://127.0.0.1:9999/other-acs"
    )
    # No exception: the response comes back with nothing in it, for the caller to refuse.
    response = parse(make_sp(saml_idp), saml_response)
    assert response.assertion is None
    assert response.name_id is None


def test_a_response_from_another_idp_is_refused(
    saml_idp: SamlIdp,  # noqa: F811
    foreign_idp: SamlIdp,
) -> None:
    sp = make_sp(saml_idp)
    impostor = foreign_idp.response(
        SP_ENTITY_ID, ACS_URL, USER, ATTRIBUTES, issuer=saml_idp.entity_id
    )
    with pytest.raises(SignatureError, match="Failed to verify signature"):
        parse(sp, impostor)
    unknown_issuer = foreign_idp.response(SP_ENTITY_ID, ACS_URL, USER, ATTRIBUTES)
    with pytest.raises(MissingKey, match=foreign_idp.entity_id):
        parse(sp, unknown_issuer)


def test_replay_of_a_solicited_response_is_refused_once_the_request_is_forgotten(
    saml_idp: SamlIdp,  # noqa: F811
) -> None:
    """pysaml2 never removes an answered request from `outstanding`: the SP must."""
    sp = make_sp(saml_idp, allow_unsolicited=False)
    request_id, _ = sp.prepare_for_authenticate(
        entityid=saml_idp.entity_id, binding=BINDING_HTTP_REDIRECT
    )
    outstanding = {request_id: "/"}
    saml_response = saml_idp.response(
        SP_ENTITY_ID, ACS_URL, USER, ATTRIBUTES, in_response_to=request_id
    )
    parse(sp, saml_response, outstanding=outstanding)
    assert parse(sp, saml_response, outstanding=outstanding).name_id.text == USER  # replayed!

    del outstanding[request_id]
    with pytest.raises(UnsolicitedResponse):
        parse(sp, saml_response, outstanding=outstanding)


def test_replay_of_an_unsolicited_response_needs_an_assertion_id_cache(
    saml_idp: SamlIdp,  # noqa: F811
) -> None:
    """With allow_unsolicited pysaml2 accepts the same response again and again;
    the assertion ID (unique per assertion, valid until NotOnOrAfter) is the key."""
    sp = make_sp(saml_idp, allow_unsolicited=True)
    saml_response = saml_idp.response(SP_ENTITY_ID, ACS_URL, USER, ATTRIBUTES)
    first = parse(sp, saml_response)
    second = parse(sp, saml_response)
    assert first.assertion.id == second.assertion.id
    assert first.not_on_or_after > 0  # epoch seconds: how long to remember the ID

    fresh = parse(sp, saml_idp.response(SP_ENTITY_ID, ACS_URL, USER, ATTRIBUTES))
    assert fresh.assertion.id != first.assertion.id
