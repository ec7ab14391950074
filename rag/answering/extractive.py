"""An answer built from the evidence's own sentences: no language model, nothing invented.

Used when the configured generator is `extractive`, and as the fallback when a model's reply cannot be parsed
or the model fails. Each suggestion is one evidence sentence (or one list, when a list was flattened into the
text) with a preference for sentences that say what to do. A sentence, read with its heading, is rated by its
rank among the candidates by each signal there is: a trained scorer (the reranker), the embedder's similarity to
the question, the question's content words it holds. With a scorer, its passage's rating counts too; the best
passage is quoted first, in its own order, and others only when it is thin or rated nearly as high (another
document rated level with it gives its best sentence too). Without one, the best sentences of any passage.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from rag.answering.prompts import EvidenceItem
from rag.models.embed import Embedder
from rag.retrieval.protocols import PairScorer
from rag.retrieval.rerank import passage_text
from rag.text.tokenize import content_word_share
from rag.text.units import evidence_pieces

# Words of sentences that recommend an action; they break ties toward "what to do" over background.
_ACTION = re.compile(
    r"\b(treat\w*|therap\w*|recommend\w*|first[- ]line|second[- ]line|should|dose|dosage|mg|daily|"
    r"prescrib\w*|manage\w*|start\w*|initiat\w*|consider\w*|avoid\w*|indicated|regimen|medication\w*)\b",
    re.IGNORECASE,
)
_DOSE = re.compile(r"\b\d+(?:[.,]\d+)?\s*(?:mg|mcg|µg|g|ml|units?|IU|mmol)\b", re.IGNORECASE)
# A sentence about the document itself ("This summary follows the 2024 report of ...") answers no clinical
# question; rated down by more than a passage's place costs (0.2 each without a reranker, up to 0.4 among three),
# so the first passage's preamble never outranks the recommendation below it (the demo's COPD answer quoted it
# at 0.3).
ABOUT_DOCUMENT_PENALTY = 1.0
_ABOUT_DOCUMENT = re.compile(
    r"\b(this (?:summary|guideline|document|report)|summary of|guidelines? (?:for|on)|report\b|published|"
    r"update of|applies to|demo text|not clinical guidance|^source$|these resources|offer information about)",
    re.IGNORECASE,
)


class _Unit(NamedTuple):
    """A quotable sentence or list item: its passage's key and rank, its place in the passage, its heading."""

    key: str
    rank: int
    position: int
    heading: str
    sentence: str
    list_id: int  # which Markdown list of the passage it is an item of, -1 for none


