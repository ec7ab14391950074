"""One configuration's predictions turned into its row of numbers, with bootstrap intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag.datasets.qa import QAItem
from rag.evaluation.qa.grid import Bootstrap, RunConfig
from rag.evaluation.qa.records import Key, Prediction
from rag.evaluation.qa.scoring import (
    UNPARSED,
    Interval,
    accuracy_interval,
    confusion_matrix,
    macro_f1_interval,
    mean_interval,
    percentiles,
    retrieval_scores,
)


@dataclass(frozen=True)
class ConfigSummary:
    config: RunConfig
    total: int  # items in the evaluation set
    scored: int  # items with a prediction
    failed: int  # items whose latest attempt failed (not in any metric)
    accuracy: Interval | None = None
    macro_f1: Interval | None = None
    unparsed: int = 0  # generated outputs no answer could be read from (scored as wrong)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    by_subset: dict[str, Interval] = field(default_factory=dict)  # accuracy per subset (MIRAGE)
    retrieval: dict[str, float] = field(default_factory=dict)  # recall@k, mrr@k, ndcg@k against gold documents
    citation_recall: float | None = None
    citation_precision: float | None = None
    comprehensiveness: Interval | None = None
    hallucination: Interval | None = None
    latency_p50_s: float = math.nan
    latency_p95_s: float = math.nan
    prompt_tokens: float = math.nan  # mean per item
    new_tokens: float = math.nan  # mean per item

    @property
    def primary(self) -> Interval | None:
        """The number the best row is chosen by: accuracy for closed-form sets, comprehensiveness for K-QA."""
        return self.accuracy if self.accuracy is not None else self.comprehensiveness

    def to_json(self) -> dict[str, Any]:
        def interval(value: Interval | None) -> dict[str, float] | None:
            return value.to_json() if value is not None else None

        return {
            "config": self.config.to_json(),
            "items": {"total": self.total, "scored": self.scored, "failed": self.failed, "unparsed": self.unparsed},
            "accuracy": interval(self.accuracy),
            "macro_f1": interval(self.macro_f1),
            "accuracy_by_subset": {k: v.to_json() for k, v in self.by_subset.items()},
            "confusion": self.confusion,
            "retrieval": {k: round(v, 4) for k, v in self.retrieval.items()},
            "citation": {"recall": _round(self.citation_recall), "precision": _round(self.citation_precision)},
            "kqa": {
                "comprehensiveness": interval(self.comprehensiveness),
                "hallucination": interval(self.hallucination),
            },
            "latency_s": {"p50": _round(self.latency_p50_s), "p95": _round(self.latency_p95_s)},
            "tokens_per_item": {"prompt": _round(self.prompt_tokens, 1), "new": _round(self.new_tokens, 1)},
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def summarise(
    config: RunConfig, items: Sequence[QAItem], predictions: Mapping[Key, Prediction], bootstrap: Bootstrap
) -> ConfigSummary:
    latest = [predictions.get((config.config_id, i.item_id)) for i in items]
    done = [(i, p) for i, p in zip(items, latest, strict=True) if p is not None and p.status == "ok"]
    failed = sum(1 for p in latest if p is not None and p.status == "failed")
    ok = [p for _, p in done]
    p50, p95 = percentiles([p.latency_s for p in ok])
    parts: dict[str, Any] = {
        "latency_p50_s": p50,
        "latency_p95_s": p95,
        "prompt_tokens": float(np.mean([p.prompt_tokens for p in ok])) if ok else math.nan,
        "new_tokens": float(np.mean([p.new_tokens for p in ok])) if ok else math.nan,
    }
    spec = {"resamples": bootstrap.resamples, "confidence": bootstrap.confidence, "seed": config.seed}
    if items and items[0].closed_form:
        parts.update(_closed_form(done, spec))
    parts.update(_retrieval(done, config))
    parts.update(_citations(ok))
    parts.update(_kqa(ok, spec))
    return ConfigSummary(config=config, total=len(items), scored=len(done), failed=failed, **parts)


def _closed_form(done: Sequence[tuple[QAItem, Prediction]], spec: Mapping[str, Any]) -> dict[str, Any]:
    labels = list(dict.fromkeys(label for item, _ in done for label in item.labels))
    predicted = [p.parsed if p.parsed is not None else UNPARSED for _, p in done]
    gold = [item.answer for item, _ in done]
    subsets: dict[str, list[int]] = {}
    for n, (item, _) in enumerate(done):
        subsets.setdefault(item.subset, []).append(n)
    by_subset = (
        {
            name: accuracy_interval([predicted[n] for n in rows], [gold[n] for n in rows], **spec)
            for name, rows in sorted(subsets.items())
        }
        if len(subsets) > 1
        else {}
    )
    return {
        "accuracy": accuracy_interval(predicted, gold, **spec),
        "macro_f1": macro_f1_interval(predicted, gold, labels, **spec),
        "unparsed": sum(1 for _, p in done if p.parsed is None),
        "confusion": confusion_matrix([p.parsed for _, p in done], gold, labels),
        "by_subset": by_subset,
    }


def _retrieval(done: Sequence[tuple[QAItem, Prediction]], config: RunConfig) -> dict[str, Any]:
    judged = [(i, p) for i, p in done if i.gold_docs and config.setting == "retrieved" and config.retrieval != "none"]
    if not judged:
        return {}
    k = config.k
    rows = [retrieval_scores(p.retrieved_docs, i.gold_docs, k) for i, p in judged]
    return {"retrieval": {f"{name}@{k}": float(np.mean([r[name] for r in rows])) for name in rows[0]}}


def _citations(ok: Sequence[Prediction]) -> dict[str, Any]:
    counted = [p.citations for p in ok if p.citations and p.citations.get("statements", 0) > 0]
    if not counted:
        return {}
    recall = [c["supported"] / c["statements"] for c in counted]
    precision = [c["relevant"] / c["citations"] if c["citations"] else 0.0 for c in counted]
    return {"citation_recall": float(np.mean(recall)), "citation_precision": float(np.mean(precision))}


def _kqa(ok: Sequence[Prediction], spec: Mapping[str, Any]) -> dict[str, Any]:
    counted = [p.kqa for p in ok if p.kqa and p.kqa.get("must_have", 0) > 0]
    if not counted:
        return {}
    comprehensive = [c["supported"] / c["must_have"] for c in counted]
    hallucinated = [c["contradicted"] / c["statements"] if c["statements"] else 0.0 for c in counted]
    return {
        "comprehensiveness": mean_interval(comprehensive, **spec),
        "hallucination": mean_interval(hallucinated, **spec),
    }
