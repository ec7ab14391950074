"""The BM25 tokenizer: case folding, clinical-aware punctuation handling, optional stemming and stop words.

Clinical text is full of tokens that a whitespace or `\\w+` tokenizer mangles: `HbA1c`, `COVID-19`, `5-mg`,
`beta-blocker`, `eGFR<30`, `2.5`. Compounds are kept whole *and* split into their parts, so a query for
"beta blocker" still meets "beta-blockers", and "covid-19" meets "COVID 19".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# A word: letters/digits, joined by inner hyphens, dots, slashes or plus signs ("covid-19", "2.5", "co-amoxiclav").
_WORD = re.compile(r"[0-9a-z\u00c0-\u024f]+(?:[-./+][0-9a-z\u00c0-\u024f]+)*")
# A comparison such as "egfr<30" or "hba1c>=7" is also kept whole: thresholds are how guidelines speak.
# Matches start only where a word starts: tried inside a long word (a base64 blob) the pattern costs O(word)
# at every position, O(n^2) in all.
_COMPARISON = re.compile(r"(?<![0-9a-z])([0-9a-z]+)\s*(<=|>=|<|>|≤|≥)\s*([0-9]+(?:\.[0-9]+)?)")
_PART = re.compile(r"[0-9a-z\u00c0-\u024f]+")

# Short, conservative English list: clinical negations ("no", "not", "without") are deliberately kept.
ENGLISH_STOPWORDS = frozenset(
    """a an and are as at be been being but by can could did do does doing for from had has have having he her
    hers him his how i if in into is it its itself me my of on or our ours she should so some such than that the
    their theirs them then there these they this those to too until up very was we were what when where which
    while who whom why will with would you your yours""".split()
)

TOKENIZER_NAME = "clinical-v1"


@dataclass(frozen=True)
class TokenizerConfig:
    stem: bool = True
    stopwords: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"name": TOKENIZER_NAME, "stem": self.stem, "stopwords": "en" if self.stopwords else None}


class ClinicalTokenizer:
    """Deterministic text -> tokens. Built once per index; holds the (stateless) stemmer."""

    def __init__(self, config: TokenizerConfig = TokenizerConfig()) -> None:
        self.config = config
        self._stem: Callable[[str], str] = _make_stemmer() if config.stem else _identity

    def __call__(self, text: str) -> list[str]:
        return self.tokenize(text)

    def tokenize(self, text: str) -> list[str]:
        folded = _fold(text)
        tokens: list[str] = []
        for match in _WORD.finditer(folded):
            word = match.group(0).strip(".")
            parts = _PART.findall(word)
            if len(parts) > 1 and not _is_number(word):
                tokens.append(word)  # the compound as written: "covid-19", "beta-blocker"
            tokens.extend(parts if len(parts) > 1 and not _is_number(word) else [word])
        tokens.extend(f"{a}{op}{b}" for a, op, b in _COMPARISON.findall(folded))
        return [self._stem(t) for t in tokens if t and not (self.config.stopwords and t in ENGLISH_STOPWORDS)]

    def tokenize_many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self.tokenize(t) for t in texts]


_PLAIN_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")


def plain_words(text: str) -> list[str]:
    """Lower-cased words and numbers, a decimal ("2.5") as one: what the word-share measures count."""
    return _PLAIN_WORD.findall(text.lower())


def content_word_share(text: str, reference: str) -> float:
    """The share of `reference`'s distinct content words (stop words aside) that `text` holds; 0 when it has none."""
    wanted = {w for w in plain_words(reference) if w not in ENGLISH_STOPWORDS}
    return len(wanted & set(plain_words(text))) / len(wanted) if wanted else 0.0


def _fold(text: str) -> str:
    # NFKC turns "≥" variants, full-width digits and ligatures into their plain forms before case folding.
    return unicodedata.normalize("NFKC", text).casefold().replace("≤", "<=").replace("≥", ">=")


def _is_number(word: str) -> bool:
    return bool(re.fullmatch(r"[0-9]+(?:[.,/][0-9]+)*", word))


def _identity(token: str) -> str:
    return token


def _make_stemmer() -> Callable[[str], str]:
    import Stemmer  # PyStemmer: the Snowball English stemmer, C speed

    stemmer = Stemmer.Stemmer("english")
    cache: dict[str, str] = {}

    def stem(token: str) -> str:
        # Compounds and numbers are not stemmed: "covid-19" and "2.5" must stay as written.
        if not token.isalpha():
            return token
        hit = cache.get(token)
        if hit is None:
            hit = cache[token] = str(stemmer.stemWord(token))
        return hit

    return stem


def tokenizer_from_json(data: dict[str, Any]) -> ClinicalTokenizer:
    """Recreate the tokenizer recorded in a manifest, refusing one this version does not know."""
    if data.get("name") != TOKENIZER_NAME:
        raise ValueError(f"unknown BM25 tokenizer {data.get('name')!r}; this clinrag knows {TOKENIZER_NAME!r}")
    return ClinicalTokenizer(TokenizerConfig(stem=bool(data.get("stem")), stopwords=bool(data.get("stopwords"))))


def whitespace_tokens(texts: Sequence[str]) -> list[list[str]]:
    """LangChain's BM25Retriever default (str.split), kept for side-by-side benchmarks."""
    return [t.split() for t in texts]
