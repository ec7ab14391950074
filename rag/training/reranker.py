"""Training the reranker: MedQuAD questions against their judged passage and the hybrid retriever's near misses.

Which questions: the judged dev queries of a BEIR folder in file order, skipping the first `offset` (1,000: the
ones every retrieval figure reports) and holding out the last `validation` ones for the training card.
A group per question (rag.training.listwise): its judged passage (the best-ranked chunk of a judged document, or of
a document the chunk absorbed as a duplicate) first, then `negatives` unjudged chunks from the hybrid retriever's
top 30 (the top three and the rest drawn at random; never one under the judged passage's own heading), each with
its fused rank; and a sentence group, a heading + sentence unit of the judged passage against units of the first
negatives (no ranks), so the same model can pick answer sentences.
Two augmentations, both for generalisation beyond MedQuAD's templates: a share of the questions is rewritten in
consumer phrasing ("how is X treated?" for "What are the treatments for X ?"), and a share of passages is shown
without their heading path, so the model reads the text rather than the question type in the heading.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.core.errors import ConfigError
from rag.core.files import file_sha256
from rag.core.types import Chunk, Evidence
from rag.datasets.beir import Qrels, load_queries, load_query_types
from rag.retrieval.search import Searcher
from rag.text.units import evidence_units
from rag.training.listwise import RankGroup

MINING_DEPTH = 30

# MedQuAD's question templates, and how people ask the same thing. The focus (disease, drug) is kept verbatim.
_TEMPLATES = (
    re.compile(r"^what are the treatments for (?P<f>.+?)\s*\?$", re.I),
    re.compile(r"^what is \(are\) (?P<f>.+?)\s*\?$", re.I),
    re.compile(r"^what are the symptoms of (?P<f>.+?)\s*\?$", re.I),
    re.compile(r"^is (?P<f>.+?) inherited\s*\?$", re.I),
    re.compile(r"^how many people are affected by (?P<f>.+?)\s*\?$", re.I),
    re.compile(r"^what are the genetic changes related to (?P<f>.+?)\s*\?$", re.I),
    re.compile(r"^what causes (?P<f>.+?)\s*\?$", re.I),
    re.compile(r"^how to diagnose (?P<f>.+?)\s*\?$", re.I),
    re.compile(r"^what research \(or clinical trials\) is being done for (?P<f>.+?)\s*\?$", re.I),
    re.compile(r"^what is the outlook for (?P<f>.+?)\s*\?$", re.I),
    re.compile(r"^who is at risk for (?P<f>.+?)\?*\s*\?$", re.I),
    re.compile(r"^how to prevent (?P<f>.+?)\s*\?$", re.I),
    re.compile(r"^what are the stages of (?P<f>.+?)\s*\?$", re.I),
    re.compile(r"^what are the complications of (?P<f>.+?)\s*\?$", re.I),
    re.compile(r"^what to do for (?P<f>.+?)\s*\?$", re.I),
)
CONSUMER_PHRASINGS: Mapping[str, tuple[str, ...]] = {
    "treatment": ("how is {f} treated?", "what can be done for {f}", "my son has {f}, what medicine or therapy helps?",
                  "is there a cure for {f}?", "best way to treat {f}", "{f} treatment options"),
    "information": ("what is {f}?", "can you explain {f}", "i was just diagnosed with {f}, what does it mean?",
                    "{f} explained"),
    "symptoms": ("what are the signs of {f}?", "how do i know if i have {f}", "{f} symptoms",
                 "what does {f} feel like"),
    "inheritance": ("can my kids get {f} from me?", "does {f} run in families?", "is {f} genetic"),
    "frequency": ("how common is {f}?", "how many people have {f}"),
    "genetic changes": ("what gene causes {f}?", "which mutation is behind {f}"),
    "causes": ("why do people get {f}?", "what is the cause of {f}", "how did i get {f}"),
    "exams and tests": ("how do doctors test for {f}?", "what test shows {f}", "how is {f} diagnosed"),
    "research": ("are there clinical trials for {f}?", "any new research on {f}"),
    "outlook": ("what is the prognosis of {f}?", "will i recover from {f}", "life expectancy with {f}"),
    "susceptibility": ("am i at risk of {f}?", "who gets {f}"),
    "prevention": ("how can i avoid getting {f}?", "can {f} be prevented"),
}  # fmt: skip


@dataclass(frozen=True)
class RerankQuery:
    query_id: str
    text: str
    qtype: str


def read_typed_queries(path: Path) -> dict[str, RerankQuery]:
    """BEIR queries.jsonl with the question type in metadata.qtype (MedQuAD), in file order."""
    types = load_query_types(path)
    return {qid: RerankQuery(qid, text, types.get(qid, "")) for qid, text in load_queries(path).items()}


def split_queries(
    queries: Mapping[str, RerankQuery], qrels: Qrels, *, offset: int, limit: int, validation: int
) -> tuple[list[RerankQuery], list[RerankQuery]]:
    """(training, validation): judged queries in file order; the first `offset` are never used."""
    judged = [q for qid, q in queries.items() if any(g > 0 for g in qrels.get(qid, {}).values())]
    if len(judged) <= offset + validation:
        raise ConfigError(
            f"only {len(judged)} judged queries: nothing left after the first {offset} (reported) and the last "
            f"{validation} (validation); lower --offset or --validation"
        )
    held = judged[len(judged) - validation :] if validation else []
    pool = judged[offset : len(judged) - validation]
    return pool[:limit], held


def consumer_phrasing(query: RerankQuery, rng: random.Random) -> str:
    """The question as a person might type it, or the question unchanged when its template is not known."""
    phrasings = CONSUMER_PHRASINGS.get(query.qtype)
    if not phrasings:
        return query.text
    for template in _TEMPLATES:
        match = template.match(query.text.strip())
        if match:
            focus = match.group("f").strip()
            focus = focus.lower() if rng.random() < 0.5 else focus
            return rng.choice(phrasings).format(f=focus)
    return query.text


def first_chunk_of(searcher: Searcher) -> dict[str, Chunk]:
    """Document -> a searchable chunk holding its text: its own first one, or the one its duplicate collapsed into."""
    active = {c.chunk_id: c for c in searcher.chunks}
    out: dict[str, Chunk] = {}
    for stored in searcher.bundle.chunks:
        doc = stored.chunk.doc_id
        if doc in out:
            continue
        chunk = active.get(stored.duplicate_of or stored.chunk.chunk_id)
        if chunk is not None:
            out[doc] = chunk
    return out


def same_heading(chunk: Chunk, other: Chunk) -> bool:
    return bool(chunk.breadcrumb) and chunk.breadcrumb.casefold() == other.breadcrumb.casefold()


def is_relevant(evidence: Evidence, judged: set[str] | frozenset[str]) -> bool:
    return evidence.chunk.doc_id in judged or bool(judged.intersection(evidence.also_in))


def chunk_units(chunk: Chunk) -> list[str]:
    """The chunk's quotable units as the reranker reads them: "heading: sentence" (the sentence alone without one)."""
    units = evidence_units(chunk.text, chunk.section_path[-1] if chunk.section_path else "")
    return [f"{heading}: {sentence}" if heading else sentence for heading, sentence in units]


