"""The one Milvus expression builder: every value through one escaping rule."""

from __future__ import annotations

from services.kernel.retrieval.expressions import (
    FilterSpec,
    all_of,
    contains_any,
    extra_equals,
    in_tenant,
    is_in,
    knowledge_expression,
    literal,
)


def test_values_are_literals_never_expression_text() -> None:
    hostile = 'x" or tenant_id != "a'
    assert literal(hostile) == '"x\\" or tenant_id != \\"a"'
    assert is_in("kind", ["Patient", hostile]) == f'kind in ["Patient", {literal(hostile)}]'
    assert extra_equals("document", hostile) == f'extra["document"] == {literal(hostile)}'
    assert contains_any("codes", ["tag:a"]) == 'array_contains_any(codes, ["tag:a"])'


def test_every_expression_is_scoped_to_its_tenant_first() -> None:
    assert in_tenant("st-marys") == 'tenant_id == "st-marys"'
    assert in_tenant("st-marys", 'kind in ["Patient"]') == (
        'tenant_id == "st-marys" and (kind in ["Patient"])'
    )
    assert all_of(["a", "", "b"]) == "(a) and (b)"
    assert knowledge_expression(FilterSpec(groups=["kb"], document_tags=["x"])) == (
        '(grp in ["kb"]) and (array_contains_all(codes, ["tag:x"]))'
    )
