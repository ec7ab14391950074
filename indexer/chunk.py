"""Section-aware chunker that packs whole sentences into passages sized by the embedder's own tokenizer.

A chunk is an exact slice of its document (citations point at offsets), never crosses a heading boundary, and
is verified with `count_tokens` so the embedder never truncates it silently. Tokenizer calls dominate the
cost, so each call takes the whole sections (then all the chunks) of many documents at once.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from rag.core.config import ChunkerSettings
from rag.core.types import Chunk, SourceDocument
from rag.models.embed import Embedder, Span
from rag.text.units import GRADE_ALONE

Unit = tuple[int, int, int]  # (char_start, char_end, estimated tokens): a sentence or a piece of a long one

_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*\s+")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*•‣◦▪●○·–]|\(?\d{1,3}[.)]|\(?[a-zA-Z][.)])[ \t]+", re.MULTILINE)
# A Markdown table row: rows have no sentence ends, so a table read as one "sentence" was cut mid-row.
_TABLE_ROW = re.compile(r"^[ \t]*\|", re.MULTILINE)
_MARKER = re.compile(r"[ \t]*(?:\d{1,3}|[a-zA-Z])\.\s+")
_MARKER_WINDOW = 64
_OPENERS = frozenset("([{\"'“‘")
_BULLETS = frozenset("-*•‣◦▪●○·–")
_ABBREVIATIONS = frozenset(
    "e.g i.e eg ie dr drs mr mrs ms prof st vs v al fig figs approx cf ca incl resp ref refs vol pp jr sr"
    " dept est tab eq".split()
)
_BATCH_CHARS = 2_000_000  # text per tokenizer round: big enough to amortise calls, small enough for memory


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Spans of the sentences of text[start:end], in absolute offsets, stripped of surrounding whitespace.

    Together the spans hold every non-whitespace character of the range, so nothing is lost between them.
    """
    stop = len(text) if end is None else end
    piece = text[start:stop]
    cuts = {0, len(piece)}
    cuts.update(m.end() for m in _SENTENCE_END.finditer(piece) if _ends_sentence(piece, m))
    cuts.update(m.end() for m in _BLANK_LINE.finditer(piece))
    cuts.update(m.start() for m in _LIST_ITEM.finditer(piece))
    cuts.update(m.start() for m in _TABLE_ROW.finditer(piece))
    ordered = sorted(cuts)
    spans: list[Span] = []
    for a, b in itertools.pairwise(ordered):
        s, e = _strip(piece, a, b)
        if s < e and spans and GRADE_ALONE.match(piece[s:e]):
            spans[-1] = (spans[-1][0], start + e)  # the grade joins the recommendation it qualifies
        elif s < e:
            spans.append((start + s, start + e))
    return spans


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    after = match.end()
    if after >= len(text):
        return True
    nxt = text[after]
    starts_new = nxt.isupper() or nxt.isdigit() or nxt in _OPENERS
    if not starts_new and not (nxt in _BULLETS and text[after + 1 : after + 2].isspace()):
        return False
    if text[match.start()] != "." or match.group().startswith(".."):
        return True
    # A list number sits at most a little indentation after its line start: looking further back (to the start
    # of a huge single-line file) made every sentence end cost O(line), O(n^2) in all.
    window = max(0, match.start() - _MARKER_WINDOW)
    line_start = text.rfind("\n", window, match.start()) + 1
    if (line_start or not window) and _MARKER.fullmatch(text, line_start, match.end()):
        return False  # "1. Refer urgently": the period of a list number at a line start ends nothing
    words = text[max(0, match.start() - 32) : match.start()].split()
    return not (words and _is_abbreviation(words[-1]))


def _is_abbreviation(word: str) -> bool:
    bare = word.lstrip("([{\"'“‘").casefold()
    if bare in _ABBREVIATIONS:
        return True
    # Dotted initialisms (U.S., a.m., e.g) end with a period that rarely ends the sentence.
    parts = bare.split(".")
    return len(parts) > 1 and all(p.isalpha() and len(p) <= 2 for p in parts)


