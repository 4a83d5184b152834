"""Requests generated from the contracts' descriptors, mutated from seeds, or corrupted.

A field's value is drawn by its type and, for strings, by what its name says it
holds (a resource name, an id, a page token, a cursor, an etag, free text), so
requests reach past the validators as often as they stop at them. Everything
is drawn from one `random.Random`: a request is a function of its seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.tooling.fuzz import pools

F = FieldDescriptor
MAX_DEPTH = 6
MAX_REPEATED_BYTES = 4 * 1024 * 1024
# Free-text fields a minimal request fills (the query of a search, the texts to embed).
TEXT_FIELDS = ("query", "question", "text", "texts", "content", "documents")
FIELD_MASK_PATHS = (
    "display_name",
    "permissions",
    "role",
    "labels",
    "plan",
    "limits",
    "limits.calls_per_minute",
    "record",
    "record.patient.gender",
    "memory_block.content",
    "memory_block.tags",
    "description",
    "*",
    "",
    "a.b.c",
    "name",
    "etag",
    "tenant_id",
)


@dataclass
class Vocabulary:
    """What a caller of one tenant may put in a request besides noise: its own resource
    names, other tenants' (the victim's among them), and tokens and cursors seen in setup."""

    own_tenant: str
    own_names: list[str]
    foreign_names: list[str]
    ids: list[str] = field(default_factory=list)
    cursors: list[str] = field(default_factory=list)
    page_tokens: list[str] = field(default_factory=list)
    etags: list[str] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)
    # The caller's own API keys (IssueToken may succeed) and the platform's model names.
    api_keys: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)


def string_kind(name: str) -> str:
    """What a string field holds, by its name."""
    if name in ("page_token", "next_page_token"):
        return "page_token"
    if "cursor" in name:
        return "cursor"
    if name == "etag":
        return "etag"
    if name in ("api_key", "secret"):
        return "api_key"
    if name in ("permissions", "scopes", "permission"):
        return "permission"
    if name.endswith("_id") or name in ("id", "ids"):
        return "id"
    if (
        name in ("name", "names", "parent", "reference", "resource", "subject")
        or name.endswith(("_name", "_names", "patient", "patients", "agent", "actor"))
        or name.endswith(("knowledge_base", "knowledge_bases", "document", "documents"))
        or name.endswith(("memory", "memories", "model", "supersedes", "superseded_by"))
    ):
        return "name"
    return "text"


class Generator:
    def __init__(self, rng: random.Random, vocabulary: Vocabulary) -> None:
        self.rng = rng
        self.vocabulary = vocabulary
        self._special: dict[str, Callable[[Message, int], None]] = {
            "google.protobuf.Timestamp": self._timestamp,
            "google.protobuf.Duration": self._duration,
            "google.protobuf.Struct": self._struct,
            "google.protobuf.Value": self._value,
            "google.protobuf.ListValue": self._list_value,
            "google.protobuf.FieldMask": self._field_mask,
            "google.protobuf.Any": self._any,
        }

    # -- whole messages -------------------------------------------------------

    def message(self, cls: type[Message], *, careful: bool) -> Message:
        message = cls()
        self.fill(message, 0, careful)
        return message

    def fill(self, message: Message, depth: int, careful: bool) -> None:
        descriptor: Any = message.DESCRIPTOR
        special = self._special.get(descriptor.full_name)
        if special is not None:
            special(message, depth)
            return
        chosen = {
            oneof.name: self.rng.choice(oneof.fields)
            for oneof in descriptor.oneofs
            if oneof.fields and self.rng.random() < 0.8
        }
        for fd in descriptor.fields:
            oneof = fd.containing_oneof
            if oneof is not None and chosen.get(oneof.name) is not fd:
                continue
            if self.rng.random() < self._presence(fd, depth, careful):
                self.set_field(message, fd, depth, careful)

    def minimal(self, cls: type[Message]) -> Message:
        """A request as a client writes it: its names (the caller's own, a tenant as the
        usual parent), its query or text, and nothing else."""
        message = cls()
        words = self.vocabulary
        for fd in message.DESCRIPTOR.fields:
            if fd.type != F.TYPE_STRING or fd.containing_oneof is not None:
                continue
            kind = string_kind(fd.name)
            if kind == "name":
                tenant = f"tenants/{words.own_tenant}"
                value = tenant if fd.name == "parent" and self.rng.random() < 0.7 else None
                value = value or self.rng.choice(words.own_names or [tenant])
            elif kind == "text" and fd.name in TEXT_FIELDS:
                value = self.rng.choice(pools.CLINICAL)
            else:
                continue
            if fd.is_repeated:
                getattr(message, fd.name).append(value)
            else:
                setattr(message, fd.name, value)
        return message

    def _presence(self, fd: Any, depth: int, careful: bool) -> float:
        is_message = fd.type == F.TYPE_MESSAGE
        if depth >= MAX_DEPTH and is_message:
            return 0.05
        if careful:
            if fd.type == F.TYPE_STRING and string_kind(fd.name) == "name":
                return 0.9
            return 0.3 if depth == 0 else 0.5
        return 0.5

    def set_field(self, message: Message, fd: Any, depth: int, careful: bool) -> None:
        try:
            self._set(message, fd, depth, careful)
        except (TypeError, ValueError, OverflowError):
            message.ClearField(fd.name)  # a value this field's Python type refuses

    def _set(self, message: Message, fd: Any, depth: int, careful: bool) -> None:
        target = getattr(message, fd.name)
        if fd.type == F.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            key_fd = fd.message_type.fields_by_name["key"]
            value_fd = fd.message_type.fields_by_name["value"]
            for _ in range(self._count(careful)):
                key = self.scalar(key_fd)
                if value_fd.type == F.TYPE_MESSAGE:
                    self.fill(target[key], depth + 1, careful)
                else:
                    target[key] = self.scalar(value_fd)
            return
        if fd.is_repeated:
            count = self._count(careful)
            if fd.type == F.TYPE_MESSAGE and count > 3:
                # Many items: copies of one, as many as fit in a few MiB.
                first = target.add()
                self.fill(first, depth + 1, careful)
                fit = MAX_REPEATED_BYTES // max(first.ByteSize(), 1)
                for _ in range(min(count, fit) - 1):
                    target.add().CopyFrom(first)
                return
            if fd.type == F.TYPE_MESSAGE:
                for _ in range(count):
                    self.fill(target.add(), depth + 1, careful)
                return
            budget = MAX_REPEATED_BYTES
            for _ in range(count):
                value = self.scalar(fd)
                budget -= len(value) if isinstance(value, str | bytes) else 10
                if budget < 0:
                    break
                target.append(value)
            return
        if fd.type == F.TYPE_MESSAGE:
            target.SetInParent()
            self.fill(target, depth + 1, careful)
            return
        setattr(message, fd.name, self.scalar(fd))

    def _count(self, careful: bool) -> int:
        roll = self.rng.random()
        if careful or roll < 0.85:
            return self.rng.choice((1, 1, 2, 3))
        if roll < 0.95:
            return self.rng.choice((0, 20, 101))
        return self.rng.choice((1_001, 5_000))

    # -- scalars --------------------------------------------------------------

    def scalar(self, fd: Any) -> Any:
        rng = self.rng
        kind = fd.type
        if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            return pools.floating(rng)
        if kind in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
            return pools.integer(rng, *pools.INT32)
        if kind in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
            return pools.integer(rng, *pools.INT64)
        if kind in (F.TYPE_UINT32, F.TYPE_FIXED32):
            return pools.integer(rng, *pools.UINT32)
        if kind in (F.TYPE_UINT64, F.TYPE_FIXED64):
            return pools.integer(rng, *pools.UINT64)
        if kind == F.TYPE_BOOL:
            return rng.random() < 0.5
        if kind == F.TYPE_ENUM:
            if rng.random() < 0.85:
                return rng.choice(fd.enum_type.values).number
            return rng.choice((-1, 99, 2**31 - 1, -(2**31)))
        if kind == F.TYPE_BYTES:
            return self.blob()
        return self.string(fd.name)

    def blob(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            return rng.choice(pools.CLINICAL).encode()
        if roll < 0.45:
            return b"%PDF-1.4\n" + rng.randbytes(rng.randint(0, 300))
        if roll < 0.55:
            return b"<html><body>" + rng.choice(pools.UNICODE).encode() + b"</body></html>"
        if roll < 0.6:
            return b"\x00" * rng.choice((1, 1_000, 100_000))
        return rng.randbytes(rng.choice((0, 1, 17, 512, 4_096)))

    def string(self, field_name: str) -> str:
        rng = self.rng
        if rng.random() < 0.12:
            return pools.any_string(rng)
        kind = string_kind(field_name)
        words = self.vocabulary
        if kind == "name":
            return self.name()
        if kind == "id":
            return rng.choice(
                [*words.ids, "p-1", "x", "a" * 40, "a" * 41, "UPPER", "with space", "dot.ted"]
            )
        if kind == "page_token":
            return rng.choice(
                [*words.page_tokens, "", "eyJhZnRlciI6IDF9", "99999999999999999999999", "!"]
            )
        if kind == "cursor":
            return rng.choice([*words.cursors, "", "AAAA", "c" * 300])
        if kind == "etag":
            return rng.choice([*words.etags, "", '"1"', 'W/"x"', "*"])
        if kind == "api_key":
            tenant = rng.choice(words.tenants or [words.own_tenant])
            return rng.choice(
                [
                    *words.api_keys,
                    f"hk_{tenant}_000000000000_{'x' * 43}",
                    "hk___",
                    "hk_" + "a" * 500,
                    "",
                ]
            )
        if kind == "permission":
            return rng.choice(pools.PERMISSIONS)
        return pools.any_string(rng) if rng.random() < 0.5 else rng.choice(pools.CLINICAL)

    def name(self) -> str:
        rng = self.rng
        words = self.vocabulary
        roll = rng.random()
        if roll < 0.45 and words.own_names:
            return rng.choice([*words.own_names, *words.models])
        if roll < 0.7 and words.foreign_names:
            return rng.choice(words.foreign_names)
        if roll < 0.88:
            tenant = rng.choice([*words.tenants, words.own_tenant, "platform", ".."])
            collection = rng.choice(pools.COLLECTIONS)
            item = rng.choice([*words.ids, "p-1", *pools.NAME_TRICKS[:8]])
            return f"tenants/{tenant}/{collection}/{item}"
        base = rng.choice(words.own_names or ["tenants/x"])
        return base + rng.choice(("/", "\n", "/../x", "%2F..", "\x00", "/" + "z" * 300))

    # -- well-known types -----------------------------------------------------

    def _timestamp(self, message: Message, depth: int) -> None:
        low, high = pools.TIMESTAMP_SECONDS
        rng = self.rng
        message.seconds = rng.choice(  # type: ignore[attr-defined]
            (low, high, low - 1, high + 1, 0, 1_765_000_000, 4_102_444_800, *pools.INT64)
        )
        message.nanos = rng.choice((0, 999_999_999, 1_000_000_000, -1, 500))  # type: ignore[attr-defined]

    def _duration(self, message: Message, depth: int) -> None:
        rng = self.rng
        message.seconds = rng.choice(  # type: ignore[attr-defined]
            (0, 1, -1, 60, 86_400, 315_576_000_000, 315_576_000_001, *pools.INT64)
        )
        message.nanos = rng.choice((0, 999_999_999, 1_000_000_000, -1, -999_999_999))  # type: ignore[attr-defined]

    def _struct(self, message: Message, depth: int) -> None:
        for _ in range(self.rng.choice((0, 1, 2, 4))):
            key = self.rng.choice(("a", "note", "", "é", "x" * 200, "$where"))
            self._value(message.fields[key], depth + 1)  # type: ignore[attr-defined]

    def _value(self, message: Message, depth: int) -> None:
        rng = self.rng
        if depth < 3 and rng.random() < 0.03:  # a value nested far past any parser's limit
            inner: Any = message
            for _ in range(rng.choice((70, 101, 150))):
                inner = inner.struct_value.fields["k"]
            inner.string_value = "deep"
            return
        roll = rng.random()
        if roll < 0.25 and depth < MAX_DEPTH:
            self._struct(message.struct_value, depth + 1)  # type: ignore[attr-defined]
        elif roll < 0.4 and depth < MAX_DEPTH:
            self._list_value(message.list_value, depth + 1)  # type: ignore[attr-defined]
        elif roll < 0.6:
            message.number_value = pools.floating(rng)  # type: ignore[attr-defined]
        elif roll < 0.7:
            message.bool_value = rng.random() < 0.5  # type: ignore[attr-defined]
        elif roll < 0.75:
            message.null_value = 0  # type: ignore[attr-defined]
        else:
            message.string_value = pools.any_string(rng)  # type: ignore[attr-defined]

    def _list_value(self, message: Message, depth: int) -> None:
        for _ in range(self.rng.choice((0, 1, 3))):
            self._value(message.values.add(), depth + 1)  # type: ignore[attr-defined]

    def _field_mask(self, message: Message, depth: int) -> None:
        for _ in range(self.rng.choice((0, 1, 1, 2, 3))):
            message.paths.append(self.rng.choice(FIELD_MASK_PATHS))  # type: ignore[attr-defined]

    def _any(self, message: Message, depth: int) -> None:
        message.type_url = self.rng.choice(  # type: ignore[attr-defined]
            ("type.googleapis.com/google.protobuf.Struct", "", "x/y", pools.random_text(self.rng))
        )
        message.value = self.rng.randbytes(self.rng.randint(0, 64))  # type: ignore[attr-defined]

    # -- mutation and corruption ----------------------------------------------

    def mutate(self, seed: Message) -> Message:
        """A copy of `seed` with one to three of its fields cleared, redrawn or added."""
        message = type(seed)()
        message.CopyFrom(seed)
        for _ in range(self.rng.randint(1, 3)):
            nodes = _message_nodes(message)
            node, depth = self.rng.choice(nodes)
            descriptor: Any = node.DESCRIPTOR
            special = self._special.get(descriptor.full_name)
            if special is not None:
                special(node, depth)
                continue
            if not descriptor.fields:
                continue
            fd: Any = self.rng.choice(descriptor.fields)
            node.ClearField(fd.name)
            if self.rng.random() < 0.8:
                self.set_field(node, fd, depth, careful=self.rng.random() < 0.5)
        return message

    def corrupt(self, data: bytes, descriptor: Any) -> bytes:
        """Bytes that are not quite (or not at all) a message of `descriptor`."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.2 and data:
            cut = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                cut[rng.randrange(len(cut))] = rng.randrange(256)
            return bytes(cut)
        if roll < 0.35 and data:
            return data[: rng.randrange(len(data))]
        if roll < 0.5:
            return data + rng.randbytes(rng.randint(1, 16))
        if roll < 0.65:
            strings = [f for f in descriptor.fields if f.type == F.TYPE_STRING]
            number = rng.choice(strings).number if strings else 1
            bad = rng.choice((b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"a\x80b"))
            return data + _key(number, 2) + _varint(len(bad)) + bad  # invalid UTF-8
        if roll < 0.75:
            return data + _key(rng.randint(1, 30), 2) + _varint(2**31)  # length past the end
        if roll < 0.85:
            return data + _key(rng.randint(1, 30), rng.choice((3, 4, 6, 7)))  # bad wire types
        if roll < 0.92:
            nested = b""
            for _ in range(rng.choice((101, 200))):  # a length-delimited field 200 deep
                nested = _key(1, 2) + _varint(len(nested)) + nested
            return data + nested
        return rng.randbytes(rng.randint(0, 64))


def _message_nodes(message: Message, depth: int = 0) -> list[tuple[Message, int]]:
    nodes = [(message, depth)]
    if depth >= MAX_DEPTH:
        return nodes
    for fd, value in message.ListFields():
        fd = cast(Any, fd)
        if fd.type != F.TYPE_MESSAGE or fd.message_type.GetOptions().map_entry:
            continue
        children = value if fd.is_repeated else [value]
        for child in children[:5]:
            nodes.extend(_message_nodes(child, depth + 1))
    return nodes


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)
