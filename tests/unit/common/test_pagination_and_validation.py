from __future__ import annotations

import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from hacs.tenant.v1 import tenant_service_pb2

from services.common.errors import Invalid
from services.common.pagination import (
    decode_page_number,
    decode_page_token,
    encode_page_token,
    page_size,
)
from services.common.validation import Violations, has_validator
from services.tenant import validation  # noqa: F401  (registers validators)


def test_page_tokens_round_trip_and_belong_to_one_list() -> None:
    token = encode_page_token("actors", "nurse-7")
    assert decode_page_token("actors", token) == "nurse-7"
    with pytest.raises(Invalid):
        decode_page_token("tenants", token)
    with pytest.raises(Invalid):
        decode_page_token("actors", "%%%not-base64")


@pytest.mark.parametrize("forged", ["9" * 5000, str(2**63), "-1", "1e9", "١٢٣", " 7", "7\n", ""])
def test_a_numeric_page_token_holds_an_integer_a_bigint_can_hold(forged: str) -> None:
    """A forged huge number overflowed the database: INTERNAL in ListRecordHistory,
    ListAuditEvents and ListChunks (issue 20, finding 4c)."""
    assert decode_page_number("audit", encode_page_token("audit", str(2**63 - 1))) == 2**63 - 1
    with pytest.raises(Invalid, match="page_token"):
        decode_page_number("audit", encode_page_token("audit", forged))


def test_page_size_defaults_and_clamps() -> None:
    assert page_size(0) == 50
    assert page_size(10_000) == 500
    with pytest.raises(Invalid):
        page_size(-1)


def test_violations_collect_every_problem() -> None:
    v = Violations()
    v.identifier("tenant_id", "Not_OK")
    v.required("display_name", "")
    v.update_mask(FieldMask(paths=["secret"]), ["display_name"])
    with pytest.raises(Invalid) as caught:
        v.raise_if_any()
    assert [x.field for x in caught.value.violations] == [
        "tenant_id",
        "display_name",
        "update_mask",
    ]


def test_every_tenant_service_request_has_a_validator() -> None:
    from google.protobuf import message_factory

    from services.tenant.identity import validation as identity_validation  # noqa: F401

    service = tenant_service_pb2.DESCRIPTOR.services_by_name["TenantService"]
    missing = [
        m.input_type.name
        for m in service.methods
        if not has_validator(message_factory.GetMessageClass(m.input_type))
    ]
    assert missing == []


def test_a_trailing_newline_is_not_part_of_any_valid_name() -> None:
    # `$` matches before a final newline: "nurse\n" once passed as an id and was then
    # stored under a name nobody could read, delete or erase.
    from services.common import names
    from services.kernel.records.names import ID_PATTERN, parse_record_name
    from services.rag.names import DOCUMENT_ID, KB_ID

    v = Violations()
    v.identifier("actor_id", "nurse\n")
    v.labels("labels", {"unit\n": "icu"})
    assert [x.field for x in v.items] == ["actor_id", "labels['unit\\n']"]
    for pattern in (ID_PATTERN, DOCUMENT_ID, KB_ID, names.TENANT, names.ACTOR):
        assert (
            pattern.match("tenants/t-1/actors/nurse\n" if "tenants" in pattern.pattern else "a1\n")
            is None
        )
    with pytest.raises(Invalid):
        parse_record_name("tenants/acme/patients/nl-2\n")
    with pytest.raises(Invalid):
        names.tenant_of("tenants/acme\n")
