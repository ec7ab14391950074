"""Loaders: real guideline PDFs and corpora from ../shared/data, plus small files made in tmp_path."""

from __future__ import annotations

import io
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import pytest
from pypdf import PageObject, PdfReader, PdfWriter

from indexer.load import SUPPORTED_SUFFIXES, file_sha256, iter_source_files, load_source
from indexer.load.pdf import join_pages, normalise_pdf_text
from rag.core.types import LoadResult, SectionSpan, SourceDocument

TB_PDF = "guidelines/cdc_what_you_need_to_know_about_tb.pdf"


def _only_document(result: LoadResult) -> SourceDocument:
    assert not result.failures, result.failures
    assert len(result.documents) == 1
    return result.documents[0]


def _reasons(result: LoadResult) -> str:
    return " | ".join(f.reason for f in result.failures)


def _random_bytes(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


# --- PDF -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guideline_pdfs(shared_data: Path) -> dict[str, LoadResult]:
    pdfs = sorted((shared_data / "guidelines").glob("*.pdf"))
    assert pdfs, "no guideline PDFs found"
    return {p.name: load_source(p) for p in pdfs}


def test_real_pdfs_load_with_numbered_pages(guideline_pdfs: dict[str, LoadResult], shared_data: Path) -> None:
    for name, result in guideline_pdfs.items():
        doc = _only_document(result)
        n_pages = len(PdfReader(shared_data / "guidelines" / name).pages)
        assert [p.number for p in doc.pages] == list(range(1, n_pages + 1)), name
        with_text = sum(1 for p in doc.pages if doc.text[p.start : p.end].strip())
        assert with_text >= 0.8 * n_pages, name
        previous_end = 0
        for page in doc.pages:
            assert previous_end <= page.start <= page.end <= len(doc.text), (name, page)
            previous_end = page.end
            if page.end > page.start:
                assert doc.page_at(page.start) == page.number
                assert doc.page_at(page.end - 1) == page.number
        assert doc.meta.doc_type == "guideline"
        assert doc.meta.title and doc.meta.year is not None
        assert doc.doc_id == Path(name).stem
        assert "\x00" not in doc.text


def test_pdf_metadata_and_outline_sections(guideline_pdfs: dict[str, LoadResult]) -> None:
    tb = _only_document(guideline_pdfs["cdc_what_you_need_to_know_about_tb.pdf"])
    assert tb.meta.title == "What You Need to Know About Tuberculosis"
    assert tb.meta.year == 2023
    diet = _only_document(guideline_pdfs["who_emro_healthy_diet_2019.pdf"])
    assert diet.meta.title == "Healthy diet"  # no /Title: the cover page's largest type
    ipc = _only_document(guideline_pdfs["who_ipc_core_components_guidelines_2016.pdf"])
    assert len(ipc.sections) > 10
    assert all(not any(part.startswith("_") for part in s.path) for s in ipc.sections)  # no "_GoBack"
    ends = 0
    for section in ipc.sections:
        assert ends <= section.start < section.end <= len(ipc.text)
        ends = section.end
    assert any(s.path[0].startswith("8 Core components") and len(s.path) == 2 for s in ipc.sections)


def test_pdf_outline_added_by_writer(shared_data: Path, tmp_path: Path) -> None:
    writer = PdfWriter(clone_from=shared_data / TB_PDF)
    parent = writer.add_outline_item(title="Tuberculosis basics", page_number=0)
    writer.add_outline_item(title="Testing for TB", page_number=1, parent=parent)
    writer.add_outline_item(title="_GoBack", page_number=1)
    target = tmp_path / "tb.pdf"
    with target.open("wb") as handle:
        writer.write(handle)
    doc = _only_document(load_source(target, source="CDC", licence="public domain"))
    assert [s.path for s in doc.sections] == [("Tuberculosis basics",), ("Tuberculosis basics", "Testing for TB")]
    assert doc.sections[0].start == doc.pages[0].start
    assert doc.sections[1].start == doc.pages[1].start and doc.sections[1].end == len(doc.text)
    assert (doc.meta.source, doc.meta.licence) == ("CDC", "public domain")


def test_truncated_pdf_is_a_failure(shared_data: Path, tmp_path: Path) -> None:
    raw = (shared_data / TB_PDF).read_bytes()
    target = tmp_path / "truncated.pdf"
    target.write_bytes(raw[: len(raw) // 2])
    result = load_source(target)
    assert not result.documents
    assert "cannot parse PDF" in _reasons(result) and "re-download" in _reasons(result)


def test_truncated_pdf_is_quiet(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = (shared_data / TB_PDF).read_bytes()
    target = tmp_path / "truncated.pdf"
    target.write_bytes(raw[: len(raw) // 2])
    level = logging.getLogger("pypdf").level
    load_source(target)
    assert capsys.readouterr().err == ""
    assert logging.getLogger("pypdf").level == level  # quiet only during the call


def test_pdf_page_that_fails_keeps_the_others(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = PageObject.extract_text

    def flaky(self: PageObject, *args: Any, **kwargs: Any) -> str:
        text = original(self, *args, **kwargs)
        if "Testing for TB" in text and "visitor_text" not in kwargs:
            raise ValueError("bad content stream")
        return text

    monkeypatch.setattr(PageObject, "extract_text", flaky)
    result = load_source(shared_data / TB_PDF)
    (doc,) = result.documents
    assert [(f.record, "bad content stream" in f.reason) for f in result.failures] == [("page 2", True)]
    assert doc.pages[1].start == doc.pages[1].end == len(doc.text)
    assert doc.page_at(0) == 1 and "Tuberculosis" in doc.text


def test_encrypted_pdf_is_a_failure(tmp_path: Path) -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt("secret")
    target = tmp_path / "locked.pdf"
    with target.open("wb") as handle:
        writer.write(handle)
    result = load_source(target)
    assert not result.documents
    assert len(result.failures) == 1
    assert "encrypted" in result.failures[0].reason and "qpdf --decrypt" in result.failures[0].reason


def test_pdf_without_text_layer(tmp_path: Path) -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buffer = io.BytesIO()
    writer.write(buffer)
    target = tmp_path / "scan.pdf"
    target.write_bytes(buffer.getvalue())
    result = load_source(target)
    assert not result.documents
    assert "no extractable text" in _reasons(result) and "OCR" in _reasons(result)


@pytest.mark.parametrize("suffix", [".pdf", ".txt", ".md", ".jsonl", ".json"])
def test_empty_file(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"empty{suffix}"
    target.write_bytes(b"")
    result = load_source(target)
    assert not result.documents
    assert "empty document" in _reasons(result)


@pytest.mark.parametrize("suffix", [".pdf", ".txt", ".md"])
def test_binary_file(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"noise{suffix}"
    target.write_bytes(_random_bytes(4096))
    result = load_source(target)
    assert not result.documents and len(result.failures) == 1
    expected = "not a PDF" if suffix == ".pdf" else "binary file, not text"
    assert expected in result.failures[0].reason


def test_binary_file_without_nul_bytes(tmp_path: Path) -> None:
    target = tmp_path / "noise.txt"
    target.write_bytes(_random_bytes(4096).replace(b"\x00", b""))
    assert "binary file, not text" in _reasons(load_source(target))


def test_normalise_pdf_text() -> None:
    raw = "Start treat-\nment  now\x00.\r\nCOVID-\n19 and well-\nKnown  \n\n\n\nnext\ufb01le"
    assert normalise_pdf_text(raw) == "Start treatment now.\nCOVID-\n19 and well-\nKnown\n\nnextfile"


def test_join_pages_gives_empty_pages_empty_spans() -> None:
    text, pages = join_pages(["", "one", "", "two"])
    assert text == "one\n\ntwo"
    assert [(p.number, p.start, p.end) for p in pages] == [(1, 0, 0), (2, 0, 3), (3, 5, 5), (4, 5, 8)]


# --- text and Markdown -------------------------------------------------------------------------------------


def test_non_utf8_text_decodes(tmp_path: Path) -> None:
    target = tmp_path / "legacy.txt"
    target.write_bytes("Caf\xe9 na\xefve notes\nsecond line".encode("cp1252"))
    doc = _only_document(load_source(target))
    assert doc.text.startswith("Café naïve notes")
    assert doc.meta.title == "Café naïve notes"
    assert doc.doc_id == "legacy"


def test_utf8_bom_and_crlf(tmp_path: Path) -> None:
    target = tmp_path / "bom.txt"
    target.write_bytes(b"\xef\xbb\xbfFirst line\r\nSecond line\r\n")
    doc = _only_document(load_source(target))
    assert doc.text == "First line\nSecond line"


def test_whitespace_only_text_is_empty(tmp_path: Path) -> None:
    target = tmp_path / "blank.txt"
    target.write_text("  \n\n\t \n", encoding="utf-8")
    assert "empty document" in _reasons(load_source(target))


MARKDOWN = """---
title: Hypertension in Adults
issuer: NICE
year: 2023
url: https://www.nice.org.uk/guidance/ng136
type: guideline
license: CC BY 4.0
id: htn-nice
reviewed_by: [A. Smith, B. Jones]
---

# Hypertension in Adults

Intro paragraph.

## Diagnosis

Measure twice.

### Ambulatory monitoring

Use ABPM.

```bash
# not a heading
```

## Treatment

Start with an ACE inhibitor.
"""


def test_markdown_front_matter_and_sections(tmp_path: Path) -> None:
    target = tmp_path / "htn.md"
    target.write_text(MARKDOWN, encoding="utf-8")
    doc = _only_document(load_source(target))
    assert doc.doc_id == "htn-nice"
    assert doc.text.startswith("# Hypertension in Adults")
    meta = doc.meta
    assert (meta.title, meta.source, meta.year, meta.doc_type) == ("Hypertension in Adults", "NICE", 2023, "guideline")
    assert (meta.url, meta.licence) == ("https://www.nice.org.uk/guidance/ng136", "CC BY 4.0")
    assert meta.extra == {"reviewed_by": "A. Smith; B. Jones"}
    paths = [s.path for s in doc.sections]
    assert paths == [("Diagnosis",), ("Diagnosis", "Ambulatory monitoring"), ("Treatment",)]
    for section, heading in zip(doc.sections, ["## Diagnosis", "### Ambulatory", "## Treatment"], strict=True):
        assert doc.text[section.start : section.end].startswith(heading)
    assert doc.sections[0].end == doc.sections[1].start
    assert doc.sections[-1].end == len(doc.text)
    assert "# not a heading" in doc.text[doc.sections[1].start : doc.sections[1].end]


def test_markdown_without_front_matter(tmp_path: Path) -> None:
    target = tmp_path / "My Notes.markdown"
    target.write_text("Some preface.\n\n# Overview\n\ntext\n\n# Dosing\n\n## Adults\n\nmore\n", encoding="utf-8")
    doc = _only_document(load_source(target, doc_type="literature"))
    assert doc.meta.title == "Overview"  # the first H1
    assert doc.doc_id == "my-notes"
    assert doc.meta.doc_type == "literature"
    assert [s.path for s in doc.sections] == [("Dosing",), ("Dosing", "Adults")]
    assert doc.sections[0].start == doc.text.index("# Dosing")


def test_markdown_bad_front_matter(tmp_path: Path) -> None:
    target = tmp_path / "bad.md"
    target.write_text("---\ntitle: [unclosed\n---\nbody\n", encoding="utf-8")
    assert "invalid YAML in front matter" in _reasons(load_source(target))
    target.write_text("---\ntype: pamphlet\n---\nbody\n", encoding="utf-8")
    assert "unknown document type 'pamphlet'" in _reasons(load_source(target))
    doc = _only_document(load_source(target, doc_type="consumer-health"))  # an override makes it valid
    assert doc.meta.doc_type == "consumer-health"


def test_markdown_title_falls_back_to_stem(tmp_path: Path) -> None:
    target = tmp_path / "untitled-note.md"
    target.write_text("Just text, no heading.\n", encoding="utf-8")
    assert _only_document(load_source(target)).meta.title == "untitled-note"


# --- BEIR JSONL -------------------------------------------------------------------------------------------


def test_beir_jsonl_bad_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"_id": "a", "title": "Alpha", "text": "first text", "metadata": {"year": "2019", "qtype": "x"}}),
        "{not json",
        json.dumps({"_id": "a", "title": "Again", "text": "duplicate"}),
        json.dumps({"_id": "b", "title": "No text"}),
        "",
        json.dumps({"_id": "c", "title": "", "text": "  "}),
        json.dumps({"title": "no id", "text": "text"}),
        json.dumps({"_id": "d", "title": "", "text": "x " * 100, "metadata": {"mesh": ["A", "B"], "license": "MIT"}}),
    ]
    target = tmp_path / "corpus.jsonl"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = load_source(target)
    assert [d.doc_id for d in result.documents] == ["a", "d"]
    records = {f.record: f.reason for f in result.failures}
    assert set(records) == {"line 2", "line 3", "line 4", "line 6", "line 7"}
    assert "invalid JSON" in records["line 2"]
    assert "duplicate _id 'a' (first on line 1)" in records["line 3"]
    assert 'no "text"' in records["line 4"] and 'empty "text"' in records["line 6"]
    assert 'missing "_id"' in records["line 7"]
    alpha, delta = result.documents
    assert (alpha.meta.title, alpha.meta.year, alpha.meta.doc_type) == ("Alpha", 2019, "literature")
    assert alpha.meta.extra == {"qtype": "x"}
    assert len(delta.meta.title) <= 80 and delta.meta.title.startswith("x x")
    assert delta.meta.extra == {"mesh": "A; B"} and delta.meta.licence == "MIT"


def test_real_medquad_corpus(shared_data: Path) -> None:
    started = time.perf_counter()
    result = load_source(shared_data / "retrieval" / "medquad" / "corpus.jsonl")
    elapsed = time.perf_counter() - started
    assert len(result.documents) == 16_407 and not result.failures
    assert elapsed < 10.0  # about 1 s on 2 cores; generous so a loaded CI machine does not flake
    first = result.documents[0]
    assert first.doc_id == "medquad:00000"
    assert first.meta.doc_type == "consumer-health" and first.meta.url and "qtype" in first.meta.extra
    # The question type is the passage's section: "Information", "Treatment", ...
    assert first.sections == (SectionSpan(("Information",), 0, len(first.text)),)


# --- PubMedQA JSON ----------------------------------------------------------------------------------------


def test_pubmedqa_native_json(shared_data: Path) -> None:
    path = shared_data / "pubmedqa" / "pqal_dev.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    result = load_source(path)
    assert len(result.documents) == 500 and not result.failures
    doc = result.documents[0]
    pmid = next(iter(raw))
    record = raw[pmid]
    assert doc.doc_id == f"pmid:{pmid}"
    assert doc.meta.title == record["QUESTION"]
    assert doc.meta.url == f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/"
    assert (doc.meta.source, doc.meta.doc_type, doc.meta.year) == ("PubMed", "literature", int(record["YEAR"]))
    assert doc.meta.extra["mesh"] == "; ".join(record["MESHES"])
    assert [s.path for s in doc.sections] == [(label,) for label in record["LABELS"]]
    for section, context in zip(doc.sections, record["CONTEXTS"], strict=True):
        assert doc.text[section.start : section.end] == " ".join(context.split())
    for loaded in result.documents:  # only the contexts: LONG_ANSWER and final_decision are the answers
        contexts = raw[loaded.doc_id.removeprefix("pmid:")]["CONTEXTS"]
        assert loaded.text == "\n\n".join(" ".join(c.split()) for c in contexts)
        assert set(loaded.meta.extra) == {"mesh"} and loaded.sections


def test_unrecognised_json(tmp_path: Path) -> None:
    target = tmp_path / "other.json"
    target.write_text('{"a": [1, 2]}', encoding="utf-8")
    assert "unrecognised JSON" in _reasons(load_source(target))
    target.write_text("{broken", encoding="utf-8")
    assert "invalid JSON" in _reasons(load_source(target))


# --- corpus manifests ---------------------------------------------------------------------------------------


def test_manifest_resolves_relative_path(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "corpus.jsonl").write_text(
        json.dumps({"_id": "x1", "title": "T", "text": "body", "metadata": {"url": "https://own.example/x1"}})
        + "\n"
        + json.dumps({"_id": "x2", "title": "T2", "text": "body two", "metadata": {"type": "guideline"}})
        + "\n",
        encoding="utf-8",
    )
    manifests = tmp_path / "corpora"
    manifests.mkdir()
    manifest = manifests / "demo.corpus.json"
    manifest.write_text(
        json.dumps(
            {
                "clinrag_corpus": 1,
                "path": "../data/corpus.jsonl",
                "type": "consumer-health",
                "source": "Demo",
                "licence": "CC0",
                "url": "https://default.example/",
                "description": "two passages",
            }
        ),
        encoding="utf-8",
    )
    first, second = load_source(manifest).documents
    assert {d.meta.doc_type for d in (first, second)} == {"consumer-health"}
    assert {d.meta.source for d in (first, second)} == {"Demo"}
    assert {d.meta.licence for d in (first, second)} == {"CC0"}
    assert first.meta.url == "https://own.example/x1" and second.meta.url == "https://default.example/"
    assert Path(first.source_path) == data / "corpus.jsonl"
    overridden = load_source(manifest, source="Caller").documents[0]
    assert overridden.meta.source == "Caller"


def test_manifest_problems(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"clinrag_corpus": 1, "path": "missing.jsonl"}), encoding="utf-8")
    assert "does not exist" in _reasons(load_source(manifest))
    manifest.write_text(json.dumps({"clinrag_corpus": 1, "path": "x", "colour": "red"}), encoding="utf-8")
    assert "unknown key(s) colour" in _reasons(load_source(manifest))
    manifest.write_text(json.dumps({"clinrag_corpus": 2, "path": "x"}), encoding="utf-8")
    assert "unsupported corpus manifest version 2" in _reasons(load_source(manifest))
    manifest.write_text(json.dumps({"clinrag_corpus": 1, "path": "m.json"}), encoding="utf-8")
    assert "loop" in _reasons(load_source(manifest))


def test_manifest_to_shared_data(shared_data: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "pubmedqa.corpus.json"
    target = shared_data / "retrieval" / "pubmedqa" / "corpus.jsonl"
    manifest.write_text(json.dumps({"clinrag_corpus": 1, "path": str(target), "licence": "MIT"}), encoding="utf-8")
    result = load_source(manifest)
    assert len(result.documents) == 1000 and not result.failures
    assert all(d.meta.licence == "MIT" for d in result.documents)


# --- dispatch, walking, hashing ----------------------------------------------------------------------------


def test_unsupported_and_missing(tmp_path: Path) -> None:
    target = tmp_path / "slides.xyz"
    target.write_text("x", encoding="utf-8")
    reason = _reasons(load_source(target))
    assert "unsupported file type .xyz; supported:" in reason and ".pdf" in reason
    assert "no such file" in _reasons(load_source(tmp_path / "absent.pdf"))
    assert "unknown document type" in _reasons(load_source(target, doc_type="poster"))  # type: ignore[arg-type]


def test_iter_source_files(tmp_path: Path) -> None:
    for name in ["b.md", "a.txt", "sub/c.pdf", "sub/deeper/d.jsonl", ".hidden.md", ".git/e.md", "notes.docx", "Z.MD"]:
        path = tmp_path / "root" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x", encoding="utf-8")
    explicit = tmp_path / "root" / "notes.docx"
    files, failures = iter_source_files([tmp_path / "root", explicit, tmp_path / "nope", tmp_path / "root" / "a.txt"])
    relative = [f.relative_to(tmp_path / "root").as_posix() for f in files]
    assert relative == ["Z.MD", "a.txt", "b.md", "sub/c.pdf", "sub/deeper/d.jsonl", "notes.docx"]
    assert len(failures) == 1 and failures[0].path == str(tmp_path / "nope")
    assert "no such file" in failures[0].reason
    assert files == iter_source_files([tmp_path / "root", explicit])[0]


def test_file_sha256(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_bytes(b"abc")
    assert file_sha256(target) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert ".markdown" in SUPPORTED_SUFFIXES


def test_a_beir_folder_gives_its_corpus_not_its_questions(tmp_path: Path) -> None:
    from indexer.load import iter_source_files

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (beir / name).write_text(json.dumps({"_id": "1", "text": "Aspirin for pain."}) + "\n")
    (beir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n1\t1\t1\n")
    (tmp_path / "notes.jsonl").write_text(json.dumps({"_id": "n", "text": "Other."}) + "\n")
    files, failures = iter_source_files([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["beir/corpus.jsonl", "notes.jsonl"]
    assert not failures
