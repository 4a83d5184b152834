"""Raw document bytes -> plain text with its headings (and pages, for PDF).

Four formats: text/plain, text/markdown, text/html and application/pdf
(pypdf). The extracted text is what chunk offsets point into, so every
format produces one string plus the positions of its headings in it. A
document that cannot be read is refused with a sentence saying why
(`UnreadableDocument`), which the ingest reports as that document's reason.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

log = logging.getLogger(__name__)

SUPPORTED_MIME_TYPES = ("text/plain", "text/markdown", "text/html", "application/pdf")


class UnreadableDocument(Exception):
    """The document cannot be turned into text; the message is the reason given to callers."""


@dataclass(frozen=True)
class Heading:
    level: int  # 1 = top level
    title: str
    offset: int  # where the heading's line starts in the text (code points)


@dataclass
class ParsedDocument:
    text: str
    headings: list[Heading] = field(default_factory=list)
    page_starts: list[int] = field(default_factory=list)  # PDF: offset where each page starts
    page_count: int = 0

    def page_at(self, offset: int) -> int:
        """1-based page holding `offset` (PDF); 0 when the document has no pages."""
        page = 0
        for number, start in enumerate(self.page_starts, start=1):
            if start > offset:
                break
            page = number
        return page


def split_mime_type(mime_type: str) -> tuple[str, str]:
    """'text/plain; charset=latin-1' -> ('text/plain', 'latin-1')."""
    base, _, params = mime_type.partition(";")
    charset = ""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"')
    return base.strip().lower(), charset


def parse(content: bytes, mime_type: str) -> ParsedDocument:
    """Extract text and headings, or raise UnreadableDocument with the reason."""
    base, charset = split_mime_type(mime_type)
    if base not in SUPPORTED_MIME_TYPES:
        raise UnreadableDocument(
            f"unsupported mime type {base or '(none)'}; "
            f"use one of {', '.join(SUPPORTED_MIME_TYPES)}"
        )
    if not content:
        raise UnreadableDocument("document is empty (0 bytes)")
    if base == "application/pdf":
        parsed = _pdf(content)
    else:
        text = _decode(content, charset)
        parsed = {"text/plain": _plain, "text/markdown": _markdown, "text/html": _html}[base](text)
    if not parsed.text.strip():
        raise UnreadableDocument(
            "PDF has no extractable text (scanned images need OCR first)"
            if base == "application/pdf"
            else "document has no text"
        )
    return parsed


def _decode(content: bytes, charset: str) -> str:
    encoding = charset or "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise UnreadableDocument(f"unknown charset {charset!r}") from exc
    try:
        text = content.decode("utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding)
    except UnicodeDecodeError as exc:
        raise UnreadableDocument(
            f"not valid {encoding} text (byte {exc.start}); give the charset in the mime type, "
            "e.g. 'text/plain; charset=latin-1'"
        ) from exc
    if "\x00" in text:
        raise UnreadableDocument("text contains NUL bytes: is it a binary file?")
    return _normalise_newlines(text)


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _plain(text: str) -> ParsedDocument:
    return ParsedDocument(text)


_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|`)")


def _markdown(source: str) -> ParsedDocument:
    """Headings from ATX ('## Dosing') and setext lines; light inline markup removed."""
    lines = source.split("\n")
    out: list[str] = []
    headings: list[Heading] = []
    offset = 0
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            text = line
        elif match := _ATX.match(line):
            text = _inline(match[2])
            headings.append(Heading(len(match[1]), text, offset))
        elif (
            _SETEXT.match(line)
            and out
            and out[-1].strip()
            and i > 0
            and not _SETEXT.match(lines[i - 1])
        ):
            # The previous line was a heading: level 1 for '===', 2 for '---'.
            previous = out[-1]
            start = offset - len(previous) - 1
            headings.append(Heading(1 if line.strip()[0] == "=" else 2, previous.strip(), start))
            continue
        else:
            text = _inline(line)
        out.append(text)
        offset += len(text) + 1
    return ParsedDocument("\n".join(out), headings)


def _inline(text: str) -> str:
    return _EMPHASIS.sub("", _LINK.sub(r"\1", text))


_BLOCK_TAGS = {
    "p", "div", "section", "article", "br", "li", "ul", "ol", "table", "tr", "td", "th",
    "blockquote", "pre", "header", "footer", "main", "aside", "dl", "dt", "dd", "caption",
    "figure", "figcaption", "hr",
}  # fmt: skip
_SKIP_TAGS = {"script", "style", "head", "noscript", "template", "svg"}


class _HtmlText(HTMLParser):
    """Visible text of an HTML page; h1-h6 become headings, block tags line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.length = 0
        self.headings: list[Heading] = []
        self._skip = 0
        self._heading: tuple[int, int, int] | None = None  # (level, offset, part index)

    def _emit(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def _break(self) -> None:
        if self.parts and not self.parts[-1].endswith("\n"):
            self._emit("\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._break()
            self._heading = (int(tag[1]), self.length, len(self.parts))
        elif tag in _BLOCK_TAGS:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            level, offset, first = self._heading
            title = " ".join("".join(self.parts[first:]).split())
            if title:
                self.headings.append(Heading(level, title, offset))
            self._heading = None
            self._break()
        elif tag in _BLOCK_TAGS:
            self._break()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        text = re.sub(r"\s+", " ", data)
        if self.parts and self.parts[-1].endswith("\n"):
            text = text.lstrip()
        if text:
            self._emit(text)


def _html(source: str) -> ParsedDocument:
    parser = _HtmlText()
    parser.feed(source)
    parser.close()
    return ParsedDocument("".join(parser.parts), parser.headings)


def _pdf(content: bytes) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
        if reader.is_encrypted:
            raise UnreadableDocument("PDF is encrypted; upload an unprotected copy")
        texts: list[str] = []
        starts: list[int] = []
        offset = 0
        for page in reader.pages:
            text = _normalise_newlines(page.extract_text() or "").strip("\n")
            starts.append(offset)
            texts.append(text)
            offset += len(text) + 2  # pages are joined by a blank line
        outline = _outline(reader)
    except UnreadableDocument:
        raise
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableDocument(f"corrupt PDF: {exc}") from exc
    text = "\n\n".join(texts)
    headings = []
    for level, title, page_index in outline:
        start = starts[page_index] if 0 <= page_index < len(starts) else 0
        found = text.find(title, start)
        headings.append(Heading(level, title, found if found >= 0 else start))
    headings.sort(key=lambda h: h.offset)
    return ParsedDocument(text, headings, starts, len(starts))


def _outline(reader: object) -> list[tuple[int, str, int]]:
    """(level, title, page index) of the PDF outline (bookmarks), depth first."""
    from pypdf import PdfReader

    assert isinstance(reader, PdfReader)
    found: list[tuple[int, str, int]] = []

    def walk(items: list[object], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)  # type: ignore[arg-type]
                title = str(getattr(item, "title", "") or "").strip()
            except Exception:  # a broken bookmark is skipped, not fatal
                log.debug("skipping an unreadable PDF bookmark", exc_info=True)
                continue
            if title and page is not None:
                found.append((level, title, page))

    try:
        walk(list(reader.outline), 1)
    except Exception:  # no usable outline: the PDF is still read without headings
        log.debug("PDF outline unreadable", exc_info=True)
    return found
