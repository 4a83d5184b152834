"""Parsing (text, Markdown, HTML, PDF) and token-aware chunking, on the test corpus.

The tokenizer is the shipped model's own (files only, no weights), so chunk
sizes are checked in the tokens the embedding model will see.
"""

from __future__ import annotations

import itertools

import pytest

from services.kernel.embedding.model_config import shipped_model_path
from services.rag.chunking import ChunkingSettings, chunk_document, context_header
from services.rag.parsing import ParsedDocument, UnreadableDocument, parse
from services.rag.sentences import sentence_spans
from services.rag.tokens import EstimatedTokens, TokenCounter, load_token_counter
from tests.data.rag.corpus import BAD, CORPUS


@pytest.fixture(scope="module")
def tokens() -> TokenCounter:
    return load_token_counter(shipped_model_path(), 256)


def _parsed(document_id: str) -> ParsedDocument:
    doc = next(d for d in CORPUS if d.document_id == document_id)
    return parse(doc.bytes(), doc.mime_type)


def test_each_format_gives_text_and_headings() -> None:
    markdown = _parsed("metformin-ckd")
    assert [(h.level, h.title) for h in markdown.headings] == [
        (1, "Metformin in chronic kidney disease"), (2, "Dosing"), (3, "Renal impairment"),
        (3, "Iodinated contrast"), (2, "Monitoring"),
    ]  # fmt: skip
    assert "#" not in markdown.text
    assert all(markdown.text.startswith(h.title, h.offset) for h in markdown.headings)
    html = _parsed("htn-targets")
    assert [h.title for h in html.headings][1:] == [
        "Blood pressure targets", "First-line drugs", "Chronic kidney disease"]  # fmt: skip
    assert "console.log" not in html.text and "font-family" not in html.text
    assert "An ACE inhibitor or an angiotensin receptor blocker (ARB)" in html.text
    pdf = _parsed("af-anticoagulation")
    assert pdf.page_count == 2 and pdf.page_starts[0] == 0
    assert [h.title for h in pdf.headings][-2:] == ["Dose adjustment in renal impairment",
                                                   "Bleeding risk"]  # fmt: skip
    renal = next(h for h in pdf.headings if h.title.startswith("Dose adjustment"))
    assert pdf.page_at(renal.offset) == 2
    assert not _parsed("asthma-steps").headings  # plain text has none
    latin = parse("Café au lait: 5 mg/kg.".encode("latin-1"), "text/plain; charset=latin-1")
    assert latin.text == "Café au lait: 5 mg/kg."


@pytest.mark.parametrize(
    ("content", "mime_type", "reason"),
    [
        (BAD[0].bytes(), "application/pdf", "corrupt PDF"),
        (BAD[1].bytes(), "text/plain", "document has no text"),
        (b"<html><body><script>x()</script></body></html>", "text/html", "document has no text"),
        (b"\x89PNG", "image/png", "unsupported mime type image/png"),
        (b"", "text/plain", "document is empty"),
        (b"caf\xe9", "text/plain", "not valid utf-8 text"),
        (b"abc", "text/plain; charset=klingon", "unknown charset"),
    ],
)
def test_unreadable_documents_say_why(content: bytes, mime_type: str, reason: str) -> None:
    with pytest.raises(UnreadableDocument, match=reason):
        parse(content, mime_type)


def test_sentences_keep_abbreviations_decimals_and_list_items_apart() -> None:
    text = (
        "In CKD, e.g. eGFR below 30, stop it. Dose 2.5 mg daily (max. 1000 mg).\n"
        "See Smith et al. 2020 for data.\n\n- First item\n- Second item"
    )
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "In CKD, e.g. eGFR below 30, stop it.",
        "Dose 2.5 mg daily (max. 1000 mg).",
        "See Smith et al. 2020 for data.",
        "- First item",
        "- Second item",
    ]


def test_chunks_follow_headings_fit_the_budget_and_point_into_the_text(
    tokens: TokenCounter,
) -> None:
    parsed = _parsed("metformin-ckd")
    chunks = chunk_document(parsed, "Metformin in CKD", ChunkingSettings(), tokens)
    paths = [c.section_path[-1] for c in chunks]
    assert paths == ["Metformin in chronic kidney disease", "Renal impairment",
                     "Iodinated contrast", "Monitoring"]  # fmt: skip
    for chunk in chunks:
        assert parsed.text[chunk.start : chunk.end] == chunk.text
        header = context_header("Metformin in CKD", chunk.section_path)
        assert chunk.embed_text == header + chunk.text
        assert tokens.count([chunk.embed_text])[0] + 2 <= tokens.max_length  # nothing cut off
    no_header = chunk_document(parsed, "T", ChunkingSettings(include_context_header=False), tokens)
    assert all(c.embed_text == c.text for c in no_header)


def test_small_chunks_overlap_and_never_cross_a_top_level_section(tokens: TokenCounter) -> None:
    parsed = _parsed("metformin-ckd")
    settings = ChunkingSettings(max_tokens=40, overlap_tokens=12, respect_headings=False)
    chunks = chunk_document(parsed, "T", settings, tokens)
    assert len(chunks) > 5
    assert all(c.token_count <= 40 for c in chunks)
    overlapping = [b for a, b in itertools.pairwise(chunks) if b.start < a.end]
    assert overlapping  # consecutive chunks share their edge
    for a, b in itertools.pairwise(chunks):
        if b.start < a.end:
            assert tokens.count([parsed.text[b.start : a.end]])[0] <= 12
    top = [h for h in parsed.headings if h.level == 1]
    assert len(top) == 1  # one top-level section: every chunk lies inside it
    # With headings respected, no chunk spans two sections.
    by_heading = chunk_document(parsed, "T", ChunkingSettings(max_tokens=40), tokens)
    starts = sorted(h.offset for h in parsed.headings)
    for c in by_heading:
        assert not [s for s in starts if c.start < s < c.end]


def test_a_sentence_longer_than_a_chunk_is_cut_at_spaces(tokens: TokenCounter) -> None:
    long = "Metformin " + " ".join(f"word{i}" for i in range(300)) + "."
    chunks = chunk_document(ParsedDocument(long), "T", ChunkingSettings(max_tokens=64), tokens)
    assert len(chunks) > 3 and all(c.token_count <= 64 for c in chunks)
    assert all(long[c.start - 1] == " " for c in chunks[1:] if c.start > 0)


def test_pdf_chunks_know_their_page(tokens: TokenCounter) -> None:
    parsed = _parsed("af-anticoagulation")
    chunks = chunk_document(parsed, "AF", ChunkingSettings(), tokens)
    pages = {c.section_path[-1]: c.page_number for c in chunks}
    assert pages["Stroke risk assessment"] == 1
    assert pages["Dose adjustment in renal impairment"] == 2


def test_estimated_tokens_when_no_tokenizer_is_at_hand(
    tmp_path: object, tokens: TokenCounter
) -> None:
    from pathlib import Path

    counter = load_token_counter(Path(str(tmp_path)) / "missing", 128)
    assert isinstance(counter, EstimatedTokens)
    text = _parsed("metformin-ckd").text
    estimated, real = counter.count([text])[0], tokens.count([text])[0]
    assert 0.7 * real <= estimated <= 1.3 * real  # close enough to size chunks
    assert len(counter.spans(text)) == estimated
