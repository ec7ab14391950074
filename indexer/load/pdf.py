"""PDF loader (pypdf): one document per file with page spans, outline-based sections and metadata."""

from __future__ import annotations

import io
import itertools
import logging
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError

from indexer.load.common import Overrides, drop_title, fail, slugify
from rag.core.types import DocType, DocumentMeta, LoadFailure, LoadResult, PageSpan, SectionSpan, SourceDocument

PAGE_SEPARATOR = "\n\n"
DEFAULT_TYPE: DocType = "guideline"

_ENCRYPTED = "encrypted PDF: decrypt it (qpdf --decrypt in.pdf out.pdf) and index the copy"
_NEEDS_CRYPTO = (
    "encrypted PDF (AES) and the 'cryptography' package is not installed: pip install cryptography, "
    "or decrypt it (qpdf --decrypt in.pdf out.pdf) and index the copy"
)
_NO_PAGES = "PDF has no pages: the file is empty or damaged; re-export or re-download it"
_NO_TEXT = "no extractable text: scanned image PDF? run OCR (e.g. ocrmypdf) first"
_NOT_PDF = (
    "not a PDF (no %PDF- header in the first 1 kB): give the file the suffix of its real format or re-download it"
)

_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad]")
_HYPHEN_BREAK = re.compile(r"(?<=[a-z])-[ \t]*\n[ \t]*(?=[a-z])")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u3000]+")
_EDGE_SPACES = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n{3,}")
_PDF_DATE_YEAR = re.compile(r"^(?:D:)?((?:19|20)\d\d)")
_JUNK_TITLE = re.compile(r"^(untitled|document\d*|title|microsoft word.*|.*\.(docx?|pdf|indd|rtf|tex))$", re.I)
_PLACEHOLDERS = re.compile(r"[\x00-\x1f\x7f-\x9f\ufeff\ufffc\ufffd]")
# Below this many letters a PDF is a scan with at most a stray text label: nothing worth indexing.
_MIN_LETTERS = 20
_LETTERS = re.compile(r"[^\W\d_]")


def normalise_pdf_text(text: str) -> str:
    """Light, deterministic clean-up of extracted text: joins words hyphenated across line ends
    ("treat-\\nment" -> "treatment"), collapses runs of spaces and drops control characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_LIGATURES)
    text = _CONTROL.sub("", text)
    text = _HYPHEN_BREAK.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _EDGE_SPACES.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


@contextmanager
def quiet_pypdf() -> Iterator[None]:
    """Silence pypdf's warnings about damaged files for one call; the loader reports problems itself."""
    logger = logging.getLogger("pypdf")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(previous)


def load_pdf(path: Path, raw: bytes, overrides: Overrides) -> LoadResult:
    if b"%PDF-" not in raw[:1024]:
        return LoadResult(failures=(fail(path, _NOT_PDF),))
    with quiet_pypdf():
        try:
            return _load(path, raw, overrides)
        except DependencyError:
            return LoadResult(failures=(fail(path, _NEEDS_CRYPTO),))
        except Exception as exc:  # pypdf raises many types for damaged files; none of them may stop a build
            return LoadResult(failures=(fail(path, _unparsable(exc)),))


def _unparsable(exc: Exception) -> str:
    return f"cannot parse PDF ({type(exc).__name__}: {exc}): the file may be truncated or damaged; re-download it"


def _load(path: Path, raw: bytes, overrides: Overrides) -> LoadResult:
    reader = PdfReader(io.BytesIO(raw))
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        return LoadResult(failures=(fail(path, _ENCRYPTED),))
    if len(reader.pages) == 0:
        return LoadResult(failures=(fail(path, _NO_PAGES),))
    page_texts, failures = _extract_pages(path, reader)
    text, pages = join_pages(page_texts)
    if len(list(itertools.islice(_LETTERS.finditer(text), _MIN_LETTERS))) < _MIN_LETTERS:
        return LoadResult(failures=(fail(path, _NO_TEXT), *failures))
    info = _info(reader)
    title = _meta_title(info.get("/Title")) or cover_title(reader, page_texts) or path.stem
    meta = DocumentMeta(
        title=title,
        doc_type=overrides.doc_type or DEFAULT_TYPE,
        source=overrides.source or "",
        year=_pdf_year(info.get("/CreationDate")),
        url=overrides.url,
        licence=overrides.licence,
        extra={"author": a} if (a := _clean_info(info.get("/Author"))) else {},
    )
    sections = outline_sections(_outline_entries(reader), text, pages, title)
    document = SourceDocument(
        doc_id=slugify(path.stem), text=text, meta=meta, source_path=str(path), pages=pages, sections=sections
    )
    return LoadResult(documents=(document,), failures=tuple(failures))


def _extract_pages(path: Path, reader: PdfReader) -> tuple[list[str], list[LoadFailure]]:
    texts: list[str] = []
    failures: list[LoadFailure] = []
    for number, page in enumerate(reader.pages, start=1):
        try:
            texts.append(normalise_pdf_text(page.extract_text()))
        except Exception as exc:  # one broken content stream should cost one page, not the document
            texts.append("")
            reason = f"cannot extract text ({type(exc).__name__}: {exc}): page left empty; re-export or OCR the PDF"
            failures.append(fail(path, reason, record=f"page {number}"))
    return texts, failures


