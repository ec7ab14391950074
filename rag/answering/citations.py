"""Parse a generator's reply into suggestions and the evidence keys each one cites.

The expected reply is the prompt's format ("SUGGESTIONS:" then numbered lines ending in [E1]-style keys, or
"INSUFFICIENT EVIDENCE"), but small models drift: bullets instead of numbers, keys written [E1, E2] or
[1], prose instead of a list. The parser accepts those and says when it could not find anything usable, so the
engine can fall back instead of showing an unparsed reply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

_ABSTAIN = re.compile(r"^\W*(insufficient\s+evidence|not\s+enough\s+evidence)\b", re.IGNORECASE)
_HEADER = re.compile(r"^\s*(suggestions|answer|recommendations)\s*:\s*", re.IGNORECASE)
_ITEM = re.compile(r"^\s*(?:\d{1,2}\s*[.)]|[-*\u2022])\s+(?P<text>.+)$")
# [E1], [E1, E2], [E1][E2], [E 1]; numbers alone ([1], [1, 2]) only when the reply uses no E-keys at all.
_KEYS = re.compile(r"\[\s*(E\s*\d+(?:\s*[,;]\s*E?\s*\d+)*)\s*\]", re.IGNORECASE)
# What the parser reads as evidence keys: document text shown to the model must never contain it
# (rag.answering.prompts).
CITATION_KEYS = _KEYS
_NUMERIC_KEYS = re.compile(r"\[\s*(\d{1,2}(?:\s*[,;]\s*\d{1,2})*)\s*\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
# The prompt's own markup copied into a reply: the evidence tags around a quote, the format's "<suggestion>"
_MARKUP = re.compile(r"</?\s*(?:evidence|suggestion)\b[^>]*>", re.IGNORECASE)
# A key cut off by the new-token cap ("... [E3][E"): the reply ended inside it.
_CUT_KEY = re.compile(r"\[\s*E?\s*\d*\s*$", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]{2,}")


@dataclass(frozen=True)
class ParsedSuggestion:
    text: str  # citation keys removed
    citations: tuple[str, ...]  # as written, normalised to "E<n>", in order, without repeats
    attributed: bool = False  # the reply cited nothing here; the engine cited the passage it copies word for word
    completed: bool = False  # the reply quoted part of this sentence or list (rag.answering.quote_completion)


@dataclass(frozen=True)
class ParsedReply:
    suggestions: tuple[ParsedSuggestion, ...]
    abstained: bool
    usable: bool  # False: nothing resembling an answer (empty, or prose with no citation at all)
    numeric_keys: bool  # the reply wrote [1] for [E1]
    unknown_keys: tuple[
        str, ...
    ] = ()  # sentence keys (rag.answering.selection) that name no sentence the prompt showed


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
        clean = _strip_keys(_CUT_KEY.sub("", _MARKUP.sub(" ", item)), numeric)
        # A heading or a lead-in with nothing after it says nothing; nor does a line of keys and markup alone.
        if _WORD.search(clean) and not clean.endswith(":"):
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


# A quote this short ("Physical therapy") could come from anywhere; one of five words or more names its source.
_MIN_QUOTE_WORDS = 5


def attribute_quotes(parsed: ParsedReply, passages: Mapping[str, str]) -> ParsedReply:
    """Suggestions that cite nothing but copy a passage word for word cite that passage (every passage that holds
    the words, in key order).

    Models asked to quote often leave the key off; a verbatim quote names its source unambiguously, and the engine
    then checks it against that passage like any other citation. Nothing else is attributed: a paraphrase without
    a key stays uncited. `passages` maps each key to the text the prompt showed under it (title included)."""
    if parsed.abstained or not parsed.suggestions:
        return parsed
    normalised = {key: f" {normalised_words(text)} " for key, text in passages.items()}
    suggestions = []
    for suggestion in parsed.suggestions:
        words = normalised_words(suggestion.text)
        if suggestion.citations or len(words.split()) < _MIN_QUOTE_WORDS:
            suggestions.append(suggestion)
            continue
        keys = tuple(key for key, text in normalised.items() if f" {words} " in text)
        suggestions.append(replace(suggestion, citations=keys, attributed=True) if keys else suggestion)
    usable = any(s.citations for s in suggestions)
    return replace(parsed, suggestions=tuple(suggestions), usable=usable)


def normalised_words(text: str) -> str:
    """Lower-cased words joined by single spaces: punctuation, list dashes and spacing do not break a quote."""
    return " ".join(re.findall(r"[^\W_]+", text.lower()))
