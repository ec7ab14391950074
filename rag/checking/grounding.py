"""Words a suggestion adds to the evidence it cites: a grounding check that needs no model.

The trained support checker reads meaning, and a fluent sentence on the passage's topic can pass it: the 1.5B
generator, citing a list of resources on benign familial neonatal seizures, wrote "Medications such as
phenobarbital, valproate, and lamotrigine are commonly used to treat BFNS" and the checker kept it. A suggestion
most of whose words its cited evidence never uses is not taken from that evidence, whatever the checker says.
Words are compared by their first five letters, so inflections meet ("medications" / "medication", "treat" /
"treatment"); numbers are the dose check's job.
"""

from __future__ import annotations

import re

from rag.text.tokenize import ENGLISH_STOPWORDS

_WORD = re.compile(r"[^\W\d_]{4,}")
_PREFIX = 5
# At least this many new words, and more than this share of the suggestion's words: a short paraphrase ("ACE
# inhibitors") or a sentence with one new word is the support checker's to judge.
MIN_NEW_WORDS = 3
MAX_NEW_SHARE = 0.5


def new_words(suggestion: str, evidence: str) -> list[str]:
    """The suggestion's content words (4+ letters, not stopwords) that `evidence` never uses, in order."""
    seen = {word[:_PREFIX] for word in _WORD.findall(evidence.lower())}
    return [w for w in _content_words(suggestion) if w[:_PREFIX] not in seen]


def not_from_evidence(suggestion: str, evidence: str) -> list[str]:
    """The new words when they make the suggestion not the evidence's own (see the module), else []."""
    added = new_words(suggestion, evidence)
    if len(added) >= MIN_NEW_WORDS and len(added) > MAX_NEW_SHARE * len(_content_words(suggestion)):
        return added
    return []


def _content_words(text: str) -> list[str]:
    return [w for w in dict.fromkeys(_WORD.findall(text.lower())) if w not in ENGLISH_STOPWORDS]
