"""The check stage: each suggestion judged against the passages it cites, flagged, then kept or removed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rag.answering.answer import Flag, Suggestion
from rag.answering.citations import ParsedSuggestion
from rag.answering.patient import Patient, flag_drugs
from rag.answering.prompts import EvidenceItem
from rag.checking.grounding import not_from_evidence
from rag.checking.verdict import SupportJudge, Verdict

# A dose, strength or duration: the number must appear in the cited evidence, or the suggestion is flagged.
_DOSE = re.compile(
    r"(?<![\w.])(\d+(?:[.,]\d+)?(?:\s*/\s*\d+(?:[.,]\d+)?)?)\s*(mg|mcg|µg|ug|g|ml|mL|units?|IU|mmol|mEq|%|"
    r"mg/kg|days?|weeks?|hours?|times)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CheckedSuggestion:
    """A suggestion with its verdicts and flags, and the citation keys it named that are not in the evidence."""

    suggestion: Suggestion
    dropped: tuple[str, ...]


def check_suggestions(
    parsed: Sequence[ParsedSuggestion],
    by_key: dict[str, EvidenceItem],
    patient: Patient | None,
    checker: SupportJudge,
    support_threshold: float | None,
) -> list[CheckedSuggestion]:
    """Judge every (suggestion, cited passage) pair in one batch, then flag each suggestion."""
    valid = [tuple(k for k in p.citations if k in by_key) for p in parsed]
    pairs = [(p.text, by_key[k].text) for p, keys in zip(parsed, valid, strict=True) for k in keys]
    verdicts = iter(checker.judge(pairs) if pairs else [])
    checked = []
    for p, keys in zip(parsed, valid, strict=True):
        by_citation = {k: next(verdicts) for k in keys}
        checked.append(check_suggestion(p, keys, by_citation, by_key, patient, support_threshold))
    return checked


def check_suggestion(
    parsed: ParsedSuggestion,
    valid: tuple[str, ...],
    verdicts: dict[str, Verdict],
    by_key: dict[str, EvidenceItem],
    patient: Patient | None,
    support_threshold: float | None,
) -> CheckedSuggestion:
    """One suggestion's flags and support, from the verdicts on each passage it validly cites (`valid`)."""
    dropped = tuple(k for k in parsed.citations if k not in by_key)
    flags: list[Flag] = []
    support: float | None = None
    supported = False
    label: str | None = None
    if dropped:
        flags.append(Flag("invented_citation", f"cited {', '.join(dropped)}, which is not in the evidence"))
    if parsed.attributed:
        keys = ", ".join(parsed.citations)
        flags.append(Flag("citation_added", f"copied word for word from {keys}, which the model did not cite"))
    if parsed.completed:
        flags.append(Flag("quote_completed", "the model quoted part of this sentence or list; shown whole"))
    if not valid:
        flags.append(Flag("uncited", "cites no evidence that exists"))
    else:
        support = max(v.support for v in verdicts.values())
        contradicting = [k for k, v in verdicts.items() if v.label == "refutes"]
        label = "refutes" if contradicting else "supports" if any(
            v.label == "supports" for v in verdicts.values()) else "neutral"  # fmt: skip
        if support_threshold is None:
            supported = label == "supports"
        else:
            supported = support >= support_threshold and not contradicting
        cited_text = " ".join(by_key[k].text for k in valid)
        added = not_from_evidence(parsed.text, " ".join(by_key[k].shown for k in valid))
        if contradicting:
            p = max(verdicts[k].refutation for k in contradicting)
            flags.append(Flag("contradicted", f"{', '.join(contradicting)} contradicts this (p {p:.2f})"))
        elif not supported:
            flags.append(Flag("unsupported", f"the cited evidence does not support this (support {support:.2f})"))
        if added:
            supported = False
            words = ", ".join(added[:6])
            flags.append(Flag("not_in_evidence", f"most of its words are not in the cited evidence ({words})"))
        for dose in doses_missing(parsed.text, cited_text):
            flags.append(Flag("dose_not_in_evidence", f"'{dose}' is not written in the cited evidence"))
    if patient is not None:
        flags += [Flag(f.kind, f.message) for f in flag_drugs(parsed.text, patient)]
    suggestion = Suggestion(parsed.text, valid, support, supported, tuple(flags), label, verdicts)
    return CheckedSuggestion(suggestion, dropped)


def kept_and_removed(
    suggestions: Sequence[Suggestion], remove_unsupported: bool
) -> tuple[tuple[Suggestion, ...], tuple[Suggestion, ...]]:
    """A suggestion its own evidence contradicts is always removed; unsupported ones when `remove_unsupported`."""

    def keep(s: Suggestion) -> bool:
        return s.label != "refutes" and (s.supported or not remove_unsupported)

    kept = tuple(s for s in suggestions if keep(s))
    removed = tuple(s for s in suggestions if not keep(s))
    return kept, removed


def doses_missing(suggestion: str, evidence: str) -> list[str]:
    """The doses, strengths and durations in `suggestion` whose numbers are not all written in `evidence`."""
    missing = []
    evidence_numbers = set(re.findall(r"\d+(?:[.,]\d+)?", evidence))
    for match in _DOSE.finditer(suggestion):
        numbers = re.findall(r"\d+(?:[.,]\d+)?", match.group(1))
        if any(n not in evidence_numbers for n in numbers):
            missing.append(match.group(0))
    return missing
