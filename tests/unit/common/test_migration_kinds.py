"""Every migration says whether code written before it survives it (compatibility.py).

A lint, read from the files' syntax, plus the classification of the ones that
exist: a migration declared `expand` must not drop, rename or tighten anything
in its upgrade(), or a rollback of the release that brought it would break.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from services.common.db import migrate
from services.common.db.compatibility import (
    CONTRACT,
    EXPAND,
    KINDS,
    Fit,
    SchemaState,
    history,
    min_code_revision,
)

VERSIONS = sorted((migrate.MIGRATIONS_DIR / "versions").glob("*.py"))
# Each read by hand: new tables and indexes (0001-0004), nullable `owner` columns with a
# backfill that old writers' rows get again on the next upgrade (0005), a new table (0006),
# nullable chain columns and a unique index old writers cannot violate (their rows have no
# sequence, and NULLs never collide) (0007), new tables (0008), new usage tables and tenant
# columns with a server default (0009).
EXPECTED = {
    "0001": EXPAND,
    "0002": EXPAND,
    "0003": EXPAND,
    "0004": EXPAND,
    "0005": EXPAND,
    "0006": EXPAND,
    "0007": EXPAND,
    "0008": EXPAND,
    "0009": EXPAND,
}
# Alembic operations that remove, rename or tighten what older code may use.
CONTRACTING_OPS = {
    "drop_table",
    "drop_column",
    "drop_index",
    "drop_constraint",
    "alter_column",
    "rename_table",
    "create_unique_constraint",
    "create_check_constraint",
    "create_foreign_key",
}


def _module_constant(tree: ast.Module, name: str) -> object:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    return None


def _upgrade(tree: ast.Module) -> ast.FunctionDef:
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"]
    assert found, "no upgrade()"
    return found[0]


def _op_calls(function: ast.FunctionDef) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "op"
    ]


def _tightening_column(call: ast.Call) -> bool:
    """op.add_column(table, sa.Column(..., nullable=False)) without a server default."""
    for column in (a for a in call.args if isinstance(a, ast.Call)):
        keywords = {k.arg: k.value for k in column.keywords}
        nullable = keywords.get("nullable")
        not_null = isinstance(nullable, ast.Constant) and nullable.value is False
        if not_null and "server_default" not in keywords:
            return True
    return False


def _contracting(source: str) -> list[str]:
    """What an upgrade() does that code written before it may not survive."""
    found = []
    for call in _op_calls(_upgrade(ast.parse(source))):
        assert isinstance(call.func, ast.Attribute)
        if call.func.attr in CONTRACTING_OPS:
            found.append(f"op.{call.func.attr}")
        elif call.func.attr == "add_column" and _tightening_column(call):
            found.append("op.add_column of a NOT NULL column without a server default")
    return found


@pytest.mark.parametrize("path", VERSIONS, ids=[p.name for p in VERSIONS])
def test_every_migration_declares_its_kind(path: Path) -> None:
    source = path.read_text()
    kind = _module_constant(ast.parse(source), "kind")
    assert kind in KINDS, (
        f"{path.name}: declare kind = {EXPAND!r} (additive: old code keeps working) "
        f"or kind = {CONTRACT!r} (drops, renames, tightens: old code breaks)"
    )
    if kind == EXPAND:
        assert _contracting(source) == [], f"{path.name} is declared expand"


def test_the_lint_sees_a_contract_in_disguise() -> None:
    source = """
def upgrade():
    op.add_column("records", sa.Column("owner", sa.String(200), nullable=False))
    op.add_column("records", sa.Column("rank", sa.Integer(), nullable=False, server_default="0"))
    op.drop_column("records", "body")
"""
    assert _contracting(source) == [
        "op.add_column of a NOT NULL column without a server default",
        "op.drop_column",
    ]


def test_the_existing_migrations_are_classified_as_read() -> None:
    kinds = {
        str(_module_constant(ast.parse(p.read_text()), "revision")): _module_constant(
            ast.parse(p.read_text()), "kind"
        )
        for p in VERSIONS
    }
    assert kinds == EXPECTED
    assert dict(history(migrate.scripts(), migrate.head_revision())) == EXPECTED


def test_the_minimum_code_revision_is_the_newest_contract() -> None:
    assert min_code_revision([("0001", EXPAND), ("0002", EXPAND)]) == "0001"
    applied = [("0001", EXPAND), ("0002", CONTRACT), ("0003", EXPAND), ("0004", CONTRACT)]
    assert min_code_revision(applied[:3]) == "0002"
    assert min_code_revision(applied) == "0004"
    assert min_code_revision([*applied, ("0005", EXPAND)]) == "0004"


def _state(current: str | None, minimum: str | None) -> SchemaState:
    return SchemaState(current, minimum, head="0003", known=frozenset({"0001", "0002", "0003"}))


def test_how_a_build_at_0003_fits_each_database() -> None:
    assert _state("0003", "0001").fit is Fit.CURRENT
    assert _state(None, None).fit is Fit.BEHIND
    assert _state("0002", None).fit is Fit.BEHIND
    assert _state("0004", "0001").fit is Fit.AHEAD  # 0004 expanded only
    assert _state("0004", "0003").fit is Fit.AHEAD  # contracted at 0003: this build is it
    assert _state("0005", "0004").fit is Fit.TOO_NEW  # contracted at 0004, unknown here
    assert _state("0004", None).fit is Fit.TOO_NEW  # ahead, and nothing says it may run


def test_the_refusals_say_what_to_do() -> None:
    assert "run `hacs migrate`" in _state("0002", None).explain()
    too_new = _state("0005", "0004").explain()
    assert "'0005'" in too_new and "'0003'" in too_new
    assert "code of revision '0004' or later" in too_new
    assert "deploy the release whose migrations include that revision" in too_new
    assert "never downgrades" in _state("0004", "0001").explain()