class ExtractiveAnswerer:
    def __init__(
        self,
        embedder: Embedder | None = None,
        max_suggestions: int = 3,
        per_passage: int = 3,
        rank_penalty: float = 0.2,
        passage_floor: float = 0.5,
        second_passage: float = 0.8,
        lead_penalty: float = 0.005,
        equal_source: float = 0.95,
    ) -> None:
        self.embedder = embedder
        # Without a reranker's ratings (reranking off, or the reranker unsure): per place a sentence's passage is
        # below the best one. 0.2 chosen on NGC dev, 150 synthetic questions on other guidelines, the demo and
        # MedQuAD treatment questions against 0.02, 0.1 and 0.35 (all terms 0.636 / 0.648 / 0.670 / 0.625 on NGC,
        # evidence quoted 0.387 / 0.400 / 0.413 / 0.420 on the synthetic set; issue 34, benchmarks/RESULTS.md).
        self.rank_penalty = rank_penalty
        # With a reranker: only passages rated at least this share of the best one's probability are quoted
        # (0.5 chosen on treatment questions 140-239, a tuning slice after the reported 100; 0.8 was no better).
        self.passage_floor = passage_floor
        # With a reranker, an answer quotes the best passage first; another passage only while the answer has
        # fewer than two suggestions, or when the reranker rates it within this share of the best (it cannot
        # tell which of them answers). Chosen on treatment questions 300-499: citing every passage above the
        # floor found the judged document more often (hit 0.84) but cited more that were not (precision 0.61);
        # only the best passage unless it is thin: precision 0.75, hit 0.78; 0.9: 0.67 / 0.84. The packaged
        # reranker v6 rates its first passage more decisively, so on untouched questions 1,042-1,179 0.9 gave
        # 0.769 / 0.870 and 0.8 0.748 / 0.884 (0.7: 0.729 / 0.899): 0.8 clears both targets by the most.
        self.second_passage = second_passage
        # With a reranker: when another document's passage is rated within this share of the best one, the
        # reranker cannot tell which of them answers (MedQuAD asks one question of several sources, and each
        # judges only its own page), so each such document's best sentence comes before the best passage's
        # second. Chosen on untouched treatment questions 100-138 and 1,042-1,219 (217) against 0.8 and 0.9:
        # 0.95 gave cited precision 0.747 -> 0.730 and hit 0.871 -> 0.899 with three suggestions, where 0.9 gave
        # 0.704 / 0.899 (benchmarks/RESULTS.md, issue 15).
        self.equal_source = equal_source
        self.lead_penalty = lead_penalty  # per unit a sentence comes after its passage's first (with a reranker)
        self.max_suggestions = max_suggestions
        self.per_passage = per_passage

    @property
    def name(self) -> str:
        return "extractive"

    def answer(self, question: str, evidence: Sequence[EvidenceItem], scorer: PairScorer | None = None) -> str:
        """A reply in the prompt's format ("SUGGESTIONS:" + cited lines, or "INSUFFICIENT EVIDENCE").

        `scorer` (the engine's reranker) picks sentences with a trained model instead of the embedder.
        """
        ranked = _by_key(evidence)
        candidates = [
            _Unit(item.key, rank, position, *piece)
            for rank, item in enumerate(ranked)
            for position, piece in enumerate(evidence_pieces(item.text, _section(item)))
        ]
        if not candidates:
            return "INSUFFICIENT EVIDENCE"
        passage = _passage_scores(question, ranked, scorer) if scorer is not None else []
        if passage:
            # A passage the reranker rates far below the best one is about something else: its sentences may
            # say "treatment" as often as the right one's, but they answer another question.
            floor = self.passage_floor * max(passage)
            candidates = [c for c in candidates if passage[c.rank] >= floor]
        # A list item means little without its heading ("First-line treatment"), so both are scored together.
        units = [f"{c.heading}: {c.sentence}" if c.heading else c.sentence for c in candidates]
        relevance = self._relevance(question, units, scorer)
        if scorer is not None:
            # Guidelines list the preferred options first: a small prior for the passage's own order settles near
            # ties (the cystitis demo's first-line nitrofurantoin scored 0.002 below fosfomycin, listed third).
            scores = [
                rel + passage[c.rank] + _kind_bonus(c.heading, c.sentence) - self.lead_penalty * c.position
                for rel, c in zip(relevance, candidates, strict=True)
            ]
        else:
            scores = [
                rel + _kind_bonus(c.heading, c.sentence) - self.rank_penalty * c.rank
                for rel, c in zip(relevance, candidates, strict=True)
            ]
        docs = [item.evidence.chunk.doc_id if item.evidence is not None else item.key for item in ranked]
        chosen = lists_from_the_top(self._choose(candidates, scores, passage, docs), candidates)
        if not chosen:  # the passages worth quoting had no sentence to quote
            return "INSUFFICIENT EVIDENCE"
        if passage:  # read as the passages say it: best passage first, each in its own order
            # except that a line naming a dose comes before one that does not ("The choice depends on local
            # resistance ..." opened the demo's cystitis answer, above the nitrofurantoin regimen).
            first = {c.key: i for i, c in reversed(list(enumerate(chosen)))}
            chosen.sort(key=lambda c: (first[c.key], not _DOSE.search(c.sentence), c.position))
        lines = [f"{i}. {c.sentence} [{c.key}]" for i, c in enumerate(chosen, 1)]
        return "SUGGESTIONS:\n" + "\n".join(lines)

    def _choose(
        self, candidates: list[_Unit], scores: list[float], passage: list[float], docs: list[str]
    ) -> list[_Unit]:
        chosen: list[_Unit] = []
        used: dict[str, int] = {}
        order = [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")]
        if passage:
            order.sort(key=lambda i: -passage[candidates[i].rank])  # stable: best passage first, best units within
            order = self._other_sources_first(order, candidates, passage, docs)
        close = self.second_passage * max(passage, default=0.0)  # a passage rated this high is quoted as well
        for index in order:
            unit = candidates[index]
            if used.get(unit.key, 0) >= self.per_passage or any(unit.sentence == c.sentence for c in chosen):
                continue
            if passage and unit.key not in used and len(chosen) >= 2 and passage[unit.rank] < close:
                break  # passages come best first: every later one is rated lower still
            chosen.append(unit)
            used[unit.key] = used.get(unit.key, 0) + 1
            if len(chosen) == self.max_suggestions:
                break
        return chosen

    def _other_sources_first(
        self, order: list[int], candidates: list[_Unit], passage: list[float], docs: list[str]
    ) -> list[int]:
        """`order` with the best unit of each document rated within `equal_source` of the best passage first."""
        level = self.equal_source * max(passage)
        firsts: dict[str, int] = {}
        for index in order:  # best passage first: the first unit seen of a document is its best passage's best
            rank = candidates[index].rank
            if passage[rank] < level:
                break
            firsts.setdefault(docs[rank], index)
        if len(firsts) < 2:
            return order
        lead = set(firsts.values())
        return [*firsts.values(), *(i for i in order if i not in lead)]

    def _relevance(self, question: str, units: list[str], scorer: PairScorer | None) -> list[float]:
        """How well each unit answers the question: its rank among the units by each signal, summed.

        The signals are the scorer (the reranker, when there is one), the embedder's similarity and the share of
        the question's content words the unit holds. Ranks, not scores: a reranker trained on MedQuAD rates
        every sentence of a guideline near zero, and its order among them alone picked background over the
        recommendation; with the three, NGC dev answers held all answer terms for 0.534 of questions, not 0.489
        (issue 34, benchmarks/RESULTS.md). Without a scorer the two others are averaged (0..1), which keeps the
        rank penalty and kind bonus at the weights they were tuned with.
        """
        signals = [[content_word_share(unit, question) for unit in units]]
        if self.embedder is not None:
            vectors = self.embedder.embed([question, *units])
            signals.append([float(v) for v in vectors[1:] @ vectors[0]])
        if scorer is not None:
            signals.append(scorer.score([(question, unit) for unit in units]))
        total = np.sum([rank_shares(signal) for signal in signals], axis=0)
        return [float(v) for v in (total if scorer is not None else total / len(signals))]


def rank_shares(values: Sequence[float]) -> np.ndarray:
    """Each value's rank among `values` as a share, 0 (lowest) to 1 (highest); tied values share their mean rank."""
    array = np.asarray(values, dtype=float)
    if len(array) < 2:
        return np.ones(len(array))
    order = np.argsort(array, kind="stable")
    ranks = np.empty(len(array))
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and array[order[end + 1]] == array[order[start]]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2
        start = end + 1
    return ranks / (len(array) - 1)


def lists_from_the_top(chosen: list[_Unit], candidates: list[_Unit]) -> list[_Unit]:
    """Where two or more items of one Markdown list were chosen, that many of its first items instead.

    That several items scored well says the list answers the question; which of them to quote is the list's
    own order, since guidelines list options by preference and the scorer cannot see that order (it put the
    cystitis guideline's first-line nitrofurantoin, listed first, below the second, third and fourth options).
    A single item stays: it may be the one option the question names.
    """
    counts = Counter((c.key, c.list_id) for c in chosen if c.list_id >= 0)
    out: list[_Unit] = []
    quoted: set[tuple[str, int]] = set()
    for unit in chosen:
        group = (unit.key, unit.list_id)
        if counts.get(group, 0) < 2:
            out.append(unit)
        elif group not in quoted:
            quoted.add(group)
            items = sorted((c for c in candidates if (c.key, c.list_id) == group), key=lambda c: c.position)
            out.extend(items[: counts[group]])
    return [u for i, u in enumerate(out) if all(u.sentence != v.sentence for v in out[:i])]


def _passage_scores(question: str, ranked: Sequence[EvidenceItem], scorer: PairScorer) -> list[float]:
    """How well each passage answers the question: the reranker's score where it reranked it, else the scorer's."""
    hits = [item.evidence.retrievers.get("rerank") if item.evidence is not None else None for item in ranked]
    unscored = [item for item, hit in zip(ranked, hits, strict=True) if hit is None]
    texts = [passage_text(item.evidence) if item.evidence else item.text for item in unscored]
    fresh = iter(scorer.score([(question, text) for text in texts]) if texts else [])
    return [hit.score if hit is not None else next(fresh) for hit in hits]


# A sentence that defers the choice instead of making it: true and quotable, but no answer to "what should I give?".
_DEFERS = re.compile(
    r"\b(depends on|depend on|is based on|should be individuali[sz]ed|varies|vary with|choice of|"
    r"this (?:summary|guideline|document)|discuss(?:ed|ion)? with)\b",
    re.IGNORECASE,
)


def defers_the_choice(text: str) -> bool:
    """The text defers the choice ("The choice depends on local resistance ...") and names no dose."""
    return bool(_DEFERS.search(text)) and not _DOSE.search(text)


def _kind_bonus(heading: str, sentence: str) -> float:
    # Suggestions should say what to do: a dose or an action word counts for it; a sentence about the
    # document itself ("This summary follows the 2024 report") restates the question's words but answers nothing.
    bonus = 0.15 * bool(_ACTION.search(f"{heading} {sentence}")) + 0.15 * bool(_DOSE.search(sentence))
    return bonus - ABOUT_DOCUMENT_PENALTY * bool(_ABOUT_DOCUMENT.search(f"{heading} {sentence}"))


def _by_key(evidence: Sequence[EvidenceItem]) -> list[EvidenceItem]:
    # Keys follow the prompt's display order (strongest at both ends), so retrieval rank comes from the score.
    return sorted(evidence, key=lambda item: -(item.evidence.score if item.evidence is not None else 0.0))


def _section(item: EvidenceItem) -> str:
    path = item.evidence.chunk.section_path if item.evidence is not None else ()
    return path[-1] if path else ""
