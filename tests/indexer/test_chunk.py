"""The chunker: exact offsets, never over budget, nothing lost, never across sections, stable ids."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.chunk import chunk_document, chunk_documents, split_sentences
from rag.core.config import ChunkerSettings, EmbedderSettings
from rag.core.types import Chunk, DocumentMeta, PageSpan, SectionSpan, SourceDocument
from rag.models.embed import Embedder, load_embedder
from rag.testing import HashEmbedder


def make_doc(
    text: str,
    *,
    title: str = "Guide",
    sections: Sequence[SectionSpan] = (),
    pages: Sequence[PageSpan] = (),
    doc_id: str = "doc-1",
) -> SourceDocument:
    meta = DocumentMeta(title=title, doc_type="guideline")
    return SourceDocument(doc_id, text, meta, "test", pages=tuple(pages), sections=tuple(sections))


def sentences_of(text: str) -> list[str]:
    return [text[a:b] for a, b in split_sentences(text)]


def segment_ids(doc: SourceDocument) -> tuple[list[int], dict[int, tuple[str, ...]]]:
    """For every character, an id of the section (or root gap) holding it, and each id's path."""
    ids = [-1] * len(doc.text)
    paths: dict[int, tuple[str, ...]] = {-1: ()}
    for n, sec in enumerate(doc.sections):
        paths[n] = sec.path
        for i in range(sec.start, min(sec.end, len(doc.text))):
            ids[i] = n
    # Distinct root gaps are distinct segments too.
    gap = -2
    for i in range(len(ids)):
        if ids[i] < 0:
            if i > 0 and ids[i - 1] < 0:
                ids[i] = ids[i - 1]
            else:
                gap -= 1
                ids[i] = gap
                paths[gap] = ()
    return ids, paths


def check_invariants(doc: SourceDocument, chunks: list[Chunk], embedder: Embedder, cfg: ChunkerSettings) -> None:
    budget = min(cfg.max_tokens, embedder.max_tokens)
    counts = embedder.count_tokens([c.indexed_text for c in chunks])
    ids, paths = segment_ids(doc)
    covered = bytearray(len(doc.text))
    for chunk, count in zip(chunks, counts, strict=True):
        assert chunk.text == doc.text[chunk.char_start : chunk.char_end]
        assert chunk.text == chunk.text.strip() and any(ch.isalnum() for ch in chunk.text)
        assert count <= budget and chunk.n_tokens == count
        segs = set(ids[chunk.char_start : chunk.char_end])
        assert len(segs) == 1, "chunk crosses a section boundary"
        assert chunk.section_path == paths[segs.pop()]
        assert chunk.page_start == doc.page_at(chunk.char_start)
        assert chunk.page_end == doc.page_at(chunk.char_end - 1)
        assert len(chunk.chunk_id) == 20 and len(chunk.content_hash) == 32
        covered[chunk.char_start : chunk.char_end] = b"\x01" * (chunk.char_end - chunk.char_start)
    # A section holding only its Markdown heading yields no chunk: the heading lives on in breadcrumbs.
    for line in re.finditer(r"(?m)^[ \t]*#{1,6}(?:[ \t].*)?$", doc.text):
        covered[line.start() : line.end()] = b"\x01" * (line.end() - line.start())
    lost = [i for i, ch in enumerate(doc.text) if ch.isalnum() and not covered[i]]
    assert not lost, f"characters not in any chunk: {[doc.text[i] for i in lost[:10]]}"
    assert len({c.chunk_id for c in chunks}) == len(chunks)


# --- generated documents --------------------------------------------------------------------------------------

