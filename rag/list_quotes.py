"""A list item a model quotes alone is shown with its list's lead-in, as the passage has them.

Scraped corpora flatten lists into running text ("These resources address the diagnosis or management of X: -
Gene Review: X - Genetic Testing Registry: X"; most of MedQuAD's genetic-condition treatment answers). A model
asked to quote copies an item or two of such a list, which read alone no longer says what it is an item of
("Genetic Testing Registry: X" is not a treatment). The extractive answer quotes such a list as one unit, its
lead-in and the items that fit (`inline_lists`); a model's quoted item becomes that same unit, cited to the passage
it came from, once per unit. Only lists flattened into one line are completed: a Markdown list's items stand on
their own lines under a heading the prompt shows, and a model may rightly quote one option of several.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from rag.citations import ParsedReply, ParsedSuggestion, normalised_words
from rag.extractive import flattened_list_units
from rag.prompts import EvidenceItem

# "Drug Therapy" is an item; one word could be any passage's.
_MIN_ITEM_WORDS = 2


def complete_list_items(parsed: ParsedReply, evidence: Sequence[EvidenceItem]) -> ParsedReply:
    """Suggestions that copy part of a flattened list become the list's unit (`ParsedSuggestion.completed`).

    A suggestion that cites passages is matched only against them; an uncited one against every passage, and then
    cites the first that holds it. Several items of one list become one suggestion, where the first of them was."""
    if parsed.abstained or not parsed.suggestions:
        return parsed
    units = [
        (item.key, unit, f" {normalised_words(unit)} ") for item in evidence for unit in flattened_list_units(item.text)
    ]
    if not units:
        return parsed
    out: list[ParsedSuggestion] = []
    shown: set[tuple[str, str]] = set()
    for suggestion in parsed.suggestions:
        words = normalised_words(suggestion.text)
        found = None
        if len(words.split()) >= _MIN_ITEM_WORDS:
            holding = [
                (key, unit)
                for key, unit, unit_words in units
                if f" {words} " in unit_words and f" {words} " != unit_words
                and (key in suggestion.citations or not suggestion.citations)
            ]  # fmt: skip
            found = holding[0] if holding else None
        if found is None:
            out.append(suggestion)
            continue
        if found not in shown:
            shown.add(found)
            key, unit = found
            out.append(replace(suggestion, text=unit, citations=suggestion.citations or (key,), completed=True))
    usable = any(s.citations for s in out)
    return replace(parsed, suggestions=tuple(out), usable=usable)
