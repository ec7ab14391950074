"""Metrics: accuracy and macro-F1 with bootstrap CIs, confusion matrices, ALCE-style citation precision and
recall, K-QA comprehensiveness and hallucination, retrieval metrics, latency and token counts.

Every judgement of support goes through the engine's support checker. Bootstrap intervals are percentile
intervals over items resampled with a seeded generator: the same seed gives the same interval, and every
configuration of a run is resampled with the same indices (a paired bootstrap).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rag.answering.citations import ParsedSuggestion
from rag.answering.closed_form import macro_f1
from rag.checking.support import LexicalSupportChecker, clean_claim, lexical_features
from rag.checking.verdict import SupportJudge
from rag.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k

UNPARSED = "(none)"  # the confusion-matrix column of outputs no answer could be read from
_CHOICE = re.compile(r"ANSWER\s*:?\s*\(?\s*([A-Z])\b", re.IGNORECASE)
# "(b)", or a capital letter alone or before ".", ")" or ":" ("A drug ..." is prose, not option A).
_LEADING_CHOICES = (re.compile(r"^\(([A-Za-z])\)"), re.compile(r"^([A-Z])(?:[.):]|$)"))
# A statement contradicts the answer when the answer's closest window covers it but with the opposite polarity.
CONTRADICTION_COVERAGE = 0.5


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"value": round(self.value, 4), "low": round(self.low, 4), "high": round(self.high, 4)}


@dataclass(frozen=True)
class CitationCounts:
    statements: int
    supported: int  # statements entailed by the concatenation of their cited passages (citation recall)
    citations: int
    relevant: int  # citations that are not redundant (citation precision)


@dataclass(frozen=True)
class KQACounts:
    must_have: int
    supported: int  # must-have statements the answer supports (comprehensiveness)
    statements: int  # must-have and nice-to-have
    contradicted: int  # statements the answer contradicts (hallucination)


# ---------------------------------------------------------------------------------------------------- parsing


def parse_choice(text: str, labels: Sequence[str]) -> str | None:
    """The option letter of a multiple-choice reply: "ANSWER: B", "(B)", "B. ..." or a bare letter."""
    allowed = {label.upper() for label in labels}
    for pattern in (_CHOICE, *_LEADING_CHOICES):
        match = pattern.search(text.strip())
        if match and match.group(1).upper() in allowed:
            return match.group(1).upper()
    return None


# ---------------------------------------------------------------------------------------------------- support


def supports(checker: SupportJudge, claim: str, passage: str) -> bool:
    if not claim.strip() or not passage.strip():
        return False
    return checker.judge([(claim, passage)])[0].label == "supports"


def citation_counts(
    statements: Sequence[ParsedSuggestion], passages: Mapping[str, str], checker: SupportJudge
) -> CitationCounts:
    """ALCE (Gao et al. 2023): a statement is recalled when its cited passages together support it; a citation
    is precise unless it alone does not support the statement while the other citations still do. A key
    naming no passage counts as a citation that supports nothing."""
    supported = citations = relevant = 0
    for statement in statements:
        keys = list(statement.citations)
        texts = [passages[k] for k in keys if k in passages]
        citations += len(keys)
        joint = bool(texts) and supports(checker, statement.text, " ".join(texts))
        supported += joint
        if not joint:
            continue
        if len(keys) == 1:
            relevant += 1
            continue
        for key in keys:
            if key not in passages:
                continue
            alone = supports(checker, statement.text, passages[key])
            rest = [passages[k] for k in keys if k != key and k in passages]
            redundant = not alone and bool(rest) and supports(checker, statement.text, " ".join(rest))
            relevant += not redundant
    return CitationCounts(len(statements), supported, citations, relevant)


def kqa_counts(answer: str, must_have: Sequence[str], nice_to_have: Sequence[str], checker: SupportJudge) -> KQACounts:
    """K-QA (Manes et al. 2024): must-have statements the answer entails; statements it contradicts.

    A checker that can say "refutes" (the trained cross-encoder: the NLI judgement the K-QA paper uses) decides
    both from one verdict per statement. The calibrated checker cannot see contradiction, so with it a statement
    counts as contradicted by a proxy (the answer's best-matching window covers at least half of the statement's
    content words with the opposite negation), and hallucination is a lower bound.
    """
    statements = [*must_have, *nice_to_have]
    if not answer.strip() or not statements:
        return KQACounts(len(must_have), 0, len(statements), 0)
    verdicts = checker.judge([(s, answer) for s in statements])
    supported = sum(v.label == "supports" for v in verdicts[: len(must_have)])
    if isinstance(checker, LexicalSupportChecker):
        contradicted = sum(
            v.label != "supports" and _contradicts(checker, s, answer)
            for s, v in zip(statements, verdicts, strict=True)
        )
    else:
        contradicted = sum(v.label == "refutes" for v in verdicts)
    return KQACounts(len(must_have), supported, len(statements), contradicted)


def _contradicts(checker: LexicalSupportChecker, statement: str, answer: str) -> bool:
    """The negation proxy for a statement the checker did not find supported."""
    _, window_coverage, _, negation_mismatch = lexical_features(clean_claim(statement), answer, checker.tokenizer)
    return window_coverage >= CONTRADICTION_COVERAGE and negation_mismatch > 0


# ---------------------------------------------------------------------------------------------------- retrieval


def retrieval_scores(ranked_docs: Sequence[str], gold_docs: Sequence[str], k: int) -> dict[str, float]:
    qrels = dict.fromkeys(gold_docs, 1)
    return {
        "recall": recall_at_k(ranked_docs, qrels, k),
        "mrr": mrr_at_k(ranked_docs, qrels, k),
        "ndcg": ndcg_at_k(ranked_docs, qrels, k),
    }


# ---------------------------------------------------------------------------------------------------- aggregates


def bootstrap(
    n: int,
    statistic: Callable[[npt.NDArray[np.int64]], float],
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> Interval:
    """The statistic on all n items and its percentile interval over `resamples` seeded resamples."""
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    value = statistic(np.arange(n, dtype=np.int64))
    draws = rng.integers(0, n, size=(resamples, n), dtype=np.int64)
    stats = np.array([statistic(row) for row in draws], dtype=np.float64)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return Interval(float(value), float(low), float(high))


def accuracy_interval(
    predicted: Sequence[str], gold: Sequence[str], *, resamples: int, confidence: float, seed: int
) -> Interval:
    hits = np.array([p == g for p, g in zip(predicted, gold, strict=True)], dtype=np.float64)
    return mean_interval(hits, resamples=resamples, confidence=confidence, seed=seed)


def macro_f1_interval(
    predicted: Sequence[str],
    gold: Sequence[str],
    labels: Sequence[str],
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> Interval:
    pred, truth = list(predicted), list(gold)

    def statistic(idx: npt.NDArray[np.int64]) -> float:
        return macro_f1([pred[i] for i in idx], [truth[i] for i in idx], labels)

    return bootstrap(len(truth), statistic, resamples=resamples, confidence=confidence, seed=seed)


def mean_interval(
    values: Sequence[float] | npt.NDArray[np.float64], *, resamples: int, confidence: float, seed: int
) -> Interval:
    array = np.asarray(values, dtype=np.float64)

    def statistic(idx: npt.NDArray[np.int64]) -> float:
        return float(array[idx].mean())

    return bootstrap(len(array), statistic, resamples=resamples, confidence=confidence, seed=seed)


def confusion_matrix(
    predicted: Sequence[str | None], gold: Sequence[str], labels: Sequence[str]
) -> dict[str, dict[str, int]]:
    """gold label -> predicted label -> count; outputs no answer was read from are in the UNPARSED column."""
    columns = [*labels, UNPARSED]
    matrix = {g: dict.fromkeys(columns, 0) for g in labels}
    for p, g in zip(predicted, gold, strict=True):
        matrix.setdefault(g, dict.fromkeys(columns, 0))
        column = p if p in matrix[g] else UNPARSED
        matrix[g][column] += 1
    return matrix


def percentiles(values: Sequence[float]) -> tuple[float, float]:
    """(p50, p95); nan for no values."""
    if not values:
        return float("nan"), float("nan")
    p50, p95 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95])
    return float(p50), float(p95)
