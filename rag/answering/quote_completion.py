"""A fragment a model quotes from the evidence is shown whole: the sentence, or the flattened list, it came from.

Asked to copy sentences, a small model often copies part of one ("Laser surgery [E1]", "Immunoglobulin
intravenous (IV) therapy") or an item or two of a list that a scraped corpus flattened into running text ("These
resources address the diagnosis or management of X: - Gene Review: X - Genetic Testing Registry: X", most of
MedQuAD's genetic-condition treatment answers). Read alone, such a fragment has lost what qualified it ("may
reduce the frequency of attacks", "in severe cases") or what it is an item of ("Genetic Testing Registry: X" is
not a treatment). A suggestion that is a word-for-word fragment of exactly one quotable unit of the passages it
cites (the units the extractive answer quotes: a sentence, a Markdown list item, or a flattened list's lead-in
with the items that fit; `evidence_units`) is shown as that unit, once per unit, and the engine flags it
`quote_completed`. A fragment found in several units is left as the model wrote it: which one it meant is a guess.
A model copying a sentence drops its parenthesised glosses ("Topical corticosteroids" from "Topical (applied to
the skin) corticosteroids"), so a unit also matches with them left out.
An uncited fragment is left alone here: `attribute_quotes`, which the engine runs first, cites the ones long
enough to name their source.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from rag.answering.citations import ParsedReply, ParsedSuggestion, normalised_words
from rag.answering.prompts import EvidenceItem
from rag.text.units import evidence_units

# "Drug Therapy [E1]" is a fragment worth completing; one word could come from anywhere.
_MIN_FRAGMENT_WORDS = 2
_GLOSS = re.compile(r"\([^()]{0,200}\)")


def complete_quotes(parsed: ParsedReply, evidence: Sequence[EvidenceItem]) -> ParsedReply:
    """Suggestions that copy part of one evidence unit become that unit (`ParsedSuggestion.completed`).

    A suggestion is matched only against the passages it cites. Fragments of one unit become one suggestion, where
    the first of them was."""
    if parsed.abstained or not parsed.suggestions:
        return parsed
    units = [
        (item.key, sentence, f" {normalised_words(sentence)} ", f" {normalised_words(_GLOSS.sub(' ', sentence))} ")
        for item in evidence
        for _, sentence in evidence_units(item.text)
    ]
    out: list[ParsedSuggestion] = []
    shown: set[tuple[str, str]] = set()
    for suggestion in parsed.suggestions:
        words = f" {normalised_words(suggestion.text)} "
        holding = {
            (key, unit)
            for key, unit, unit_words, unglossed in units
            if key in suggestion.citations and (words in unit_words or words in unglossed) and words != unit_words
        }
        if len(words.split()) < _MIN_FRAGMENT_WORDS or len({unit for _, unit in holding}) != 1:
            out.append(suggestion)
            continue
        found = min(holding)
        if found not in shown:
            shown.add(found)
            out.append(replace(suggestion, text=found[1], completed=True))
    return replace(parsed, suggestions=tuple(out))
