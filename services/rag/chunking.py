"""Extracted text -> chunks sized in the embedding model's tokens, with provenance.

How a document is cut:

1. Headings split it into sections; a chunk never spans two top-level
   sections, and with `respect_headings` (the default) never spans any
   heading. Each chunk knows its section path (["Dosing", "Renal impairment"]).
2. Inside a section, text is cut into sentence/line units
   (`sentences.sentence_spans`) and units are packed greedily up to the token
   budget. A unit longer than the budget alone is cut at token boundaries,
   preferring a space.
3. Consecutive chunks of a section overlap by up to `overlap_tokens`: whole
   trailing sentences when they fit, else the tail of the last sentence from
   a word start.
4. The budget is `max_tokens`, lowered when needed so that the context header
   (title and section path, prefixed to the embedded text) plus the chunk fit
   the model's input; nothing embedded is silently truncated.

A chunk's text is exactly `text[start_offset:end_offset]` of the extracted
text, so offsets can be checked and quoted.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.rag.parsing import Heading, ParsedDocument
from services.rag.sentences import sentence_spans
from services.rag.tokens import TokenCounter

DEFAULT_MAX_TOKENS = 256
DEFAULT_OVERLAP_TOKENS = 32
MIN_BUDGET = 32


@dataclass(frozen=True)
class ChunkingSettings:
    max_tokens: int = DEFAULT_MAX_TOKENS
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS
    respect_headings: bool = True
    include_context_header: bool = True


@dataclass(frozen=True)
class TextChunk:
    index: int
    text: str
    start: int
    end: int
    section_path: tuple[str, ...]
    token_count: int
    page_number: int
    embed_text: str  # what is embedded and indexed: context header + text


@dataclass(frozen=True)
class _Section:
    start: int
    end: int
    path: tuple[str, ...]
    # Headings inside the section (when sections are top-level only), for chunk paths.
    inner: tuple[tuple[int, tuple[str, ...]], ...] = ()

    def path_at(self, offset: int) -> tuple[str, ...]:
        path = self.path
        for start, inner_path in self.inner:
            if start <= offset:
                path = inner_path
        return path


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int


def context_header(title: str, section_path: tuple[str, ...]) -> str:
    lines = [title.strip(), " > ".join(section_path)]
    return "\n".join(line for line in lines if line) + "\n\n"


def chunk_document(
    parsed: ParsedDocument, title: str, settings: ChunkingSettings, tokens: TokenCounter
) -> list[TextChunk]:
    text = parsed.text
    heading_lines = frozenset(h.offset for h in parsed.headings)
    pieces: list[tuple[int, int, tuple[str, ...]]] = []
    for section in _sections(text, parsed.headings, settings.respect_headings):
        header_tokens = 0
        if settings.include_context_header:
            header_tokens = tokens.count([context_header(title, section.path)])[0]
        budget = max(MIN_BUDGET, min(settings.max_tokens, tokens.max_length - 2 - header_tokens))
        overlap = min(settings.overlap_tokens, budget // 2)
        spans = sentence_spans(text, section.start, section.end, heading_lines)
        counts = tokens.count([text[s:e] for s, e in spans])
        units = [_Unit(s, e, n) for (s, e), n in zip(spans, counts, strict=True)]
        for start, end in _pack(text, units, budget, overlap, tokens):
            pieces.append((start, end, section.path_at(start)))
    texts = [text[s:e] for s, e, _ in pieces]
    counts = tokens.count(texts)
    chunks = []
    for index, ((start, end, path), chunk_text, count) in enumerate(
        zip(pieces, texts, counts, strict=True)
    ):
        header = context_header(title, path) if settings.include_context_header else ""
        chunks.append(
            TextChunk(
                index=index,
                text=chunk_text,
                start=start,
                end=end,
                section_path=path,
                token_count=count,
                page_number=parsed.page_at(start),
                embed_text=header + chunk_text,
            )
        )
    return chunks


def _sections(text: str, headings: list[Heading], respect_headings: bool) -> list[_Section]:
    """Sections by heading (or by top-level heading), each with its heading path."""
    if not headings:
        return [_Section(0, len(text), ())]
    top = min(h.level for h in headings)
    stack: list[Heading] = []
    paths: list[tuple[int, tuple[str, ...], bool]] = []  # (start, path, is top level)
    for heading in headings:
        while stack and stack[-1].level >= heading.level:
            stack.pop()
        stack.append(heading)
        paths.append((heading.offset, tuple(h.title for h in stack), heading.level == top))
    sections: list[_Section] = []
    if paths[0][0] > 0:
        sections.append(_Section(0, paths[0][0], ()))
    boundaries = [p for p in paths if respect_headings or p[2]]
    for i, (start, path, _) in enumerate(boundaries):
        end = boundaries[i + 1][0] if i + 1 < len(boundaries) else len(text)
        inner = tuple((s, p) for s, p, _ in paths if start < s < end)
        sections.append(_Section(start, end, path, inner))
    # A heading directly followed by a sub-heading has no text of its own: it lives on in
    # the section paths below it rather than as a chunk holding just the heading.
    return [s for s in sections if _body(text, s, headings).strip()]


def _body(text: str, section: _Section, headings: list[Heading]) -> str:
    body = text[section.start : section.end]
    if any(h.offset == section.start for h in headings):
        body = body.partition("\n")[2]
    return body


def _pack(
    text: str, units: list[_Unit], budget: int, overlap: int, tokens: TokenCounter
) -> list[tuple[int, int]]:
    """Greedy packing of units into (start, end) spans of at most `budget` tokens."""
    queue = [piece for unit in units for piece in _fit(text, unit, budget, tokens)]
    chunks: list[tuple[int, int]] = []
    current: list[_Unit] = []
    fresh = False  # the current chunk holds a unit not yet in an earlier chunk
    for unit in queue:
        if current and fresh and sum(u.tokens for u in current) + unit.tokens > budget:
            chunks.append((current[0].start, current[-1].end))
            current = _overlap(text, current, overlap, budget - unit.tokens, tokens)
        current.append(unit)
        fresh = True
    if current and fresh:
        chunks.append((current[0].start, current[-1].end))
    return chunks


def _fit(text: str, unit: _Unit, budget: int, tokens: TokenCounter) -> list[_Unit]:
    """A unit, or its pieces of at most `budget` tokens when it is longer."""
    if unit.tokens <= budget:
        return [unit]
    spans = [(unit.start + s, unit.start + e) for s, e in tokens.spans(text[unit.start : unit.end])]
    pieces: list[_Unit] = []
    i = 0
    while i < len(spans):
        j = min(i + budget, len(spans))
        if j < len(spans):  # prefer to cut where a space precedes the next token
            for k in range(j, i + budget // 2, -1):
                if (
                    text[spans[k - 1][1] : spans[k][0]].strip() == ""
                    and spans[k - 1][1] < spans[k][0]
                ):
                    j = k
                    break
        pieces.append(_Unit(spans[i][0], spans[j - 1][1], j - i))
        i = j
    return pieces


def _overlap(
    text: str, previous: list[_Unit], overlap: int, room: int, tokens: TokenCounter
) -> list[_Unit]:
    """The start of the next chunk: the previous chunk's tail of at most `overlap` tokens."""
    limit = min(overlap, room)
    if limit <= 0:
        return []
    carried: list[_Unit] = []
    total = 0
    for unit in reversed(previous):
        if total + unit.tokens > limit:
            break
        carried.insert(0, unit)
        total += unit.tokens
    if carried:
        return carried
    last = previous[-1]
    spans = tokens.spans(text[last.start : last.end])
    first = len(spans) - limit
    while 0 < first < len(spans) and not text[last.start + spans[first][0] - 1].isspace():
        first += 1  # start the carried tail at a word
    if not 0 < first < len(spans):
        return []
    return [_Unit(last.start + spans[first][0], last.end, len(spans) - first)]
