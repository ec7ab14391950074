"""A generated set of malformed source files: each is a clear failure naming the file and the problem (or, for
text in another encoding, loads correctly), and adding them to an index loses nothing already indexed.

CLINRAG_MALFORMED_TRIALS sets how many random truncations of a PDF and a JSONL file are tried (default 20).
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from indexer import add_sources, build_index, verify_bundle
from indexer.load import load_source
from rag.index.store import load_bundle
from rag.retrieval.search import Searcher
from tests.reliability.helpers import embedder, index_settings, trials, write_corpus

TRUNCATIONS = trials("CLINRAG_MALFORMED_TRIALS", 20)
FIFTY_MB = 50 * 1024 * 1024
PDF_TEXT = ["Nitrofurantoin 100 mg twice daily for five days treats cystitis.", "Review the patient after two weeks."]


def text_pdf(lines: list[str], *, password: str | None = None, algorithm: str = "RC4-128", pages: int = 1) -> bytes:
    """A real PDF with a text layer (Helvetica), which pypdf alone can write."""
    writer = PdfWriter()
    for _ in range(pages):
        page = writer.add_blank_page(width=612, height=792)
        font = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
        fonts = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
        stream = DecodedStreamObject()
        stream.set_data(("BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({t}) '" for t in lines) + " ET").encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
    if password is not None:
        writer.encrypt(password, algorithm=algorithm)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def blank_pdf(pages: int) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=612, height=792)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class Bad:
    name: str
    content: bytes
    reason: str  # what the failure must say
    record: str | None = None  # the record it names, for line-level failures in a file that also has good rows


def _jsonl(*rows: object) -> bytes:
    return b"\n".join(r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows) + b"\n"


def _good_row(doc_id: str) -> dict[str, object]:
    return {"_id": doc_id, "title": "Gout", "text": "Colchicine treats acute gout flares in adults."}


def malformed_set() -> list[Bad]:
    pdf = text_pdf(PDF_TEXT)
    return [
        Bad("truncated.pdf", pdf[: len(pdf) * 6 // 10], "cannot parse PDF"),
        Bad("truncated-to-header.pdf", pdf[:24], "cannot parse PDF"),
        Bad("encrypted.pdf", text_pdf(PDF_TEXT, password="s3cret"), "encrypted PDF"),
        Bad("encrypted-rc4-40.pdf", text_pdf(PDF_TEXT, password="x", algorithm="RC4-40"), "encrypted PDF"),
        Bad("zero-pages.pdf", blank_pdf(0), "PDF has no pages"),
        Bad("image-only.pdf", blank_pdf(3), "no extractable text"),
        Bad("html-saved-as.pdf", b"<!doctype html><html><body>Not found</body></html>", "not a PDF"),
        Bad("empty.pdf", b"", "empty document"),
        Bad("bad-rows.jsonl", _bad_rows(), "invalid JSON", record="line 2"),
        Bad("beir-missing-text.jsonl", _jsonl({"_id": "a", "title": "T"}, {"_id": "b"}), 'no "text"', "line 1"),
        Bad("beir-missing-id.jsonl", _jsonl({"title": "T", "text": "body"}), 'missing "_id"', "line 1"),
        Bad("beir-not-objects.jsonl", _jsonl([1, 2], "text", 3), "expected a JSON object", "line 1"),
        Bad("huge-line.jsonl", _huge_jsonl(), "line longer than 8 MB", "line 1"),
        Bad("huge-line.txt", b"fever " * (FIFTY_MB // 6), "too large for one text document"),
        Bad("utf32-no-bom.txt", "Asthma notes".encode("utf-32-le"), "binary file, not text"),
        Bad("random-bytes.md", random.Random(3).randbytes(4096), "binary file, not text"),
        Bad("bad-front-matter.md", b"---\ntitle: [unclosed\n---\nbody text\n", "invalid YAML in front matter"),
        Bad("unclosed-front-matter.md", b"---\ntitle: x\nbody text\n", "never closed"),
        Bad("whitespace.txt", b" \n\t\n  ", "empty document"),
        Bad("other.json", b'{"rows": [1, 2]}', "unrecognised JSON"),
        Bad("broken.json", b'{"Q": {"QUESTION": "x",', "invalid JSON"),
        Bad("pubmedqa-no-contexts.json", json.dumps({"1": {"QUESTION": "q", "CONTEXTS": []}}).encode(), "no CONTEXTS"),
        Bad("slides.pptx", b"PK\x03\x04", "unsupported file type .pptx"),
    ]


def _bad_rows() -> bytes:
    return _jsonl(
        _good_row("gout-1"),
        b"{not json",
        b'{"_id": "latin", "text": "caf\xe9"}',  # Latin-1 bytes inside a UTF-8 file
        {"_id": "num", "text": 42},
        {"_id": "meta", "text": "x", "metadata": ["not", "an", "object"]},
        _good_row("gout-1"),
        b"\x00\x01\x02",
        _good_row("gout-2"),
    )


def _huge_jsonl() -> bytes:
    huge = json.dumps({"_id": "huge", "text": "fever " * (FIFTY_MB // 6)}).encode()
    return huge + b"\n" + json.dumps(_good_row("after-huge")).encode() + b"\n"


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Bad]]:
    folder = tmp_path_factory.mktemp("malformed")
    files = {}
    for bad in malformed_set():
        path = folder / bad.name
        path.write_bytes(bad.content)
        files[bad.name] = (path, bad)
    return files


@pytest.mark.parametrize("name", [b.name for b in malformed_set()])
def test_each_malformed_file_is_a_clear_failure(bad_files: dict[str, tuple[Path, Bad]], name: str) -> None:
    path, bad = bad_files[name]
    result = load_source(path)
    assert result.failures, f"{name} loaded without a failure"
    assert all(f.path == str(path) for f in result.failures)  # every failure names the file
    matching = [f for f in result.failures if bad.reason in f.reason and (bad.record is None or f.record == bad.record)]
    assert matching, [f.to_json() for f in result.failures]
    for failure in result.failures:
        problem, _, fix = failure.reason.partition(":")
        assert problem and fix.strip(), f"{name}: the reason must say the problem and the fix: {failure.reason!r}"
    if name == "bad-rows.jsonl":
        assert [d.doc_id for d in result.documents] == ["gout-1", "gout-2"]
        assert {f.record for f in result.failures} == {f"line {n}" for n in (2, 3, 4, 5, 6, 7)}
        assert "duplicate _id 'gout-1'" in next(f.reason for f in result.failures if f.record == "line 6")
    elif name == "huge-line.jsonl":
        assert [d.doc_id for d in result.documents] == ["after-huge"]
    else:
        assert not result.documents


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("latin1.txt", "Café naïve notes on asthma\nUse an inhaler.".encode("latin-1")),
        ("cp1252.md", "# Asthma\n\nThe “reliever” inhaler – as needed.".encode("cp1252")),
        ("utf16-bom.txt", "Café naïve notes on asthma\nUse an inhaler.".encode("utf-16")),
        ("utf16-le-no-bom.txt", "Café naïve notes on asthma\nUse an inhaler.".encode("utf-16-le")),
        ("utf16-be-no-bom.md", "# Asthma\n\nCafé naïve notes.".encode("utf-16-be")),
        ("utf32-bom.txt", "Café naïve notes on asthma\nUse an inhaler.".encode("utf-32")),
        ("utf8-bom-crlf.txt", "\ufeffCafé naïve notes on asthma\r\nUse an inhaler.".encode()),
    ],
)
def test_text_in_other_encodings_is_read_correctly(tmp_path: Path, name: str, raw: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(raw)
    result = load_source(path)
    assert not result.failures and len(result.documents) == 1
    text = result.documents[0].text
    assert "Asthma" in text or "asthma" in text
    assert ("Café naïve" in text) or ("“reliever” inhaler – as needed" in text)
    assert "\x00" not in text and "\ufeff" not in text and "\r" not in text


def test_random_truncations_never_crash_a_loader(tmp_path: Path) -> None:
    rng = random.Random(11)
    pdf = text_pdf(PDF_TEXT, pages=2)
    jsonl = _jsonl(*[_good_row(f"g{n}") for n in range(20)])
    outcomes = {"failure": 0, "documents": 0}
    for n in range(TRUNCATIONS):
        for suffix, raw in ((".pdf", pdf), (".jsonl", jsonl)):
            path = tmp_path / f"cut-{n}{suffix}"
            path.write_bytes(raw[: rng.randrange(1, len(raw))])
            result = load_source(path)  # never raises
            assert result.documents or result.failures
            assert all(f.path == str(path) and f.reason for f in result.failures)
            for doc in result.documents:
                assert doc.text.strip() and "\x00" not in doc.text
            outcomes["failure" if result.failures else "documents"] += 1
    print(f"truncations: {2 * TRUNCATIONS} files: {outcomes}")


@pytest.fixture()
def indexed(tmp_path: Path) -> tuple[Path, Path]:
    sources = write_corpus(tmp_path / "good", 3)
    index = tmp_path / "index"
    build_index(sources, index, index_settings(tmp_path / "cache"), embedder=embedder())
    return index, tmp_path / "cache"


def test_adding_the_malformed_set_loses_nothing(
    indexed: tuple[Path, Path], bad_files: dict[str, tuple[Path, Bad]]
) -> None:
    index, _ = indexed
    before = load_bundle(index)
    report = add_sources(index, [path for path, _ in bad_files.values()], embedder=embedder())
    assert report.committed and report.exit_code == 1
    failed = {f.path for f in report.failures}
    assert {str(path.resolve()) for path, _ in bad_files.values()} <= failed  # nothing silently skipped
    for path, bad in bad_files.values():
        reasons = [f.reason for f in report.failures if Path(f.path) == path.resolve()]
        assert any(bad.reason in r for r in reasons), (bad.name, reasons)
    after = load_bundle(index)
    old_ids = {d.doc_id for d in before.documents}
    assert old_ids <= {d.doc_id for d in after.documents}
    assert {c.chunk_id for c in before.active_chunks} <= {c.chunk_id for c in after.active_chunks}
    assert {d.doc_id for d in after.documents} - old_ids == {"gout-1", "gout-2", "after-huge"}
    assert verify_bundle(index).ok
    hit = Searcher.load(index, embedder()).search("first-line treatment of cystitis", k=1)[0]
    assert hit.chunk.doc_id == "cystitis"


@pytest.mark.parametrize(
    "bad", ["truncated.pdf", "encrypted.pdf", "zero-pages.pdf", "image-only.pdf", "empty.pdf", "random-bytes.md"]
)
def test_a_source_replaced_by_a_malformed_file_keeps_its_indexed_version(
    tmp_path: Path, bad_files: dict[str, tuple[Path, Bad]], bad: str
) -> None:
    """The same path, good at the first build and malformed at the next: the indexed version stays."""
    source = tmp_path / ("guide.pdf" if bad.endswith(".pdf") else "guide.md")
    source.write_bytes(
        text_pdf(PDF_TEXT) if bad.endswith(".pdf") else b"# Cystitis\n\nNitrofurantoin treats cystitis in women.\n"
    )
    index = tmp_path / "index"
    settings = index_settings(tmp_path / "cache")
    build_index([source], index, settings, embedder=embedder())
    before = load_bundle(index)
    source.write_bytes(bad_files[bad][0].read_bytes())
    report = build_index([source], index, settings, embedder=embedder())
    assert report.exit_code == 1 and report.failures
    assert all("kept the previously indexed version" in f.reason for f in report.failures)
    after = load_bundle(index)
    assert [c.chunk.text for c in after.chunks] == [c.chunk.text for c in before.chunks]
    assert verify_bundle(index).ok
