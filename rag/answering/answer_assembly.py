"""Assembles the `Answer` record: the evidence as references with their best quotes, around the checked suggestions."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from rag.answering.answer import Answer, OtherSource, Reference, Suggestion
from rag.answering.prompts import EvidenceItem, RenderedPrompt
from rag.core.types import DocumentMeta
from rag.text.units import evidence_units

_WORD = re.compile(r"[a-z0-9]+")


def checked_answer(
    question: str,
    kept: tuple[Suggestion, ...],
    removed: tuple[Suggestion, ...],
    prompt: RenderedPrompt,
    dropped: tuple[str, ...],
    reply: str,
    fallback: str | None,
    timings: dict[str, float],
    abstained: str | None,
    *,
    metas: Mapping[str, DocumentMeta],
    generator: str,
) -> Answer:
    """The answer to `question`: the kept suggestions, and every prompt passage as a reference (cited or not)."""
    cited = {k for s in kept for k in s.citations}
    references = tuple(
        reference(item, item.key in cited, [s.text for s in kept if item.key in s.citations], metas)
        for item in sorted(prompt.evidence, key=lambda i: int(i.key[1:]))
    )
    return Answer(
        question=question,
        suggestions=kept,
        references=references,
        abstained=abstained is not None,
        abstention_reason=abstained,
        dropped_citations=dropped,
        removed_suggestions=removed,
        generator=generator,
        template=prompt.template,
        fallback=fallback,
        timings=timings,
        raw_output=reply,
    )


def abstention(
    question: str,
    reason: str,
    items: Sequence[EvidenceItem],
    timings: dict[str, float],
    *,
    metas: Mapping[str, DocumentMeta],
    generator: str,
    template: str,
) -> Answer:
    """An answer that abstains for `reason` before any reply was made, listing the passages it looked at."""
    return Answer(
        question=question,
        suggestions=(),
        references=tuple(reference(i, False, [], metas) for i in items),
        abstained=True,
        abstention_reason=reason,
        dropped_citations=(),
        removed_suggestions=(),
        generator=generator,
        template=template,
        fallback=None,
        timings=timings,
    )


def reference(item: EvidenceItem, cited: bool, citing: list[str], metas: Mapping[str, DocumentMeta]) -> Reference:
    """The reference for one evidence item, quoting its sentence closest to the suggestions `citing` it."""
    evidence = item.evidence
    assert evidence is not None  # rendered items always carry their evidence
    chunk, meta = evidence.chunk, evidence.meta
    also_in = tuple(
        OtherSource(doc_id, other.title, other.source, other.url)
        for doc_id in evidence.also_in
        if (other := metas.get(doc_id)) is not None
    )
    return Reference(
        key=item.key,
        chunk_id=chunk.chunk_id,
        doc_id=chunk.doc_id,
        title=meta.title,
        issuer=meta.source,
        year=meta.year,
        doc_type=meta.doc_type,
        url=meta.url,
        page_start=chunk.page_start,
        page_end=chunk.page_end,
        section=" > ".join(chunk.section_path),
        quote=best_quote(chunk.text, citing),
        retrieval_score=evidence.score,
        cited=cited,
        also_in=also_in,
    )


def best_quote(text: str, claims: list[str], limit: int = 300) -> str:
    """The sentence of `text` sharing most words with `claims` (the first without claims), cut to `limit`."""
    sentences = [sentence for _, sentence in evidence_units(text)] or [" ".join(text.split())]
    if claims:
        words = set(_WORD.findall(" ".join(claims).lower()))
        sentences.sort(key=lambda s: -len(words & set(_WORD.findall(s.lower()))))
    quote = sentences[0]
    return quote if len(quote) <= limit else quote[: limit - 1].rsplit(" ", 1)[0] + "…"
