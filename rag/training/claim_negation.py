"""Contradictions made from supported claims: the claim's polarity flipped, the evidence kept, the label "refutes".

A supported claim whose verb, direction or qualifier is reversed ("X reduces mortality" -> "X increases
mortality", "X is effective" -> "X is not effective") is contradicted by the same evidence. Training on such
pairs teaches the cross-encoder polarity, the one thing word overlap cannot show: before it, the checker
confused supports with refutes on nearly half of SciFact dev's contradicted pairs. Only the first rule that
applies is used, so one claim yields at most one flipped copy; a claim no rule fits yields none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from rag.datasets.claims import ClaimPair

# Direction words and their opposites; both directions are listed so either polarity can be flipped.
_ANTONYMS = {
    "increase": "decrease", "increases": "decreases", "increased": "decreased", "increasing": "decreasing",
    "decrease": "increase", "decreases": "increases", "decreased": "increased", "decreasing": "increasing",
    "reduce": "increase", "reduces": "increases", "reduced": "increased", "reducing": "increasing",
    "higher": "lower", "lower": "higher", "more": "less", "less": "more", "greater": "smaller",
    "improve": "worsen", "improves": "worsens", "improved": "worsened", "worsens": "improves",
    "effective": "ineffective", "ineffective": "effective", "safe": "unsafe", "unsafe": "safe",
    "beneficial": "harmful", "harmful": "beneficial", "positive": "negative", "negative": "positive",
    "associated": "not associated", "better": "worse", "worse": "better", "protects": "does not protect",
    "prevents": "does not prevent", "causes": "does not cause", "cures": "does not cure", "helps": "does not help",
    "kills": "does not kill", "treats": "does not treat", "works": "does not work", "raises": "lowers",
    "lowers": "raises", "promotes": "inhibits", "inhibits": "promotes", "enhances": "impairs", "impairs": "enhances",
}  # fmt: skip
_ANTONYM = re.compile(r"\b(" + "|".join(sorted(_ANTONYMS, key=len, reverse=True)) + r")\b", re.IGNORECASE)
# A negation removed flips a negative claim; an auxiliary negated flips a positive one.
_NEGATION = re.compile(r"\b(not|never)\s+|(?<=\bca)n't\b|n't\b|\bcannot\b", re.IGNORECASE)
_AUXILIARY = re.compile(r"\b(is|are|was|were|can|will|may|should|does|do|did|could|would|has been|have been)\b",
                        re.IGNORECASE)  # fmt: skip


def negate_claim(claim: str) -> str | None:
    """The claim with its polarity flipped by the first rule that applies, or None when none does."""
    text = claim.strip()
    negation = _NEGATION.search(text)
    if negation:
        found = negation.group(0).lower()
        replacement = "can" if found == "cannot" else ""
        flipped = text[: negation.start()] + replacement + text[negation.end() :]
        return " ".join(flipped.split())
    antonym = _ANTONYM.search(text)
    if antonym:
        word = antonym.group(1)
        opposite = _ANTONYMS[word.lower()]
        opposite = opposite.capitalize() if word[0].isupper() else opposite
        return text[: antonym.start()] + opposite + text[antonym.end() :]
    auxiliary = _AUXILIARY.search(text)
    if auxiliary:
        word = auxiliary.group(1)
        negated = "cannot" if word.lower() == "can" else f"{word} not"
        return text[: auxiliary.start()] + negated + text[auxiliary.end() :]
    return None


def negated_pairs(pairs: Sequence[ClaimPair]) -> list[ClaimPair]:
    """A "refutes" copy, with its claim flipped, of every supported pair a rule fits (same group and source)."""
    flipped = []
    for pair in pairs:
        if pair.label != "supports":
            continue
        claim = negate_claim(pair.claim)
        if claim and claim != pair.claim:
            flipped.append(replace(pair, claim=claim, label="refutes"))
    return flipped
