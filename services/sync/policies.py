"""Merge policies per field: which concurrent edits may be resolved silently.

Most fields merge by last-writer-wins: two people editing a note's text
concurrently is ordinary, and the later edit is the one its author meant to
leave. A medication's dose and the drug itself are different: a silent
overwrite of a concurrent dose change can hurt a patient, so those paths are
REJECT_AND_REPORT — the later edit is refused and its author is shown the
value the server holds and who wrote it, to decide with that in view.
"""

from __future__ import annotations

from hacs.sync.v1 import patch_pb2

LWW = patch_pb2.MERGE_POLICY_LAST_WRITER_WINS
REJECT = patch_pb2.MERGE_POLICY_REJECT_AND_REPORT
DEFAULT_POLICY = LWW

# Declared path prefixes, most specific wins; everything else is DEFAULT_POLICY.
FIELD_POLICIES: tuple[tuple[str, int], ...] = (
    ("medication_request.dosage_instruction", REJECT),
    ("medication_request.dispense_request", REJECT),
    ("medication_request.medication_codeable_concept", REJECT),
    ("medication_request.medication_reference", REJECT),
    ("medication_statement.dosage", REJECT),
    ("medication_statement.medication_codeable_concept", REJECT),
    ("medication_statement.medication_reference", REJECT),
)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def policy_for(path: str) -> int:
    """The policy of the most specific declared prefix of `path`, else the default."""
    best = ""
    policy: int = DEFAULT_POLICY
    for prefix, declared in FIELD_POLICIES:
        if _under(path, prefix) and len(prefix) > len(best):
            best, policy = prefix, declared
    return policy


def guarded_below(path: str) -> list[str]:
    """Reject-and-report paths inside `path` (an edit of a whole resource covers its dose)."""
    return [p for p, policy in FIELD_POLICIES if policy == REJECT and _under(p, path) and p != path]


def declared_for(resource_field: str) -> list[patch_pb2.FieldPolicy]:
    """The declared policies that apply to records of one type (for SessionJoined)."""
    return [
        patch_pb2.FieldPolicy(path=path, policy=policy)  # type: ignore[arg-type]
        for path, policy in FIELD_POLICIES
        if _under(path, resource_field)
    ]
