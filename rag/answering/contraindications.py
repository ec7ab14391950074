"""Options the evidence itself contraindicates for the question's or the patient's condition: never first, flagged.

A guideline passage often carries both the general preference and its exception ("DOACs are preferred over
warfarin ..."; "DOACs are contraindicated in patients with mechanical heart valves; these patients need warfarin").
Quoted in the passage's order, the preference leads an answer about a patient with a mechanical valve. Here the
exception is read from the shown evidence's sentences ("X is/are contraindicated in Y", "do not use X in Y", "X
should not be used in Y", "avoid X in Y"); where Y is a condition the question or the patient record states, a
suggestion recommending X moves after the others and carries a `contraindication` flag naming Y and the passage.
The sentence stating the exception is kept where it is: it is the warning. Pattern reading, not a drug database:
a prompt for a clinician's check, like the patient module's drug flags.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rag.answering.answer import Flag, Suggestion
from rag.answering.patient import Patient
from rag.answering.prompts import EvidenceItem
from rag.text.tokenize import ENGLISH_STOPWORDS
from rag.text.units import evidence_units

_OPTION = r"(?P<opt>[A-Za-z0-9][\w\s/+-]{1,60}?)"
_CONDITION = r"(?P<cond>[^.;:]{3,120})"
_WHO = r"(?:in|for|during|with|to)\s+"
_GIVE = r"(?:use|give|prescribe|start|offer)"
_GIVEN = r"(?:used|given|prescribed|offered)"
_PATTERNS = (
    re.compile(rf"{_OPTION}\s+(?:is|are)\s+(?:absolutely\s+|strictly\s+)?contraindicated\s+{_WHO}{_CONDITION}", re.I),
    re.compile(rf"\b(?:do not|don't|never)\s+{_GIVE}\s+{_OPTION}\s+{_WHO}{_CONDITION}", re.I),
    re.compile(rf"{_OPTION}\s+(?:should|must)\s+not\s+be\s+{_GIVEN}\s+{_WHO}{_CONDITION}", re.I),
    re.compile(rf"\bavoid\s+{_OPTION}\s+(?:in|during)\s+{_CONDITION}", re.I),
)  # fmt: skip
_LEAD = re.compile(r"^(?:however|but|and|also|the|all|both)\s+", re.I)
_WHO_PREFIX = re.compile(
    r"^(?:(?:adult\s+|elderly\s+|older\s+)?(?:patients?|people|persons?|those|women|men|children|adults)"
    r"\s+(?:with|who\s+(?:have|are)|who\s+has|receiving|taking)\s+|the\s+presence\s+of\s+|a\s+|an\s+)",
    re.I,
)
_SEVERITY = frozenset("mild moderate severe significant known history moderate-to-severe any".split())
_WORD = re.compile(r"[a-z0-9]+")
_WARNING = re.compile(r"\b(contraindicat\w*|do not|don't|should not|must not|never|avoid\w*|not recommended)\b", re.I)


@dataclass(frozen=True)
class Contraindication:
    option: str  # what not to give ("DOACs")
    condition: str  # in whom ("mechanical heart valves")
    key: str  # the evidence passage saying so ("E1")


def _stems(text: str) -> set[str]:
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in _WORD.findall(text.lower())}


def _content(text: str) -> set[str]:
    return {w for w in _stems(text) if w not in ENGLISH_STOPWORDS and w not in _SEVERITY}


def contraindications(items: Sequence[EvidenceItem]) -> list[Contraindication]:
    """Every "X is contraindicated in Y"-shaped statement of the evidence, one per condition it names."""
    found: list[Contraindication] = []
    for item in items:
        for _, sentence in evidence_units(item.text):
            for pattern in _PATTERNS:
                for match in pattern.finditer(sentence):
                    option = _LEAD.sub("", match.group("opt").strip())
                    if not _content(option) or len(option.split()) > 6:
                        continue
                    for condition in re.split(r",|\bor\b|\band\b", match.group("cond")):
                        condition = _WHO_PREFIX.sub("", condition.strip()).strip()
                        if _content(condition):
                            found.append(Contraindication(option, condition, item.key))
    return found


def context_conditions(question: str, patient: Patient | None) -> set[str]:
    """The words of what the question and the patient record say about the patient."""
    parts = [question]
    if patient is not None:
        parts += list(patient.conditions)
        parts += ["pregnant pregnancy"] if patient.pregnant else []
        parts += ["breastfeeding lactation"] if patient.lactating else []
    return _stems(" ".join(parts))


def contraindicated_last(
    suggestions: tuple[Suggestion, ...], items: Sequence[EvidenceItem], question: str, patient: Patient | None
) -> tuple[Suggestion, ...]:
    """`suggestions` with those recommending an option contraindicated for a stated condition last, flagged."""
    context = context_conditions(question, patient)
    applying = [c for c in contraindications(items) if _content(c.condition) <= context]
    if not applying:
        return suggestions
    first: list[Suggestion] = []
    last: list[Suggestion] = []
    for suggestion in suggestions:
        clashes = [c for c in applying if _content(c.option) <= _stems(suggestion.text)]
        if not clashes or _WARNING.search(suggestion.text):
            first.append(suggestion)
            continue
        flags = tuple(
            Flag("contraindication", f"{c.option} contraindicated in {c.condition} per [{c.key}]")
            for c in dict.fromkeys(clashes)
        )
        last.append(replace(suggestion, flags=suggestion.flags + flags))
    return (*first, *last)
