"""The quotable units of a passage: its sentences, its Markdown list items, and lists flattened into its text.

Everything that quotes evidence uses these units, so that a quote means the same thing everywhere: the extractive
answer picks them, quote completion shows a fragment as the unit it came from, the `answer-select` template numbers
them for a model to choose from, and reranker training scores them.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")
_LIST_ITEM = re.compile(r"^(?:[-*\u2022]|\d{1,2}[.)])\s+(.+)$")
# A list flattened into running text ("These resources address X: - Gene Review: X - Genetic Testing Registry: X"),
# as MedQuAD and other scraped corpora store them: a colon, then items separated by " - ".
_INLINE_LIST = re.compile(r":\s+-\s+")
_INLINE_ITEM = re.compile(r"(?<!\s)\s+-\s+")  # tried once per run of spaces: linear on a hostile run
MIN_CHARS, MAX_CHARS = 30, 400
# A recommendation's grade written after it, alone: "(**Strong For**)", "(Class I, Level of Evidence A)", "*(I-C)*",
# "(Conditional recommendation, Very low quality evidence)". It qualifies the sentence before it, so the two are one
# unit: a chunk never opens with the strength of a recommendation it does not hold. A parenthesised sentence of its
# own ("(A higher than normal blood sugar level is a risk factor ...)") ends with a full stop inside and stays apart.
GRADE_ALONE = re.compile(
    r"^[*_]*\((?=[^()]{1,120}\)[*_]*\.?$)[^()]*?\b(?:strong|weak|conditional|recommendation|class|level|grade|"
    r"evidence|quality|[IV]{1,3}\s*-\s*[A-C])\b[^()]*(?<![.!?])\)[*_]*\.?$",
    re.IGNORECASE,
)

# A bold label with at most a pointer elsewhere, "**Treatment** (see Figure 1 in the original guideline document)":
# a heading written as text, which says nothing to quote (NGC answers once quoted it as a suggestion).
LABEL_ONLY = re.compile(r"^[*_]{2}[^*_]{1,80}[*_]{2}[:.]?\s*(?:\((?:see|refer to)\b[^()]*\))?\.?$", re.IGNORECASE)


class Piece(NamedTuple):
    heading: str
    sentence: str
    list_id: int


def evidence_units(text: str, heading: str = "") -> list[tuple[str, str]]:
    """(heading, sentence) pairs: Markdown headings set the context, list items and sentences are the units."""
    return [(piece.heading, piece.sentence) for piece in evidence_pieces(text, heading)]


def evidence_pieces(text: str, heading: str = "") -> list[Piece]:
    """Each unit with its heading and which Markdown list of the passage it is an item of (-1 for none)."""
    return [piece for piece, quotable in _walk(text, heading) if quotable]


def evidence_lines(text: str) -> list[tuple[str, bool]]:
    """The passage as (line, quotable) in order: its units, and the context between them that is no unit.

    Context is a heading line, a lead-in ending in ":" ("Do not use:"), or a sentence too short or too long to
    quote. A model choosing units needs it: a list item read without "Do not use:" above it says the opposite.
    The quotable lines are `evidence_units(text)`, in the same order."""
    return [(piece.sentence, quotable) for piece, quotable in _walk(text, "")]


def _walk(text: str, heading: str) -> list[tuple[Piece, bool]]:
    out: list[tuple[Piece, bool]] = []
    paragraph: list[str] = []
    lists, current = 0, -1  # Markdown lists seen, and the one being read: text or a heading ends it, a blank line not

    def flush() -> None:
        for sentence in _SENTENCE.split(" ".join(paragraph)):
            for unit in inline_lists(sentence):
                _keep(out, heading, unit, -1)
        paragraph.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if not line or _LIST_ITEM.match(line) or line.startswith("#"):
            flush()
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            out.append((Piece(heading, line, -1), False))
            current = -1
        elif item := _LIST_ITEM.match(line):
            if current < 0:
                current, lists = lists, lists + 1
            _keep(out, heading, item.group(1), current)
        elif line:
            paragraph.append(line)
            current = -1
    flush()
    return out


def inline_lists(sentence: str) -> list[str]:
    """The sentence itself, or for each list flattened into it ("Intro: - a - b - c") one unit "Intro: a; b; c".

    Read whole, such a sentence is too long to quote (all of a resource page's links in one "sentence") and its
    items are too short to quote alone, so a passage that is only a list gave the answer nothing to cite. A unit
    keeps the list's lead-in and as many items as fit in MAX_CHARS, cut between items; its words are the
    passage's words in the passage's order, so the unit is still a quote. When a second list follows, its
    lead-in has run into the first list's last item (there is no full stop between them): that item leads it.
    """
    parts = _INLINE_LIST.split(sentence)
    if len(parts) == 1:
        return [sentence]
    units = []
    lead = parts[0].strip()
    for number, body in enumerate(parts[1:], 1):
        items = [item.strip() for item in _INLINE_ITEM.split(body) if item.strip()]
        next_lead = items.pop() if number < len(parts) - 1 and items else ""
        unit = ""
        for item in items:
            longer = f"{unit}; {item}" if unit else f"{lead}: {item}" if lead else item
            if len(longer) > MAX_CHARS:
                break
            unit = longer
        if unit:
            units.append(unit)
        lead = next_lead
    return units


def _keep(out: list[tuple[Piece, bool]], heading: str, sentence: str, list_id: int) -> None:
    sentence = sentence.strip()
    if sentence and out and GRADE_ALONE.match(sentence) and not out[-1][0].sentence.startswith("#"):
        # The grade belongs to the unit before it: quoted together, a recommendation keeps its strength, and the
        # grade alone ("(Conditional recommendation, Very low quality evidence)") is never a suggestion.
        (previous, quotable) = out[-1]
        out[-1] = (previous._replace(sentence=f"{previous.sentence} {sentence}"), quotable)
    elif sentence:
        quotable = (
            MIN_CHARS <= len(sentence) <= MAX_CHARS and not sentence.endswith(":") and not LABEL_ONLY.match(sentence)
        )
        out.append((Piece(heading, sentence, list_id), quotable))
