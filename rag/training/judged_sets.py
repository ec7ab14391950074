"""Reranker training groups from judged question sets beyond MedQuAD: guideline questions, PubMedQA, any BEIR set.

A set is a JSONL of questions (`text`, `doc_id`, and optionally `evidence`, the passage text that answers it: the
NGC format, or what `clinrag train questions` writes) or a BEIR folder (queries.jsonl + qrels/dev.tsv), searched
in its own index. Per question, from the hybrid retriever's top 30:
- the positive is the best-ranked passage of the judged document that holds the evidence (or, without evidence,
  the best-ranked passage of a judged document). A question whose positive is not retrieved is skipped: a written
  question that its own passage does not answer well enough to be found is more likely noise than a hard case
  (the consistency filter of InPars and GPL);
- negatives are the other passages, including other sections of the same guideline when the evidence names the
  passage (that is the NGC failure: the right guideline, the wrong section), never one holding the evidence, one
  under the positive's own heading, or a passage of an excluded document;
- a sentence group: the positive's unit that holds most of the evidence against its other units and units of
  the first negatives, so the sentence choice learns which line of a guideline section answers.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.core.errors import ConfigError
from rag.core.files import read_jsonl_objects
from rag.core.types import Chunk, Evidence
from rag.datasets.beir import load_qrels, load_queries
from rag.datasets.guideline_questions import contains_evidence
from rag.retrieval.search import Searcher
from rag.text.tokenize import content_word_share
from rag.training.listwise import RankGroup
from rag.training.reranker import MINING_DEPTH, chunk_units, is_relevant, pick_negatives, same_heading


@dataclass(frozen=True)
class JudgedQuestion:
    query_id: str
    text: str
    doc_ids: frozenset[str]
    evidence: str = ""


def read_judged_questions(path: Path) -> list[JudgedQuestion]:
    """The questions of a JSONL file (text, doc_id, optional evidence and _id) or of a BEIR folder's dev qrels."""
    if path.is_dir():
        return _beir_questions(path)
    out: list[JudgedQuestion] = []
    for number, row in enumerate(read_jsonl_objects(path, "question set (JSONL, or a BEIR folder)"), start=1):
        if not str(row.get("text", "")).strip() or not str(row.get("doc_id", "")):
            raise ConfigError(f"{path}: question {number} needs non-empty 'text' and 'doc_id'")
        qid = str(row.get("_id") or f"{path.stem}-{number}")
        out.append(JudgedQuestion(qid, str(row["text"]), frozenset({str(row["doc_id"])}), str(row.get("evidence", ""))))
    if not out:
        raise ConfigError(f"{path}: no questions")
    return out


def _beir_questions(folder: Path) -> list[JudgedQuestion]:
    queries_path, qrels_path = folder / "queries.jsonl", folder / "qrels" / "dev.tsv"
    if not queries_path.exists() or not qrels_path.exists():
        raise ConfigError(f"{folder}: not a BEIR folder (queries.jsonl and qrels/dev.tsv); give one or a JSONL file")
    queries, qrels = load_queries(queries_path), load_qrels(qrels_path)
    return [
        JudgedQuestion(qid, queries[qid], frozenset(d for d, g in judged.items() if g > 0))
        for qid, judged in qrels.items()
        if qid in queries and any(g > 0 for g in judged.values())
    ]


def _is_positive(question: JudgedQuestion, evidence: Evidence) -> bool:
    return is_relevant(evidence, question.doc_ids) and (
        not question.evidence or contains_evidence(evidence.chunk.text, question.evidence)
    )


def _is_excluded_negative(question: JudgedQuestion, evidence: Evidence, exclude: set[str]) -> bool:
    if evidence.chunk.doc_id in exclude:
        return True
    if question.evidence:
        return contains_evidence(evidence.chunk.text, question.evidence)
    return is_relevant(evidence, question.doc_ids)


def sentence_group(question: JudgedQuestion, positive: Chunk, negatives: Sequence[Chunk]) -> RankGroup | None:
    """The positive's best unit for the evidence against its other units and units of the first negatives."""
    units = chunk_units(positive)
    if not units:
        return None
    if question.evidence:
        shares = [content_word_share(u, question.evidence) for u in units]
        best = max(range(len(units)), key=shares.__getitem__)
        if shares[best] < 0.5:
            return None
        bad = [u for u, share in zip(units, shares, strict=True) if share < 0.3][:2]
    else:
        best, bad = 0, []
    for chunk in negatives[:3]:
        bad.extend(chunk_units(chunk)[:1])
    bad = bad[:4]
    return RankGroup(question.text, (units[best], *bad), (None,) * (1 + len(bad))) if bad else None


def mine_judged_groups(
    searcher: Searcher,
    questions: Sequence[JudgedQuestion],
    *,
    negatives: int = 7,
    seed: int = 13,
    heading_dropout: float = 0.3,
    sentences: bool = True,
    exclude: set[str] | None = None,
    progress: bool = True,
) -> tuple[list[RankGroup], dict[str, Any]]:
    """A passage group per question whose positive is retrieved (with fused ranks), and its sentence group."""
    from tqdm import tqdm

    rng = random.Random(seed)
    banned = exclude or set()
    groups: list[RankGroup] = []
    stats: Counter[str] = Counter()

    def shown(chunk: Chunk) -> str:
        return chunk.text if rng.random() < heading_dropout else chunk.indexed_text

    for question in tqdm(questions, desc="mining", unit="query", disable=not progress, dynamic_ncols=True):
        if question.doc_ids & banned:
            stats["skipped_excluded"] += 1
            continue
        found = searcher.search(question.text, k=MINING_DEPTH, mode="hybrid", rerank=False)
        rank = next((i for i, e in enumerate(found) if _is_positive(question, e)), None)
        if rank is None:
            stats["skipped_positive_not_retrieved"] += 1
            continue
        positive = found[rank].chunk
        misses = [(i, e.chunk) for i, e in enumerate(found)
                  if i != rank and not _is_excluded_negative(question, e, banned)
                  and not same_heading(e.chunk, positive)]  # fmt: skip
        if not misses:
            stats["skipped_no_negative"] += 1
            continue
        chosen = pick_negatives(misses, negatives, rng)
        groups.append(RankGroup(question.text, (shown(positive), *(shown(c) for _, c in chosen)),
                                (rank, *(i for i, _ in chosen))))  # fmt: skip
        stats["queries"] += 1
        stats["positive_first"] += rank == 0
        stats["same_document_negatives"] += sum(c.doc_id == positive.doc_id for _, c in chosen)
        if sentences and (group := sentence_group(question, positive, [c for _, c in chosen])):
            groups.append(group)
            stats["sentence_groups"] += 1
    return groups, {**stats, "groups": len(groups)}