_WORDS = st.sampled_from(
    "fever dose patients mg 2.5 0.5mg e.g. i.e. Dr. vs. et al. Fig. approx. U.S. café naïve β-lactam µg 日本語 IV"
    " (see 3) — “quoted” don't COVID-19 HbA1c ≥ 7% [1] * • ... ?! A B Z".split()
)
_ODD_WORD = st.text(st.characters(exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=12)
_LONG_WORD = st.text("abcdefgh-", min_size=40, max_size=400)
_SEP = st.sampled_from([" ", "  ", "\n", "\n\n", "\t", "\u00a0", "\u2003", "\n- ", "\n1. ", " \n \n", "\r\n", ""])
_SENTENCE = st.builds(
    lambda words, end: " ".join(words) + end,
    st.lists(st.one_of(_WORDS, _ODD_WORD, _LONG_WORD), min_size=1, max_size=40),
    st.sampled_from([".", "!", "?", "", ":", ".)"]),
)
_BODY = st.one_of(
    st.lists(st.tuples(_SENTENCE, _SEP), max_size=20).map(lambda xs: "".join(s + p for s, p in xs)),
    st.text(max_size=300),
)
_HEADING = st.lists(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=25), min_size=1, max_size=3)


@st.composite
def documents(draw: st.DrawFn) -> SourceDocument:
    parts: list[str] = []
    sections: list[SectionSpan] = []
    pos = 0
    for _ in range(draw(st.integers(1, 5))):
        heading = draw(st.one_of(st.none(), _HEADING))
        block = (heading[-1] + "\n" if heading else "") + draw(_BODY) + draw(_SEP)
        if heading is not None and block:
            sections.append(SectionSpan(tuple(heading), pos, pos + len(block)))
        parts.append(block)
        pos += len(block)
    text = "".join(parts)
    cuts = sorted(set(draw(st.lists(st.integers(0, max(0, len(text) - 1)), max_size=4))) | {0})
    pages = [PageSpan(n + 1, a, b) for n, (a, b) in enumerate(zip(cuts, [*cuts[1:], len(text)], strict=True))]
    paginated = draw(st.booleans())
    title = draw(st.one_of(st.just(""), st.text(max_size=20), st.text("Guideline on fever ", max_size=600)))
    return make_doc(text, title=title, sections=sections, pages=pages if paginated else ())