def join_pages(page_texts: Sequence[str]) -> tuple[str, tuple[PageSpan, ...]]:
    """Pages with text joined by a blank line. An empty page gets an empty span where the next text starts
    (or at the end), so that `page_at` maps every character to a page that printed it."""
    text = PAGE_SEPARATOR.join(t for t in page_texts if t)
    starts: list[int] = []
    cursor = 0
    for page_text in page_texts:
        starts.append(cursor)
        if page_text:
            cursor += len(page_text) + len(PAGE_SEPARATOR)
    spans: list[PageSpan] = []
    next_start = len(text)
    for index in range(len(page_texts) - 1, -1, -1):  # backwards: an empty page takes the next text's start
        if page_texts[index]:
            next_start = starts[index]
        spans.append(PageSpan(number=index + 1, start=next_start, end=next_start + len(page_texts[index])))
    return text, tuple(reversed(spans))


def _info(reader: PdfReader) -> dict[str, Any]:
    try:
        return dict(reader.metadata or {})
    except Exception:  # a damaged /Info dictionary only costs the metadata
        return {}


def _clean_info(value: object) -> str:
    """A metadata or bookmark string on one line, without the placeholder characters some tools leave."""
    if value is None:
        return ""
    return " ".join(_PLACEHOLDERS.sub(" ", str(value)).split())


def _meta_title(value: object) -> str:
    title = _clean_info(value)
    if len(_LETTERS.findall(title)) < 4 or _JUNK_TITLE.match(title):
        return ""
    return title[:300]


def cover_title(reader: PdfReader, page_texts: Sequence[str]) -> str:
    """The title printed on the first page with text: its largest type where font sizes can be read,
    else its first line that reads like a title (a few words, not a page number or a code)."""
    first = next((i for i, text in enumerate(page_texts) if len(_LETTERS.findall(text)) >= 8), None)
    if first is None:
        return ""
    try:
        largest = _largest_type(reader.pages[first])
    except Exception:  # font sizes are a refinement; the line heuristic below still works
        largest = ""
    if len(_LETTERS.findall(largest)) >= 4:
        return largest[:300]
    for line in page_texts[first].split("\n")[:20]:
        if len(line.split()) >= 2 and len(_LETTERS.findall(line)) >= 8:
            return line.strip()[:300]
    return ""


def _largest_type(page: Any) -> str:
    """The first stretch of text set in (nearly) the largest font size on the page."""
    runs: list[tuple[float, str]] = []

    def visit(text: str, cm: Sequence[float], tm: Sequence[float], font: object, size: float) -> None:
        if text.strip():
            scale = math.hypot(tm[2], tm[3]) * math.hypot(cm[2], cm[3])
            runs.append((float(size) * (scale or 1.0), text))

    page.extract_text(visitor_text=visit)
    if not runs:
        return ""
    biggest = max(size for size, _ in runs)
    start = next(i for i, (size, _) in enumerate(runs) if size >= 0.9 * biggest)
    stretch = itertools.takewhile(lambda run: run[0] >= 0.9 * biggest, runs[start:])
    return " ".join(" ".join(text for _, text in stretch).split())


def _pdf_year(value: object) -> int | None:
    match = _PDF_DATE_YEAR.match(_clean_info(value))
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class OutlineEntry:
    path: tuple[str, ...]  # nested bookmark titles, outermost first
    page_index: int  # 0-based


def _outline_entries(reader: PdfReader) -> list[OutlineEntry]:
    try:
        return list(_walk_outline(reader, reader.outline, ()))
    except Exception:  # a broken outline only costs the sections
        return []


def _walk_outline(reader: PdfReader, items: Sequence[Any], parents: tuple[str, ...]) -> Iterator[OutlineEntry]:
    last: tuple[str, ...] | None = None
    for item in items:
        if isinstance(item, list):
            yield from _walk_outline(reader, item, last if last is not None else parents)
            continue
        title = _clean_info(getattr(item, "title", ""))
        # Word leaves hidden bookmarks such as "_GoBack" that are not headings.
        if not title or title.startswith("_"):
            last = None
            continue
        last = (*parents, title)
        page_index = reader.get_destination_page_number(item)
        if page_index is not None and page_index >= 0:
            yield OutlineEntry(path=last, page_index=page_index)


def outline_sections(
    entries: Sequence[OutlineEntry], text: str, pages: Sequence[PageSpan], title: str
) -> tuple[SectionSpan, ...]:
    """Sections from bookmarks, each running to the start of the next; bookmarks that end up empty are dropped.

    The first bookmark on a page starts at the page start: extraction order often puts a page's heading
    after its body, so searching for it could move the boundary most of a page. Further bookmarks on the
    same page can only be told apart by finding their titles in the text.
    """
    ordered = sorted((e for e in entries if e.page_index < len(pages)), key=lambda e: e.page_index)
    starts: list[tuple[int, tuple[str, ...]]] = []
    floor = 0
    previous_page = -1
    for entry in ordered:
        page = pages[entry.page_index]
        if entry.page_index != previous_page:
            floor = max(floor, page.start)
        else:
            found = _find_heading(text, entry.path[-1], floor + 1, page.end)
            floor = floor if found is None else found
        previous_page = entry.page_index
        starts.append((floor, drop_title(entry.path, title)))
    spans: list[SectionSpan] = []
    for i, (start, path) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        if path and end > start:
            spans.append(SectionSpan(path=path, start=start, end=end))
    return tuple(spans)


def _find_heading(text: str, heading: str, start: int, end: int) -> int | None:
    words = heading.split()
    if not words or start >= end:
        return None
    pattern = re.compile(r"\s+".join(re.escape(w) for w in words), re.IGNORECASE)
    match = pattern.search(text, start, end)
    return match.start() if match else None
