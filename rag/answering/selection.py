"""A reply that names evidence sentences by key ("E1.3"), read into suggestions that quote those sentences.

The `answer-select` template shows each passage sentence by sentence under keys (E1.1, E1.2, ...; the units of
`rag.text.units`) and asks the model for the keys of the sentences that answer. The engine then quotes each named
sentence word for word and cites its passage, so a suggestion cannot drift from what the evidence says, and the
model writes a few tokens instead of whole sentences (the 1.5B Qwen on 2 cores answers in about a third of the
time). The support check still judges every quote against its passage: the model chose it, the check says
whether it answers anything.

A key that names no sentence shown ("E1.9" for a passage of five) is reported with the dropped citations. A reply
with no sentence key at all is read as an ordinary reply (`parse_reply`): a model that ignores the format and
writes cited suggestions, or abstains, is still understood.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.answering.citations import ParsedReply, ParsedSuggestion, parse_reply
from rag.answering.prompts import EvidenceItem, PromptTemplate

# "E1.3", "[E1.3]", "e1.3", as the prompt writes them; no spaces inside, so "vitamin E 1.5 mg" in a reply that
# ignored the format is not read as a key.
_KEY = re.compile(r"(?<![A-Za-z0-9])E(\d{1,3})\.(\d{1,4})(?!\.?\d)", re.IGNORECASE)


def read_reply(reply: str, evidence: Sequence[EvidenceItem], template: PromptTemplate) -> ParsedReply:
    """A model's reply to `template`, read in the template's reply format."""
    return parse_selection(reply, evidence) if template.numbered else parse_reply(reply)


def parse_selection(reply: str, evidence: Sequence[EvidenceItem]) -> ParsedReply:
    """The named sentences as suggestions (in the reply's order, each once), citing the passage they are from."""
    keys = list(dict.fromkeys(f"E{int(p)}.{int(n)}" for p, n in _KEY.findall(reply)))
    if not keys:
        return parse_reply(reply)
    sentences = {key: (item.key, text) for item in evidence for key, text in item.sentences()}
    suggestions: list[ParsedSuggestion] = []
    quoted: set[str] = set()
    for key in keys:
        if key in sentences and sentences[key][1] not in quoted:
            passage, text = sentences[key]
            quoted.add(text)
            suggestions.append(ParsedSuggestion(text, (passage,)))
    unknown = tuple(key for key in keys if key not in sentences)
    return ParsedReply(
        tuple(suggestions), abstained=False, usable=bool(suggestions), numeric_keys=False, unknown_keys=unknown
    )
