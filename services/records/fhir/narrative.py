"""FHIR narrative (XHTML `text.div`) <-> the plain `Record.text`.

HACS keeps the narrative as plain text for search and display; the XHTML is
rebuilt on export (one paragraph per line) unless the imported original still
says the same thing, in which case the original is exported unchanged.
"""

from __future__ import annotations

from html import escape
from html.parser import HTMLParser

XHTML = "http://www.w3.org/1999/xhtml"

_BLOCKS = frozenset(
    [
        "address",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "li",
        "ol",
        "p",
        "pre",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)


def normalise(text: str) -> str:
    """Lines with single spaces and no blank lines: the form HACS stores."""
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def div_text(div: str) -> str:
    """The text content of an XHTML div, one line per block element."""
    collector = _TextCollector()
    collector.feed(div)
    collector.close()
    return normalise("".join(collector.chunks))


def text_div(text: str) -> str:
    """An XHTML div saying `text`, one paragraph per line."""
    paragraphs = "".join(f"<p>{escape(line)}</p>" for line in normalise(text).split("\n"))
    return f'<div xmlns="{XHTML}">{paragraphs}</div>'
