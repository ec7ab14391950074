"""The trained support checker: a MiniLM cross-encoder reads (evidence window, claim) and says supports / refutes /
neutral, each with a probability.

A passage that fits the model's window with the claim is read whole; a longer one is cut into overlapping windows
of whole sentences, the windows sharing most words with the claim are read (at most `max_windows`), and the most
decisive window (highest probability of supports or refutes) gives the passage's verdict. All windows of all pairs
go through the model in one length-sorted batch.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np

from rag.checking.support import SENTENCE_END, LexicalSupportChecker, SupportChecker, clean_claim
from rag.checking.verdict import LABELS, NEUTRAL, Floats, Pair, SupportJudge, Verdict
from rag.core.config import AnswerSettings
from rag.core.errors import ConfigError, ModelLoadError
from rag.models.crossencoder import CrossEncoder, strip_control
from rag.models.embed import Embedder

PACKAGED_VERIFIER = "minilm-support-v1"
# Trained on pairs cut at 256 tokens, but read at up to 384 here: an index chunk is at most 256 embedder tokens,
# so with its claim it fits one window and is read once, whole, rather than as several overlapping windows.
INFERENCE_MAX_LENGTH = 384
_WORD = re.compile(r"\w+")
_MAX_CLAIM_CHARS = 4_000  # a claim is a sentence; a 100 kB "claim" is cut rather than tokenized whole
_MAX_EVIDENCE_CHARS = 200_000
_NEGATIONS = frozenset({"not", "no", "never", "without", "nor", "neither", "cannot", "t"})  # "t": don't, isn't


def packaged_verifier_path() -> Path:
    return Path(str(resources.files("rag") / "data" / "verifiers" / PACKAGED_VERIFIER))


def resolve_verifier_path(value: str) -> Path:
    """The packaged model for "default"; otherwise a folder written by `clinrag train verifier`."""
    return packaged_verifier_path() if value == "default" else Path(value).expanduser()


class NLIVerifier:
    """Three-way claim verification with a trained cross-encoder. Pairs are (claim, evidence)."""

    def __init__(
        self,
        model: CrossEncoder,
        *,
        max_length: int | None = INFERENCE_MAX_LENGTH,
        max_windows: int = 8,
        batch_size: int = 32,
        name: str = "",
        quote_rule: bool = True,
    ) -> None:
        if tuple(model.config.labels) != LABELS:
            raise ConfigError(f"a support model must have labels {list(LABELS)}, not {list(model.config.labels)}")
        if max_length is not None:
            model.config = replace(model.config, max_length=max_length)
        self.model = model
        self.quote_rule = quote_rule  # a claim written word for word in the evidence is supported (`quoted_in`)
        self.max_windows = max_windows
        self.batch_size = batch_size
        self._name = name or "cross-encoder"

    @classmethod
    def load(cls, path: str | Path = "default", *, allow_download: bool = False) -> NLIVerifier:
        folder = resolve_verifier_path(str(path))
        return cls(CrossEncoder.load(folder, allow_download=allow_download), name=f"cross-encoder:{folder.name}")

    @property
    def name(self) -> str:
        return self._name

    def supported(self, score: float) -> bool:
        return bool(score >= 0.5)

    def score(self, pairs: Sequence[Pair]) -> Floats:
        return np.array([v.support for v in self.judge(pairs)], dtype=np.float64)

    def judge(self, pairs: Sequence[Pair]) -> list[Verdict]:
        verdicts: list[Verdict | None] = []
        jobs: list[tuple[int, str, str]] = []  # (pair index, window, claim)
        for index, (claim, evidence) in enumerate(pairs):
            claim_text = " ".join(strip_control(clean_claim(claim)).split())[:_MAX_CLAIM_CHARS]
            evidence_text = strip_control(evidence)[:_MAX_EVIDENCE_CHARS].strip()
            if not _WORD.search(claim_text) or not _WORD.search(evidence_text):
                verdicts.append(NEUTRAL)  # nothing to judge: a bare citation marker, an empty passage
                continue
            quote = quoted_in(claim_text, evidence_text) if self.quote_rule else ""
            if quote:
                verdicts.append(Verdict("supports", (1.0, 0.0, 0.0), quote, basis="quote"))
                continue
            verdicts.append(None)
            jobs += [(index, window, claim_text) for window in self.windows(claim_text, evidence_text)]
        probabilities = self.model.predict([(window, claim) for _, window, claim in jobs], batch_size=self.batch_size)
        best: dict[int, tuple[float, int]] = {}
        for row, (index, _, _) in enumerate(jobs):
            decisiveness = float(max(probabilities[row, 0], probabilities[row, 1]))
            if index not in best or decisiveness > best[index][0]:
                best[index] = (decisiveness, row)
        for index, (_, row) in best.items():
            p = probabilities[row]
            label = LABELS[int(np.argmax(p))]
            verdicts[index] = Verdict(label, (float(p[0]), float(p[1]), float(p[2])), jobs[row][1])
        return [v if v is not None else NEUTRAL for v in verdicts]

    def windows(self, claim: str, evidence: str) -> list[str]:
        """The evidence whole if it fits beside the claim; else sentence windows, most claim words first."""
        tokenizer, max_length = self.model.tokenizer, self.model.config.max_length
        claim_tokens = len(tokenizer(claim, add_special_tokens=False)["input_ids"])
        budget = max(max_length - claim_tokens - 3, max_length // 2)
        sentences = [s.strip() for s in SENTENCE_END.split(evidence) if s and s.strip()] or [evidence.strip()]
        counts = [len(ids) for ids in tokenizer(sentences, add_special_tokens=False)["input_ids"]]
        if sum(counts) <= budget:
            return [" ".join(evidence.split())]
        windows: list[str] = []
        start = 0
        while True:
            end, used = start, 0
            while end < len(sentences) and (end == start or used + counts[end] <= budget):
                used += counts[end]
                end += 1
            windows.append(" ".join(sentences[start:end]))
            if end >= len(sentences):
                break
            # The next window starts about halfway through this one: every sentence is read beside its neighbours.
            half, read, after = used / 2, 0, start
            while after < end - 1 and read + counts[after] <= half:
                read += counts[after]
                after += 1
            start = max(after, start + 1)
        words = {w.lower() for w in _WORD.findall(claim)}
        ranked = sorted(windows, key=lambda w: -len(words & {x.lower() for x in _WORD.findall(w)}))
        return list(dict.fromkeys(ranked))[: self.max_windows]


def quoted_in(claim: str, evidence: str, *, min_words: int = 4) -> str:
    """The evidence sentence(s) holding the claim word for word (case and punctuation aside), or "".

    A rule, not a learnt judgement: a sentence the evidence states is supported by it. The trained model alone
    judged verbatim sentences of long guideline passages "neutral" (it learnt from SciFact that a sentence sharing
    words with a claim is often silent on it), which would remove every quoted, extractive suggestion. A match
    right after a negation in its own sentence ("it is not true that ...") or shorter than `min_words` words does
    not count; a negation that ends the sentence before ("... require no treatment. For others, ...") does not
    touch the match.
    """
    claim_words = [w.lower() for w in _WORD.findall(claim)]
    if len(claim_words) < min_words:
        return ""
    matches = list(_WORD.finditer(evidence))
    words = [m.group(0).lower() for m in matches]
    n = len(claim_words)
    bounds: list[int] = []  # sentence boundaries, found on the first match only: most pairs have none
    for start in range(len(words) - n + 1):
        if words[start : start + n] != claim_words:
            continue
        bounds = bounds or [0, *(m.end() for m in SENTENCE_END.finditer(evidence)), len(evidence)]
        begin, end = matches[start].start(), matches[start + n - 1].end()
        first = max(b for b in bounds if b <= begin)
        if any(words[i] in _NEGATIONS for i in range(max(0, start - 3), start) if matches[i].start() >= first):
            continue
        last = min(b for b in bounds if b >= end)
        return " ".join(evidence[first:last].split())
    return ""


def load_support_checker(settings: AnswerSettings, embedder: Embedder | None = None) -> SupportJudge:
    """The checker `settings.support_checker` names; the calibrated one stands in only when `support_fallback`."""
    if settings.support_checker == "calibrated":
        return _calibrated(embedder)
    try:
        return NLIVerifier.load(settings.support_checker)
    except (ConfigError, ModelLoadError) as exc:
        if not settings.support_fallback:
            raise ConfigError(
                f"support checker {settings.support_checker!r} cannot be loaded: {exc}. Set answer.support_fallback "
                '= true to use the calibrated checker instead, or answer.support_checker = "calibrated"'
            ) from exc
        warnings.warn(f"support checker unavailable ({exc}); using the calibrated checker", stacklevel=2)
        return _calibrated(embedder)


def _calibrated(embedder: Embedder | None) -> SupportJudge:
    if embedder is None:
        return LexicalSupportChecker()
    try:
        return SupportChecker(embedder)
    except ConfigError:  # a calibration fitted for another embedder: the lexical model still checks
        return LexicalSupportChecker()