@st.composite
def chunk_settings(draw: st.DrawFn) -> tuple[ChunkerSettings, HashEmbedder]:
    max_tokens = draw(st.integers(16, 300))
    overlap = draw(st.integers(0, max_tokens // 2 - 1))
    cfg = ChunkerSettings(max_tokens=max_tokens, overlap_tokens=overlap, breadcrumb=draw(st.booleans()))
    return cfg, HashEmbedder(dim=8, max_tokens=draw(st.integers(8, 300)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(documents(), chunk_settings())
def test_chunk_invariants_on_generated_documents(
    doc: SourceDocument, setup: tuple[ChunkerSettings, HashEmbedder]
) -> None:
    cfg, embedder = setup
    chunks = chunk_document(doc, embedder, cfg)
    check_invariants(doc, chunks, embedder, cfg)
    assert chunk_document(doc, embedder, cfg) == chunks  # deterministic
    check_overlap(doc, chunks, embedder, cfg)


def check_overlap(doc: SourceDocument, chunks: list[Chunk], embedder: HashEmbedder, cfg: ChunkerSettings) -> None:
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.char_start > prev.char_start and nxt.char_end > prev.char_end  # always progresses
        if nxt.section_path == prev.section_path and nxt.char_start < prev.char_end:
            shared = doc.text[nxt.char_start : prev.char_end]
            assert len(embedder.token_spans([shared])[0]) <= cfg.overlap_tokens


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(documents(), min_size=1, max_size=4), chunk_settings())
def test_batch_equals_one_by_one(docs: list[SourceDocument], setup: tuple[ChunkerSettings, HashEmbedder]) -> None:
    cfg, embedder = setup
    docs = [make_doc(d.text, title=d.meta.title, sections=d.sections, doc_id=f"d{i}") for i, d in enumerate(docs)]
    one_by_one = [c for d in docs for c in chunk_document(d, embedder, cfg)]
    assert chunk_documents(docs, embedder, cfg) == one_by_one
    assert len({c.chunk_id for c in one_by_one}) == len(one_by_one)


# --- sentence splitter ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Take 2.5 mg daily. Then stop.", ["Take 2.5 mg daily.", "Then stop."]),
        ("Use a NSAID, e.g. Ibuprofen, if needed. Next.", ["Use a NSAID, e.g. Ibuprofen, if needed.", "Next."]),
        ("Seen by Dr. Smith vs. Dr. Jones (Fig. 2). Done!", ["Seen by Dr. Smith vs. Dr. Jones (Fig. 2).", "Done!"]),
        (
            "As Smith et al. Reported, approx. 5 were ill. Why? Unknown",
            ["As Smith et al. Reported, approx. 5 were ill.", "Why?", "Unknown"],
        ),
        ("In the U.S. Rates fell. Good.", ["In the U.S. Rates fell.", "Good."]),
        ("He said “stop.” Then left.", ["He said “stop.”", "Then left."]),
        ("first part.\nsecond part", ["first part.\nsecond part"]),
        ("Para one\n\nPara two", ["Para one", "Para two"]),
        ("Signs:\n- fever\n- cough\n1. rest\n2) fluids", ["Signs:", "- fever", "- cough", "1. rest", "2) fluids"]),
        ("Key points - one. - two.", ["Key points - one.", "- two."]),
        ("lowercase. after a period stays", ["lowercase. after a period stays"]),
        ("   ", []),
        ("", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert sentences_of(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "1. Use spirometry. (**Strong For**)\n2. Vaccinate.",
            ["1. Use spirometry. (**Strong For**)", "2. Vaccinate."],
        ),
        ("Give aspirin. (Class I, Level of Evidence A)", ["Give aspirin. (Class I, Level of Evidence A)"]),
        ("Biopsy within 24 hours. *(I-C)*", ["Biopsy within 24 hours. *(I-C)*"]),
        ("- Two groups\n\n   (**Weak For**)", ["- Two groups\n\n   (**Weak For**)"]),
        (
            "Give ICS. (Conditional recommendation, Very low quality evidence)",
            ["Give ICS. (Conditional recommendation, Very low quality evidence)"],
        ),
        # a parenthesised sentence of its own, or a note that grades nothing, stays apart
        (
            "HbA1c rises. (A higher sugar level is a risk factor.)",
            ["HbA1c rises.", "(A higher sugar level is a risk factor.)"],
        ),
        ("Treat. (See Figure 1.)", ["Treat.", "(See Figure 1.)"]),
        ("(**Strong For**) opens nothing", ["(**Strong For**) opens nothing"]),
    ],
)
def test_a_grade_written_after_a_recommendation_stays_with_it(text: str, expected: list[str]) -> None:
    assert sentences_of(text) == expected


def test_table_rows_are_units_so_no_chunk_ends_inside_a_row() -> None:
    rows = [f"| drug{i} w{i} w{i} | {i} mg daily |" for i in range(12)]
    text = "Doses by drug:\n\n| Drug | Dose |\n| --- | --- |\n" + "\n".join(rows)
    assert sentences_of(text) == ["Doses by drug:", "| Drug | Dose |", "| --- | --- |", *rows]
    chunks = chunk_document(
        make_doc(text), HashEmbedder(max_tokens=128), ChunkerSettings(max_tokens=30, overlap_tokens=0, breadcrumb=False)
    )
    assert len(chunks) > 2
    for chunk in chunks:
        assert all(line.startswith("|") and line.endswith("|") for line in chunk.text.splitlines() if "|" in line)


def test_split_sentences_offsets_within_a_range() -> None:
    text = "Head\nOne. Two. Three."
    spans = split_sentences(text, 5, 14)
    assert [text[a:b] for a, b in spans] == ["One.", "Two."]
    assert all(5 <= a < b <= 14 for a, b in spans)


# --- packing, overlap, breadcrumbs, pages ---------------------------------------------------------------------


def numbered_text(n: int) -> str:
    # With the fake embedder every sentence here is exactly 4 tokens: "WN wN wN."
    return " ".join(f"W{i} w{i} w{i}." for i in range(n))


def test_overlap_repeats_whole_trailing_sentences() -> None:
    doc = make_doc(numbered_text(30))
    cfg = ChunkerSettings(max_tokens=26, overlap_tokens=9, breadcrumb=False)
    chunks = chunk_document(doc, HashEmbedder(max_tokens=128), cfg)
    assert len(chunks) > 3
    for prev, nxt in itertools.pairwise(chunks):
        shared = doc.text[nxt.char_start : prev.char_end]
        assert sentences_of(shared) == sentences_of(prev.text)[-2:]  # 2 * 4 tokens <= 9
    assert all(c.n_tokens <= 26 for c in chunks)


def test_no_overlap_when_zero() -> None:
    doc = make_doc(numbered_text(30))
    chunks = chunk_document(doc, HashEmbedder(), ChunkerSettings(max_tokens=26, overlap_tokens=0, breadcrumb=False))
    assert all(nxt.char_start > prev.char_end for prev, nxt in itertools.pairwise(chunks))
    assert " ".join(c.text for c in chunks) == doc.text


def test_breadcrumbs_and_sections() -> None:
    text = "Intro text here.\nDosing\nGive 2.5 mg. Repeat daily.\nOutro."
    start = text.index("Dosing")
    end = text.index("Outro")
    sec = SectionSpan(("Treatment", "Dosing"), start, end)
    doc = make_doc(text, title="Fever  Guide", sections=[sec])
    chunks = chunk_document(doc, HashEmbedder(), ChunkerSettings(max_tokens=64, overlap_tokens=0))
    assert [(c.breadcrumb, c.section_path) for c in chunks] == [
        ("Fever Guide", ()),
        ("Fever Guide > Treatment > Dosing", ("Treatment", "Dosing")),
        ("Fever Guide", ()),
    ]
    assert chunks[1].indexed_text == "Fever Guide > Treatment > Dosing\nDosing\nGive 2.5 mg. Repeat daily."
    plain = chunk_document(doc, HashEmbedder(), ChunkerSettings(max_tokens=64, overlap_tokens=0, breadcrumb=False))
    assert all(c.breadcrumb == "" and c.indexed_text == c.text for c in plain)
    assert [c.chunk_id for c in plain] == [c.chunk_id for c in chunks]  # ids hash text and offsets only
    assert plain[0].content_hash != chunks[0].content_hash


def test_long_breadcrumb_is_truncated_to_half_the_budget() -> None:
    embedder = HashEmbedder(max_tokens=40)
    doc = make_doc(numbered_text(20), title=" ".join(f"title{i}" for i in range(100)))
    chunks = chunk_document(doc, embedder, ChunkerSettings(max_tokens=40, overlap_tokens=4))
    crumb = chunks[0].breadcrumb
    assert crumb.startswith("title0 title1") and crumb.endswith("…")
    assert embedder.count_tokens([crumb])[0] - 2 <= 20
    check_invariants(doc, chunks, embedder, ChunkerSettings(max_tokens=40, overlap_tokens=4))


def test_long_sentence_is_split_at_word_starts() -> None:
    doc = make_doc(" ".join(f"word{i}" for i in range(500)))
    cfg = ChunkerSettings(max_tokens=50, overlap_tokens=0, breadcrumb=False)
    chunks = chunk_document(doc, HashEmbedder(), cfg)
    assert len(chunks) == 11
    assert all(c.text.startswith("word") and c.text[-1].isdigit() for c in chunks)
    check_invariants(doc, chunks, HashEmbedder(), cfg)


def test_pages() -> None:
    text = "Page one text. More one.\fPage two text. More two.\fPage three."
    p2, p3 = text.index("Page two"), text.index("Page three")
    pages = [PageSpan(1, 0, p2), PageSpan(2, p2, p3), PageSpan(3, p3, len(text))]
    cfg = ChunkerSettings(max_tokens=16, overlap_tokens=0, breadcrumb=False)
    chunks = chunk_document(make_doc(text, pages=pages), HashEmbedder(max_tokens=16), cfg)
    assert [(c.page_start, c.page_end) for c in chunks] == [(1, 2), (3, 3)]
    unpaginated = chunk_document(make_doc(text), HashEmbedder(max_tokens=16), cfg)
    assert {(c.page_start, c.page_end) for c in unpaginated} == {(None, None)}


def test_empty_and_symbol_only_documents() -> None:
    assert chunk_document(make_doc(""), HashEmbedder(), ChunkerSettings()) == []
    assert chunk_document(make_doc(" -- ** \n\n ..."), HashEmbedder(), ChunkerSettings()) == []


# --- the real MiniLM tokenizer --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    return load_embedder(EmbedderSettings())


CLINICAL = (
    "Management of community-acquired pneumonia in adults.\n\n"
    "Give amoxicillin 500 mg three times daily, e.g. for 5 days. In children give 2.5 mg per kg, i.e. a weight "
    "based dose. Dr. Smith et al. Reported fewer relapses vs. placebo (Fig. 3). Review at 48 hours!\n"
    "Danger signs:\n- confusion or drowsiness\n- respiratory rate over 30 per minute\n- low blood pressure\n"
    "1. Refer urgently.\n2. Start oxygen if saturation is below 92 %.\n"
) * 12


@pytest.mark.slow
def test_minilm_synthetic_clinical_text(minilm: Embedder) -> None:
    doc = make_doc(CLINICAL, title="CAP guideline")
    cfg = ChunkerSettings(max_tokens=48, overlap_tokens=8)
    chunks = chunk_document(doc, minilm, cfg)
    check_invariants(doc, chunks, minilm, cfg)
    bounds = split_sentences(CLINICAL)
    starts, ends = {a for a, _ in bounds}, {b for _, b in bounds}
    assert all(c.char_start in starts and c.char_end in ends for c in chunks)  # whole sentences only
    texts = sentences_of(CLINICAL)
    assert "Give amoxicillin 500 mg three times daily, e.g. for 5 days." in texts
    assert "In children give 2.5 mg per kg, i.e. a weight based dose." in texts
    assert "- respiratory rate over 30 per minute" in texts and "2. Start oxygen if saturation is below 92 %." in texts


@pytest.mark.slow
def test_minilm_unbreakable_text_is_split_to_fit(minilm: Embedder) -> None:
    # No spaces: cuts fall inside words, where WordPiece counts are not additive; verification must catch it.
    text = "Sequence " + "pneumococcalstreptococcal-haemophilus/" * 300 + ". Tail sentence."
    doc = make_doc(text)
    cfg = ChunkerSettings(max_tokens=64, overlap_tokens=0)
    check_invariants(doc, chunk_document(doc, minilm, cfg), minilm, cfg)


@pytest.mark.slow
def test_minilm_guideline_pdf(minilm: Embedder, shared_data: Path) -> None:
    pypdf = pytest.importorskip("pypdf")
    path = shared_data / "guidelines" / "cdc_guide_infection_prevention_outpatient_settings_2016.pdf"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    texts: list[str] = []
    pages: list[PageSpan] = []
    pos = 0
    for number, page in enumerate(pypdf.PdfReader(path).pages[:20], start=1):
        page_text = (page.extract_text() or "") + "\n\n"
        pages.append(PageSpan(number, pos, pos + len(page_text)))
        texts.append(page_text)
        pos += len(page_text)
    text = "".join(texts)
    mid = len(text) // 2
    doc = make_doc(
        text, title="Guide to Infection Prevention", pages=pages, sections=[SectionSpan(("Part 2",), mid, len(text))]
    )
    cfg = ChunkerSettings()
    chunks = chunk_document(doc, minilm, cfg)
    assert len(chunks) > 20
    with_text = {p.number for p in pages if any(ch.isalnum() for ch in text[p.start : p.end])}
    assert {n for c in chunks for n in range(c.page_start or 0, (c.page_end or 0) + 1)} >= with_text
    check_invariants(doc, chunks, minilm, cfg)
    assert max(minilm.count_tokens([c.indexed_text for c in chunks])) <= 256
    assert chunk_document(doc, minilm, cfg) == chunks
