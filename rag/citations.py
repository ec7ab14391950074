"""Parse a generator's reply into suggestions and the evidence keys each one cites.

The expected reply is the prompt's format ("SUGGESTIONS:" then numbered lines ending in [E1]-style keys, or
"INSUFFICIENT EVIDENCE"), but small models drift: bullets instead of numbers, keys written [E1, E2] or
[1], prose instead of a list. The parser accepts those and says when it could not find anything usable, so the
engine can fall back instead of showing an unparsed reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ABSTAIN = re.compile(r"^\W*(insufficient\s+evidence|not\s+enough\s+evidence)\b", re.IGNORECASE)
_HEADER = re.compile(r"^\s*(suggestions|answer|recommendations)\s*:\s*", re.IGNORECASE)
_ITEM = re.compile(r"^\s*(?:\d{1,2}\s*[.)]|[-*\u2022])\s+(?P<text>.+)$")
# [E1], [E1, E2], [E1][E2], [E 1]; numbers alone ([1], [1, 2]) only when the reply uses no E-keys at all.
_KEYS = re.compile(r"\[\s*(E\s*\d+(?:\s*[,;]\s*E?\s*\d+)*)\s*\]", re.IGNORECASE)
# What the parser reads as evidence keys: document text shown to the model must never contain it (rag.prompts).
CITATION_KEYS = _KEYS
_NUMERIC_KEYS = re.compile(r"\[\s*(\d{1,2}(?:\s*[,;]\s*\d{1,2})*)\s*\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
# The prompt's own markup copied into a reply: the evidence tags around a quote, the format's "<suggestion>"
_MARKUP = re.compile(r"</?\s*(?:evidence|suggestion)\b[^>]*>", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedSuggestion:
    text: str  # citation keys removed
    citations: tuple[str, ...]  # as written, normalised to "E<n>", in order, without repeats


@dataclass(frozen=True)
class ParsedReply:
    suggestions: tuple[ParsedSuggestion, ...]
    abstained: bool
    usable: bool  # False: nothing resembling an answer (empty, or prose with no citation at all)
    numeric_keys: bool  # the reply wrote [1] for [E1]


def parse_reply(text: str) -> ParsedReply:
    body = text.strip()
    if _ABSTAIN.search(body) or _ABSTAIN.search(_HEADER.sub("", body)):
        return ParsedReply((), abstained=True, usable=True, numeric_keys=False)
    numeric = not _KEYS.search(body) and bool(_NUMERIC_KEYS.search(body))
    lines = [_HEADER.sub("", line) for line in body.splitlines()]
    items = [m.group("text") for line in lines if (m := _ITEM.match(line))]
    if not items:
        # Prose: each sentence that cites something is a suggestion.
        items = [s for s in _SENTENCE.split(" ".join(line.strip() for line in lines)) if _cites(s, numeric)]
    suggestions = []
    for item in items:
        keys = _citations(item, numeric)
        clean = _strip_keys(_MARKUP.sub(" ", item), numeric)
        if clean and not clean.endswith(":"):  # a heading or a lead-in with nothing after it says nothing
            suggestions.append(ParsedSuggestion(clean, keys))
    usable = bool(suggestions) and any(s.citations for s in suggestions)
    return ParsedReply(tuple(suggestions), abstained=False, usable=usable, numeric_keys=numeric)


def _cites(text: str, numeric: bool) -> bool:
    return bool((_NUMERIC_KEYS if numeric else _KEYS).search(text))


def _citations(text: str, numeric: bool) -> tuple[str, ...]:
    keys: list[str] = []
    for match in (_NUMERIC_KEYS if numeric else _KEYS).finditer(text):
        for part in re.split(r"[,;]", match.group(1)):
            digits = re.sub(r"\D", "", part)
            if digits:
                key = f"E{int(digits)}"
                if key not in keys:
                    keys.append(key)
    return tuple(keys)


def _strip_keys(text: str, numeric: bool) -> str:
    text = (_NUMERIC_KEYS if numeric else _KEYS).sub("", text)
    text = re.sub(r"\s+([.,;:])", r"\1", text)
    return " ".join(text.split()).strip(" -")