def pick_negatives(misses: list[tuple[int, Chunk]], negatives: int, rng: random.Random) -> list[tuple[int, Chunk]]:
    """Up to `negatives` of the (fused rank, chunk) misses: the top three and the rest drawn at random, by rank."""
    chosen = misses[:3] + rng.sample(misses[3:], min(max(negatives - 3, 0), len(misses[3:])))
    return sorted(chosen[:negatives])


def mine_groups(
    searcher: Searcher,
    queries: Sequence[RerankQuery],
    qrels: Qrels,
    *,
    negatives: int = 7,
    seed: int = 13,
    paraphrase_share: float = 0.4,
    heading_dropout: float = 0.3,
    sentences: bool = True,
    progress: bool = True,
) -> tuple[list[RankGroup], dict[str, Any]]:
    """One passage group per question (judged passage first, with fused ranks), and a sentence group (no ranks)."""
    from tqdm import tqdm

    rng = random.Random(seed)
    fallback = first_chunk_of(searcher)
    groups: list[RankGroup] = []
    stats: Counter[str] = Counter()

    def shown(chunk: Chunk) -> str:
        return chunk.text if rng.random() < heading_dropout else chunk.indexed_text

    def sentence_of(chunk: Chunk) -> str | None:
        units = chunk_units(chunk)
        return rng.choice(units) if units else None

    for query in tqdm(queries, desc="mining", unit="query", disable=not progress, dynamic_ncols=True):
        judged = {doc for doc, grade in qrels.get(query.query_id, {}).items() if grade > 0}
        text = consumer_phrasing(query, rng) if rng.random() < paraphrase_share else query.text
        stats["paraphrased"] += text != query.text
        found = searcher.search(text, k=MINING_DEPTH, mode="hybrid", rerank=False)
        rank, positive = next(((i, e.chunk) for i, e in enumerate(found) if is_relevant(e, judged)), (None, None))
        if positive is None:
            positive = next((fallback[d] for d in sorted(judged) if d in fallback), None)
            rank = MINING_DEPTH
            stats["positive_not_retrieved"] += 1
        if positive is None:
            stats["skipped_no_passage"] += 1
            continue
        # An unjudged passage under the judged one's own heading (the same disease and question type, from another
        # source) most likely answers the question too: a false negative, so it is left out.
        misses = [(i, e.chunk) for i, e in enumerate(found)
                  if not is_relevant(e, judged) and not same_heading(e.chunk, positive)]  # fmt: skip
        if not misses:
            stats["skipped_no_negative"] += 1
            continue
        chosen = pick_negatives(misses, negatives, rng)
        passages = (shown(positive), *(shown(chunk) for _, chunk in chosen))
        groups.append(RankGroup(text, passages, (rank, *(i for i, _ in chosen))))
        stats["queries"] += 1
        stats["negatives"] += len(chosen)
        stats["positive_first"] += rank == 0
        if sentences:
            good = sentence_of(positive)
            bad = [s for s in (sentence_of(c) for _, c in chosen[:3]) if s]
            if good and bad:
                groups.append(RankGroup(text, (good, *bad), (None,) * (1 + len(bad))))
                stats["sentence_groups"] += 1
    return groups, {**stats, "groups": len(groups)}


def data_files(beir_dir: Path, corpus: Path, queries: Path, qrels: Path) -> dict[str, str]:
    return {str(p.relative_to(beir_dir) if p.is_relative_to(beir_dir) else p): file_sha256(p) for p in
            (corpus, queries, qrels)}  # fmt: skip
