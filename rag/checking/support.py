"""Does a cited evidence passage support a claim? A small calibrated logistic model over cheap features.

Features: the embedder cosine between the claim and its best-matching evidence sentence (or pair of sentences)
and the whole passage; the share of the claim's content tokens found in the evidence and in its best window; the
share of the claim's numbers missing from the evidence; a negation mismatch. Weights and thresholds live in
`rag/data/support_calibration.json`, written by `benchmarks/bench_support.py --write-calibration` (plain numpy:
L2 logistic regression by Newton steps, weights held to their expected signs). The combined model is fitted on
ExpertQA medicine expert labels; the lexical fallback on K-QA physician NLI labels, because ExpertQA experts
judged the whole cited page, and against those labels no lexical feature carried signal. A dose stated in the
claim but not in the evidence zeroes the score: a rule, since the calibration sets hold almost no dose claims.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from rag.checking.verdict import Verdict
from rag.core.errors import ConfigError
from rag.models.embed import Embedder
from rag.text.tokenize import ClinicalTokenizer, TokenizerConfig

Floats = npt.NDArray[np.float64]
Pair = tuple[str, str]  # (claim, evidence passage)

CALIBRATION_FORMAT = "clinrag-support-calibration/1"
LEXICAL_FEATURES = ("token_coverage", "window_coverage", "number_missing", "negation_mismatch")
EMBEDDING_FEATURES = ("embed_max_cos", "embed_passage_cos")
COMBINED_FEATURES = LEXICAL_FEATURES + EMBEDDING_FEATURES
# Direction each feature must push the probability of support (see `fit_signed_logistic`).
EXPECTED_SIGNS = {"token_coverage": 1, "window_coverage": 1, "number_missing": -1, "negation_mismatch": -1,
                  "embed_max_cos": 1, "embed_passage_cos": 1}  # fmt: skip

# Citation markers ("[1]", "[2, 3]", the engine's "[E1]") and markdown emphasis are answer formatting, not content
# to be supported.
_CITATION = re.compile(r"\[E?\d+(?:\s*[,;\-–]\s*E?\d+)*\]")
# The lookbehinds let a match start only where a run of whitespace or of digits starts: tried at every position
# inside a long run, these patterns cost O(run) each, O(n^2) in all (a passage with 20,000 spaces took 2 s).
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<!\s)\s*\n\s*")
# A number not glued to a word ("B12", "HbA1c") nor to a hyphenated name ("COVID-19"); "500mg" yields 500.
_NUMBER = re.compile(r"(?<![\w.])(?<![a-z]-)\d+(?:[.,]\d+)*")
_NEGATION = re.compile(r"\b(?:no|not|never|none|neither|nor|without|cannot)\b|n['’]t\b")
# Evidence often spells small numbers out; a claim's "3" is found in "three" (never the other way: "one can").
_NUMBER_WORDS = dict(
    zip(
        "one two three four five six seven eight nine ten eleven twelve".split(),
        [str(n) for n in range(1, 13)],
        strict=True,
    )
)
# A dose: a number with a unit of mass, volume, amount or activity ("500 mg", "0.5mcg/kg", "10 units", "2 grams").
_DOSE = re.compile(
    r"(?<![\w.])(?<!\d,)(\d+(?:[.,]\d+)*)\s*(?:-\s*)?"
    r"(micrograms?|milligrams?|grams?|millilit(?:er|re)s?|international units?"
    r"|units?|mcg|µg|μg|ug|ng|mg|kg|g|ml|l|iu|meq|mmol)(?![a-zµμ])"
)
_UNIT_ALIASES = {"microgram": "mcg", "µg": "mcg", "μg": "mcg", "ug": "mcg", "milligram": "mg", "gram": "g",
                 "milliliter": "ml", "millilitre": "ml", "international unit": "iu", "unit": "units"}  # fmt: skip
_MAX_WINDOWS = 200  # bounds the work on a very long passage; cited chunks are far shorter


@runtime_checkable
class SupportScorer(Protocol):
    def score(self, pairs: Sequence[Pair]) -> Floats:
        """Probability in [0, 1] that each evidence passage supports its claim."""
        ...


@dataclass(frozen=True)
class FitCounts:
    """What a calibration was fitted on, recorded so a reader can judge how far to trust it."""

    dataset: str
    pairs: int
    supported: int
    questions: int
    positive_labels: tuple[str, ...]


@dataclass(frozen=True)
class SupportCalibration:
    """A logistic model over standardised features: p = sigmoid(((x - mean) / scale) . weights + intercept)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float
    threshold: float
    embedder: str | None  # the embedder whose cosines the weights were fitted on; None: lexical features only
    l2: float
    fitted_on: FitCounts
    fitted_at: str  # ISO date

    def probabilities(self, features: Floats) -> Floats:
        x = (np.asarray(features, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return sigmoid(x @ np.asarray(self.weights) + self.intercept)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["fitted_on"]["positive_labels"] = list(self.fitted_on.positive_labels)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def calibration_from_json(data: Mapping[str, Any], *, origin: str) -> SupportCalibration:
    """Validate one calibration object; every problem names `origin` and how to fix it."""
    fix = "refit it with `python benchmarks/bench_support.py --write-calibration`"
    try:
        features = tuple(str(f) for f in data["features"])
        vectors = [tuple(float(v) for v in data[key]) for key in ("mean", "scale", "weights")]
        counts = data["fitted_on"]
        fitted_on = FitCounts(
            str(counts["dataset"]),
            int(counts["pairs"]),
            int(counts["supported"]),
            int(counts["questions"]),
            tuple(str(label) for label in counts["positive_labels"]),
        )
        embedder = data["embedder"]
        calibration = SupportCalibration(
            features, vectors[0], vectors[1], vectors[2], float(data["intercept"]), float(data["threshold"]),
            None if embedder is None else str(embedder), float(data["l2"]), fitted_on, str(data["fitted_at"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: malformed support calibration ({type(exc).__name__}: {exc}); {fix}") from exc
    unknown = set(features) - set(COMBINED_FEATURES)
    if unknown or not features or any(len(v) != len(features) for v in vectors):
        raise ConfigError(
            f"{origin}: calibration features {list(features)} must be known ({list(COMBINED_FEATURES)}) and match "
            f"mean/scale/weights in length; {fix}"
        )
    numbers = [*calibration.mean, *calibration.scale, *calibration.weights, calibration.intercept]
    if not np.isfinite(numbers).all():
        raise ConfigError(f"{origin}: calibration holds a non-finite number; {fix}")
    if not all(s > 0 for s in calibration.scale) or not 0.0 <= calibration.threshold <= 1.0:
        raise ConfigError(f"{origin}: calibration scales must be > 0 and the threshold in [0, 1]; {fix}")
    if calibration.embedder is None and set(features) & set(EMBEDDING_FEATURES):
        raise ConfigError(f"{origin}: embedding features need the embedder they were fitted with; {fix}")
    return calibration


def default_calibration_path() -> str:
    return str(resources.files("rag") / "data" / "support_calibration.json")


def load_calibrations(path: str | Path | None = None) -> dict[str, SupportCalibration]:
    """All named models in a calibration file ('combined', 'lexical'); the packaged file by default."""
    origin = str(path) if path is not None else default_calibration_path()
    try:
        text = Path(path).read_text("utf-8") if path is not None else _packaged_calibration_text()
        data = json.loads(text)
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read support calibration ({exc}); check the path") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{origin}: support calibration is not valid JSON ({exc}); restore or refit it") from exc
    if (
        not isinstance(data, dict)
        or data.get("format") != CALIBRATION_FORMAT
        or not isinstance(data.get("models"), dict)
    ):
        raise ConfigError(
            f"{origin}: not a support calibration (expected an object with format {CALIBRATION_FORMAT!r} and "
            "'models'); refit it with `python benchmarks/bench_support.py --write-calibration`"
        )
    return {name: calibration_from_json(model, origin=f"{origin} [{name}]") for name, model in data["models"].items()}


def load_calibration(model: str = "combined", path: str | Path | None = None) -> SupportCalibration:
    calibrations = load_calibrations(path)
    if model not in calibrations:
        where = path or default_calibration_path()
        raise ConfigError(f"{where}: no support model {model!r} (has {sorted(calibrations)}); pick one of those")
    return calibrations[model]


def write_calibrations(path: str | Path, calibrations: Mapping[str, SupportCalibration]) -> None:
    data = {"format": CALIBRATION_FORMAT, "models": {name: c.to_json() for name, c in calibrations.items()}}
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _packaged_calibration_text() -> str:
    return (resources.files("rag") / "data" / "support_calibration.json").read_text("utf-8")


# ---------------------------------------------------------------------------------------------------- features


def clean_claim(claim: str) -> str:
    return " ".join(_CITATION.sub(" ", claim).replace("**", " ").split()).lstrip("-• ").strip()


def evidence_windows(evidence: str) -> list[str]:
    """Sentences and adjacent sentence pairs: a claim often paraphrases one sentence, sometimes two."""
    sentences = [s.strip() for s in SENTENCE_END.split(evidence) if s and s.strip()]
    pairs = [f"{a} {b}" for a, b in itertools.pairwise(sentences)]
    return (sentences + pairs)[:_MAX_WINDOWS] or [evidence.strip()]


def numbers_in(text: str, *, spelled: bool = False) -> set[str]:
    folded = text.casefold()
    found = {m.group(0).replace(",", "").rstrip(".") for m in _NUMBER.finditer(folded)}
    if spelled:
        found |= {_NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", folded) if w in _NUMBER_WORDS}
    return found


def doses_in(text: str) -> set[tuple[str, str]]:
    """(number, canonical unit) of every dose written in the text."""
    doses = set()
    for number, unit in _DOSE.findall(text.casefold()):
        unit = unit.rstrip("s") if unit.endswith("s") and unit != "units" else unit
        doses.add((number.replace(",", ""), _UNIT_ALIASES.get(unit, unit)))
    return doses


def missing_dose_share(claim: str, evidence: str) -> float:
    """Share of the claim's doses that the evidence does not state; 0 when the claim states none."""
    claimed = doses_in(claim)
    return len(claimed - doses_in(evidence)) / len(claimed) if claimed else 0.0


def _content_tokens(tokenizer: ClinicalTokenizer, text: str) -> set[str]:
    # Numbers are judged by `number_missing`; counting them here too would double their weight.
    return {t for t in tokenizer.tokenize(text) if len(t) > 1 and not _NUMBER.fullmatch(t)}


def _share(part: set[str], whole: set[str]) -> float:
    return len(part & whole) / len(part) if part else 0.0


def _negated(text: str) -> bool:
    return bool(_NEGATION.search(text.casefold()))


def lexical_features(claim: str, evidence: str, tokenizer: ClinicalTokenizer) -> tuple[float, ...]:
    """LEXICAL_FEATURES of one pair, in that order. `claim` should already be cleaned."""
    claim_tokens = _content_tokens(tokenizer, claim)
    windows = evidence_windows(evidence)
    window_shares = [_share(claim_tokens, _content_tokens(tokenizer, w)) for w in windows]
    best = int(np.argmax(window_shares))
    claim_numbers = numbers_in(claim)
    missing = len(claim_numbers - numbers_in(evidence, spelled=True)) / len(claim_numbers) if claim_numbers else 0.0
    return (
        _share(claim_tokens, _content_tokens(tokenizer, evidence)),
        window_shares[best],
        missing,
        float(_negated(claim) != _negated(windows[best])),
    )


def embedding_features(embedder: Embedder, claims: Sequence[str], evidences: Sequence[str]) -> Floats:
    """EMBEDDING_FEATURES per pair: the claim's best cosine to any window of its evidence, and to the whole passage.

    The window catches a claim paraphrasing one sentence of a long passage; the passage catches one that
    summarises several. Two batched embed calls in all.
    """
    windows = [evidence_windows(e) for e in evidences]
    flat = list(dict.fromkeys([*evidences, *(w for ws in windows for w in ws)]))
    position = {w: i for i, w in enumerate(flat)}
    claim_vectors = embedder.embed(list(claims)).astype(np.float64)
    text_vectors = embedder.embed(flat).astype(np.float64)
    if not embedder.normalized:
        claim_vectors, text_vectors = _unit_rows(claim_vectors), _unit_rows(text_vectors)
    best = [float((text_vectors[[position[w] for w in ws]] @ claim_vectors[i]).max()) for i, ws in enumerate(windows)]
    passage = [float(text_vectors[position[e]] @ claim_vectors[i]) for i, e in enumerate(evidences)]
    return np.column_stack([best, passage]).astype(np.float64)


def _unit_rows(x: Floats) -> Floats:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float64)


def support_features(pairs: Sequence[Pair], tokenizer: ClinicalTokenizer, embedder: Embedder | None = None) -> Floats:
    """LEXICAL_FEATURES, then EMBEDDING_FEATURES when an embedder is given: one row per (claim, evidence) pair."""
    claims = [clean_claim(c) for c, _ in pairs]
    rows = [lexical_features(c, e, tokenizer) for c, (_, e) in zip(claims, pairs, strict=True)]
    lexical = np.array(rows, dtype=np.float64).reshape(len(pairs), len(LEXICAL_FEATURES))
    if embedder is None:
        return lexical
    if not pairs:
        return np.zeros((0, len(COMBINED_FEATURES)), dtype=np.float64)
    return np.column_stack([lexical, embedding_features(embedder, claims, [e for _, e in pairs])])


# ---------------------------------------------------------------------------------------------------- checkers


class LexicalSupportChecker:
    """Lexical features only: no model, deterministic. A fallback, and a fake for tests of callers.

    With `dose_rule` (the default) the calibrated probability is multiplied by the share of the claim's doses
    ("500 mg") that the evidence states: a dose the evidence does not give is never supported by it. This is a
    rule, not a fitted weight: the calibration sets hold almost no dose claims (none of 141 ExpertQA pairs; 2 of
    399 K-QA pairs, both with the dose missing and both judged not entailed).
    """

    def __init__(
        self,
        calibration: SupportCalibration | None = None,
        tokenizer: ClinicalTokenizer | None = None,
        *,
        dose_rule: bool = True,
    ) -> None:
        self.calibration = calibration or load_calibration("lexical")
        self.tokenizer = tokenizer or ClinicalTokenizer(TokenizerConfig(stem=True, stopwords=True))
        self.dose_rule = dose_rule
        missing = [f for f in self.calibration.features if f not in self.feature_names]
        if missing:
            raise ConfigError(
                f"support calibration needs features {missing} that {type(self).__name__} cannot compute; "
                f"use the calibration model fitted for it ('lexical' for LexicalSupportChecker)"
            )

    def features(self, pairs: Sequence[Pair]) -> Floats:
        """All features this checker knows, one row per pair (columns: `feature_names`)."""
        return support_features(pairs, self.tokenizer)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return LEXICAL_FEATURES

    def score(self, pairs: Sequence[Pair]) -> Floats:
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        columns = [self.feature_names.index(f) for f in self.calibration.features]
        probabilities = self.calibration.probabilities(self.features(pairs)[:, columns])
        if not self.dose_rule:
            return probabilities
        stated = [1.0 - missing_dose_share(clean_claim(c), e) for c, e in pairs]
        return np.asarray(probabilities * np.array(stated), dtype=np.float64)

    def supported(self, score: float) -> bool:
        return bool(score >= self.calibration.threshold)

    @property
    def name(self) -> str:
        return "calibrated-lexical"

    def judge(self, pairs: Sequence[Pair]) -> list[Verdict]:
        """supports or neutral (this model cannot tell contradiction from silence), with the calibrated probability."""
        return [
            Verdict("supports" if self.supported(float(p)) else "neutral", (float(p), 0.0, 1.0 - float(p)))
            for p in self.score(pairs)
        ]


class SupportChecker(LexicalSupportChecker):
    """Lexical features plus the embedder's claim-evidence cosines, combined by the calibrated model."""

    def __init__(
        self,
        embedder: Embedder,
        calibration: SupportCalibration | None = None,
        tokenizer: ClinicalTokenizer | None = None,
        *,
        dose_rule: bool = True,
    ) -> None:
        self.embedder = embedder
        super().__init__(calibration or load_calibration("combined"), tokenizer, dose_rule=dose_rule)
        wanted = self.calibration.embedder
        if wanted is not None and wanted != embedder.name:
            # Cosine scales differ between models, so weights fitted on one are meaningless for another.
            raise ConfigError(
                f"support calibration was fitted with embedder {wanted!r}, not {embedder.name!r}; refit it with "
                "`python benchmarks/bench_support.py --write-calibration` using this embedder, or use "
                "LexicalSupportChecker"
            )

    @property
    def feature_names(self) -> tuple[str, ...]:
        return COMBINED_FEATURES

    @property
    def name(self) -> str:
        return "calibrated-combined"

    def features(self, pairs: Sequence[Pair]) -> Floats:
        return support_features(pairs, self.tokenizer, self.embedder)


# ---------------------------------------------------------------------------------------------------- ExpertQA

# "[3] https://site/page" then, for retrieve-and-read and post-hoc systems, a blank line and the passage shown to
# the expert; gpt4 and bing_chat evidence is the URL alone, which cannot be checked offline.


def sigmoid(z: Floats) -> Floats:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)  # tanh form never overflows