def _strip(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


@dataclass
class _Segment:
    """One section's text in one document, with the state the verify-and-shrink loop needs."""

    doc: SourceDocument
    path: tuple[str, ...]
    crumb: str
    sentences: list[Span]
    tokens: list[list[Span]] = field(default_factory=list)  # per sentence, relative to its start
    crumb_tokens: int = 0
    avail: int = 0  # tokens left for text once breadcrumb and special tokens are paid for
    chunks: list[Chunk] = field(default_factory=list)


def chunk_document(doc: SourceDocument, embedder: Embedder, settings: ChunkerSettings) -> list[Chunk]:
    """Chunks of one document; see `chunk_documents`."""
    return chunk_documents([doc], embedder, settings)


def chunk_documents(docs: Iterable[SourceDocument], embedder: Embedder, settings: ChunkerSettings) -> list[Chunk]:
    """Chunks of all documents, in document order, each within `min(settings.max_tokens, embedder.max_tokens)`."""
    budget = min(settings.max_tokens, embedder.max_tokens)
    specials = embedder.count_tokens([""])[0]
    out: list[Chunk] = []
    for batch in _batches(docs):
        segments = [seg for doc in batch for seg in _doc_segments(doc, settings.breadcrumb)]
        _measure(segments, embedder, budget, specials)
        _chunk_verified(segments, embedder, budget, specials, settings.overlap_tokens)
        out.extend(chunk for seg in segments for chunk in seg.chunks)
    return out


def _batches(docs: Iterable[SourceDocument]) -> Iterator[list[SourceDocument]]:
    batch: list[SourceDocument] = []
    size = 0
    for doc in docs:
        batch.append(doc)
        size += len(doc.text)
        if size >= _BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _doc_segments(doc: SourceDocument, breadcrumb: bool) -> list[_Segment]:
    """The document cut at section boundaries; text outside every section belongs to the root (empty path)."""
    n = len(doc.text)
    ranges: list[tuple[tuple[str, ...], int, int]] = []
    pos = 0
    for sec in sorted(doc.sections, key=lambda s: (s.start, s.end)):
        s, e = max(sec.start, pos), min(sec.end, n)
        if e <= s:
            continue
        if s > pos:
            ranges.append(((), pos, s))
        ranges.append((tuple(sec.path), s, e))
        pos = e
    if pos < n:
        ranges.append(((), pos, n))
    segments = []
    for path, s, e in ranges:
        sentences = split_sentences(doc.text, s, e)
        if sentences:
            segments.append(_Segment(doc, path, _breadcrumb(doc, path, breadcrumb), sentences))
    return segments


def _breadcrumb(doc: SourceDocument, path: tuple[str, ...], enabled: bool) -> str:
    if not enabled:
        return ""
    parts = (" ".join(part.split()) for part in (doc.meta.title, *path))
    return " > ".join(part for part in parts if part)


def _measure(segments: list[_Segment], embedder: Embedder, budget: int, specials: int) -> None:
    """Tokenize every segment and breadcrumb of the batch in one call each, then set each segment's room.

    Whole segments, not sentences, go to the tokenizer: far fewer, longer texts are much cheaper per token.
    """
    crumbs = _fit_breadcrumbs({seg.crumb for seg in segments}, embedder, budget)
    texts = [seg.doc.text[seg.sentences[0][0] : seg.sentences[-1][1]] for seg in segments]
    for seg, spans in zip(segments, embedder.token_spans(texts), strict=True):
        seg.tokens = _per_sentence(seg.sentences, spans)
        seg.crumb, seg.crumb_tokens = crumbs[seg.crumb]
        seg.avail = budget - specials - seg.crumb_tokens


def _per_sentence(sentences: list[Span], spans: list[Span]) -> list[list[Span]]:
    """Segment tokens shared out to the sentence each starts in, re-based to that sentence's start."""
    base = sentences[0][0]
    starts = [a for a, _ in spans]
    cuts = [bisect.bisect_left(starts, s - base) for s, _ in sentences[1:]]
    out = []
    for (s, _), lo, hi in zip(sentences, [0, *cuts], [*cuts, len(spans)], strict=True):
        shift = s - base
        out.append([(a - shift, b - shift) for a, b in spans[lo:hi]])
    return out


def _fit_breadcrumbs(crumbs: set[str], embedder: Embedder, budget: int) -> dict[str, tuple[str, int]]:
    """Each breadcrumb with its token count, truncated ("Title start…") where it would eat over half the budget."""
    half = budget // 2
    fitted: dict[str, tuple[str, int]] = {"": ("", 0)}
    todo = sorted(c for c in crumbs if c)
    for crumb, spans in zip(todo, embedder.token_spans(todo), strict=True):
        fitted[crumb] = (crumb, len(spans)) if len(spans) <= half else _truncate_crumb(crumb, spans, embedder, half)
    return fitted


def _truncate_crumb(crumb: str, spans: list[Span], embedder: Embedder, half: int) -> tuple[str, int]:
    keep = min(len(spans), half - 1)
    while keep >= 1:
        short = crumb[: spans[keep - 1][1]].rstrip() + "…"
        # Re-measured because "…" and the cut may tokenize differently from the prefix of the full crumb.
        n = len(embedder.token_spans([short])[0])
        if n <= half:
            return short, n
        keep -= n - half
    return "", 0


def _chunk_verified(segments: list[_Segment], embedder: Embedder, budget: int, specials: int, overlap: int) -> None:
    """Pack, count every chunk in one call, and re-pack only the segments with a chunk over budget.

    Estimates add per-sentence counts, which a tokenizer need not honour (a word cut in two, merges across a
    joint); shrinking the room by the excess and re-packing always converges because room only decreases.
    """
    pending = segments
    while pending:
        plans = [_plan(seg, overlap) for seg in pending]
        texts = [
            _indexed(seg.crumb, seg.doc.text[a:b]) for seg, plan in zip(pending, plans, strict=True) for a, b in plan
        ]
        counts = iter(embedder.count_tokens(texts))
        retry: list[_Segment] = []
        for seg, plan in zip(pending, plans, strict=True):
            sized = [(a, b, next(counts)) for a, b in plan]
            excess = max((n - budget for _, _, n in sized), default=0)
            if excess <= 0:
                seg.chunks = [_make_chunk(seg, a, b, n) for a, b, n in sized]
                continue
            seg.avail -= excess
            if seg.avail < 1:
                if not seg.crumb:
                    raise RuntimeError(f"{seg.doc.doc_id}: tokenizer cannot fit any text in {budget} tokens")
                seg.crumb, seg.crumb_tokens, seg.avail = "", 0, budget - specials
            retry.append(seg)
        pending = retry


def _plan(seg: _Segment, overlap: int) -> list[Span]:
    """Character spans of the segment's chunks at its current room.

    Chunks without letters or digits are dropped, and so are chunks that hold only Markdown heading lines:
    a section whose text is just its heading says nothing its subsections' breadcrumbs do not already say.
    """
    text = seg.doc.text
    units: list[Unit] = []
    for (s, e), toks in zip(seg.sentences, seg.tokens, strict=True):
        units.extend([(s, e, len(toks))] if len(toks) <= seg.avail else _split_long(text, s, e, toks, seg.avail))
    spans = [(units[k][0], units[j - 1][1]) for k, j in _pack([u[2] for u in units], seg.avail, overlap)]
    return [(a, b) for a, b in spans if any(ch.isalnum() for ch in text[a:b]) and not _only_headings(text, a, b)]


_HEADING_LINE = re.compile(r"#{1,6}(?:\s.*)?")


def _only_headings(text: str, start: int, end: int) -> bool:
    at_line_start = start == 0 or text[:start].rstrip(" \t").endswith("\n") or not text[:start].strip(" \t")
    lines = [line.strip(" \t") for line in text[start:end].split("\n")]
    return at_line_start and all(_HEADING_LINE.fullmatch(line) for line in lines if line)


def _split_long(text: str, start: int, end: int, toks: list[Span], avail: int) -> list[Unit]:
    """A sentence longer than the room, cut at token starts (a word start where one is near), losing nothing."""
    pieces: list[Unit] = []
    first, piece_start = 0, start
    while len(toks) - first > avail:
        cut = _cut_index(text, start, toks, first, avail)
        cut_char = max(piece_start, start + toks[cut][0])
        pieces.append((piece_start, cut_char, cut - first))
        first, piece_start = cut, cut_char
    pieces.append((piece_start, end, len(toks) - first))
    stripped = [(*_strip(text, a, b), n) for a, b, n in pieces]
    return [(a, b, n) for a, b, n in stripped if a < b]


def _cut_index(text: str, start: int, toks: list[Span], first: int, avail: int) -> int:
    # Only look back half the room for a word start, so pieces stay large when a "word" is a long token run.
    for c in range(first + avail, first + max(1, avail // 2) - 1, -1):
        gap = text[start + toks[c - 1][1] : start + toks[c][0]]
        if gap and not gap.strip():
            return c
    return first + avail


def _pack(ntoks: Sequence[int], avail: int, overlap: int) -> list[tuple[int, int]]:
    """Greedy unit ranges [k, j) within `avail`, each starting with whole trailing units of the previous one."""
    ranges: list[tuple[int, int]] = []
    i, prev_start = 0, -1
    while i < len(ntoks):
        k, total = i, 0
        while overlap and k - 1 > prev_start and total + ntoks[k - 1] <= overlap:
            k -= 1
            total += ntoks[k]
        while k < i and total + ntoks[i] > avail:
            total -= ntoks[k]
            k += 1
        j = i
        while j < len(ntoks) and total + ntoks[j] <= avail:
            total += ntoks[j]
            j += 1
        j = max(j, i + 1)  # progress even if a unit is over the room (the verify loop then shrinks it)
        ranges.append((k, j))
        prev_start, i = k, j
    return ranges


def _indexed(crumb: str, text: str) -> str:
    # Must match Chunk.indexed_text exactly: the verified count is of this string.
    return f"{crumb}\n{text}" if crumb else text


def _make_chunk(seg: _Segment, start: int, end: int, n_tokens: int) -> Chunk:
    doc = seg.doc
    text = doc.text[start:end]
    key = f"{doc.doc_id}\x00{start}\x00{end}\x00{text}"
    return Chunk(
        chunk_id=hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:20],
        doc_id=doc.doc_id,
        text=text,
        breadcrumb=seg.crumb,
        section_path=seg.path,
        char_start=start,
        char_end=end,
        page_start=doc.page_at(start),
        page_end=doc.page_at(end - 1),
        n_tokens=n_tokens,
        content_hash=hashlib.sha256(_indexed(seg.crumb, text).encode("utf-8", "surrogatepass")).hexdigest()[:32],
    )
