"""Citation support checker: features, scoring, the dose rule, calibration files and the fit. No real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rag.checking.support import (
    COMBINED_FEATURES,
    LEXICAL_FEATURES,
    FitCounts,
    LexicalSupportChecker,
    SupportCalibration,
    SupportChecker,
    SupportScorer,
    clean_claim,
    doses_in,
    lexical_features,
    load_calibration,
    load_calibrations,
    numbers_in,
    write_calibrations,
)
from rag.core.config import DEFAULT_EMBEDDER
from rag.core.errors import ConfigError
from rag.datasets.expertqa import read_expertqa
from rag.testing import HashEmbedder
from rag.text.tokenize import ClinicalTokenizer, TokenizerConfig
from rag.training.calibration import fit_calibration

CLAIM = "Amoxicillin 500 mg three times daily is first-line treatment for acute otitis media."
WITH_DOSE = "For acute otitis media, first-line treatment is amoxicillin 500 mg three times daily for adults."
WITHOUT_DOSE = "For acute otitis media, first-line treatment is amoxicillin three times daily for adults."
UNRELATED = "The hospital cafeteria opens at seven and serves breakfast until ten on weekdays."

# Hand-set weights with the expected signs, so behaviour is tested apart from what ExpertQA taught the shipped file.
_WEIGHTS = {"token_coverage": 1.5, "window_coverage": 1.0, "number_missing": -1.0, "negation_mismatch": -0.5,
            "embed_max_cos": 1.0, "embed_passage_cos": 0.5}  # fmt: skip


def toy_calibration(features: tuple[str, ...], embedder: str | None) -> SupportCalibration:
    return SupportCalibration(
        features=features,
        mean=tuple(0.5 for _ in features),
        scale=tuple(0.25 for _ in features),
        weights=tuple(_WEIGHTS[f] for f in features),
        intercept=0.0,
        threshold=0.5,
        embedder=embedder,
        l2=1.0,
        fitted_on=FitCounts("toy", 4, 2, 2, ("Complete",)),
        fitted_at="2025-01-01",
    )


@pytest.fixture()
def embedder() -> HashEmbedder:
    return HashEmbedder(dim=64)


@pytest.fixture()
def checker(embedder: HashEmbedder) -> SupportChecker:
    return SupportChecker(embedder, toy_calibration(COMBINED_FEATURES, embedder.name))


@pytest.fixture()
def lexical() -> LexicalSupportChecker:
    return LexicalSupportChecker(toy_calibration(LEXICAL_FEATURES, None))


def test_identical_sentence_scores_high_and_unrelated_low(checker: SupportChecker) -> None:
    identical, unrelated = checker.score([(CLAIM, CLAIM), (CLAIM, UNRELATED)])
    assert checker.supported(identical) and identical > 0.9
    assert not checker.supported(unrelated) and unrelated < 0.1


def test_lexical_checker_separates_identical_from_unrelated(lexical: LexicalSupportChecker) -> None:
    identical, unrelated = lexical.score([(CLAIM, f"Background. {CLAIM} More text."), (CLAIM, UNRELATED)])
    assert lexical.supported(identical) and not lexical.supported(unrelated)
    assert isinstance(lexical, SupportScorer)


def test_dose_absent_from_evidence_scores_lower(checker: SupportChecker, lexical: LexicalSupportChecker) -> None:
    for scorer in (checker, lexical):
        present, absent = scorer.score([(CLAIM, WITH_DOSE), (CLAIM, WITHOUT_DOSE)])
        assert absent < present
        assert absent == 0.0  # the dose rule: an unstated dose is never supported


def test_dose_lowers_the_score_through_the_model_without_the_rule(embedder: HashEmbedder) -> None:
    checker = SupportChecker(embedder, toy_calibration(COMBINED_FEATURES, embedder.name), dose_rule=False)
    present, absent = checker.score([(CLAIM, WITH_DOSE), (CLAIM, WITHOUT_DOSE)])
    assert 0.0 < absent < present


def test_dose_rule_holds_with_the_shipped_lexical_calibration() -> None:
    shipped = LexicalSupportChecker()
    present, absent = shipped.score([(CLAIM, WITH_DOSE), (CLAIM, "Amoxicillin 250 mg three times daily.")])
    assert absent == 0.0 < present


def test_scores_are_probabilities_and_empty_input_is_empty(checker: SupportChecker) -> None:
    scores = checker.score([(CLAIM, WITH_DOSE), ("", ""), (CLAIM, UNRELATED)])
    assert scores.dtype == np.float64 and scores.shape == (3,)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert checker.score([]).shape == (0,)


def test_units_numbers_and_citation_markers() -> None:
    assert doses_in("take 0.5mcg/kg, then 2 grams, then 500-mg; 1,000 IU") == {
        ("0.5", "mcg"), ("2", "g"), ("500", "mg"), ("1000", "iu"),
    }  # fmt: skip
    assert doses_in("HbA1c 6.5% and grade 1") == set()
    assert numbers_in("COVID-19 and vitamin B12 in a 12-year-old") == {"12"}
    assert "3" in numbers_in("three doses", spelled=True)
    assert clean_claim("- **Rest** helps fatigue [1][2, 3].") == "Rest helps fatigue ."


def test_calibration_json_round_trip(tmp_path: Path) -> None:
    calibrations = {
        "combined": toy_calibration(COMBINED_FEATURES, "m"),
        "lexical": toy_calibration(LEXICAL_FEATURES, None),
    }
    path = tmp_path / "calibration.json"
    write_calibrations(path, calibrations)
    assert load_calibrations(path) == calibrations
    assert load_calibration("lexical", path) == calibrations["lexical"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "other", "models": {}}', "not a support calibration"),
        ("BROKEN_WEIGHTS", "must be known"),
        ("MISSING_KEY", "malformed support calibration"),
        ("BAD_THRESHOLD", "the threshold in"),
    ],
)
def test_malformed_calibration_is_rejected_with_file_and_fix(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "calibration.json"
    good = toy_calibration(LEXICAL_FEATURES, None).to_json()
    broken = {
        "BROKEN_WEIGHTS": {**good, "weights": [1.0]},
        "MISSING_KEY": {k: v for k, v in good.items() if k != "intercept"},
        "BAD_THRESHOLD": {**good, "threshold": 1.5},
    }
    if content in broken:
        content = json.dumps({"format": "clinrag-support-calibration/1", "models": {"lexical": broken[content]}})
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=problem) as info:
        load_calibrations(path)
    assert str(path) in str(info.value) and ("refit" in str(info.value) or "restore" in str(info.value))


def test_missing_calibration_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read support calibration"):
        load_calibrations(tmp_path / "absent.json")
    with pytest.raises(ConfigError, match="no support model 'other'"):
        load_calibration("other")


def test_shipped_calibration_records_what_it_was_fitted_on() -> None:
    shipped = load_calibrations()
    assert set(shipped) == {"combined", "lexical"}
    assert shipped["combined"].embedder == DEFAULT_EMBEDDER and shipped["combined"].features == COMBINED_FEATURES
    assert shipped["lexical"].embedder is None and shipped["lexical"].features == LEXICAL_FEATURES
    for calibration in shipped.values():
        assert calibration.fitted_on.pairs > calibration.fitted_on.supported > 0 and calibration.fitted_at


def test_calibration_of_another_embedder_or_checker_is_refused(embedder: HashEmbedder) -> None:
    with pytest.raises(ConfigError, match="fitted with embedder"):
        SupportChecker(embedder)  # the shipped file is for all-MiniLM-L6-v2
    with pytest.raises(ConfigError, match="cannot compute"):
        LexicalSupportChecker(toy_calibration(COMBINED_FEATURES, embedder.name))


def test_fitted_logistic_regression_separates_a_toy_set() -> None:
    x = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.7, 0.2], [0.8, 0.1], [0.9, 0.3]])
    y = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    names = ("token_coverage", "number_missing")
    calibration = fit_calibration(x, y, feature_names=names, l2=0.1)
    assert ((calibration.probabilities(x) >= calibration.threshold) == (y == 1)).all()
    assert calibration.weights[0] > 0 > calibration.weights[1]


def test_fit_keeps_expected_signs_unless_told_not_to() -> None:
    # Coverage anti-correlated with support in this toy set: the constrained fit drops it instead of inverting it.
    x = np.array([[0.9], [0.8], [0.7], [0.3], [0.2], [0.1]])
    y = np.array([0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    assert fit_calibration(x, y, feature_names=("token_coverage",)).weights == (0.0,)
    assert fit_calibration(x, y, feature_names=("token_coverage",), constrain_signs=False).weights[0] < 0
    with pytest.raises(ValueError, match="both classes"):
        fit_calibration(x, np.ones(6), feature_names=("token_coverage",))


def test_expertqa_reader_keeps_only_judged_pairs_with_passage_text(tmp_path: Path) -> None:
    claims = [
        {"claim_string": "A [1].", "evidence": ["[1] https://a.org/x\n\nA is true."], "support": "Complete"},
        {"claim_string": "B [2].", "evidence": ["[2] https://b.org/y"], "support": "Complete"},
        {"claim_string": "C.", "evidence": [], "support": "Missing"},
        {"claim_string": "D [1].", "evidence": ["[1] https://a.org/x\n\nD maybe."], "support": "N/A"},
        {"claim_string": "E [1].", "evidence": ["[1] https://a.org/x\n\nE, partly."], "support": "Partial"},
    ]
    row = {"question": "q", "answers": {"rr_gs_gpt4": {"claims": claims}}}
    path = tmp_path / "expertqa.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    readout = read_expertqa(path)
    assert (readout.claims, readout.url_only, readout.uncited, readout.unjudged) == (5, 1, 1, 1)
    assert [(e.evidence, e.label) for e in readout.examples] == [("A is true.", "Complete"), ("E, partly.", "Partial")]
    assert [e.supported() for e in readout.examples] == [True, False]
    assert readout.examples[1].supported(("Complete", "Partial"))


def test_expertqa_reader_rejects_other_formats(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not native ExpertQA"):
        read_expertqa(path)


def test_expertqa_dev_pair_counts(shared_data: Path) -> None:
    readout = read_expertqa(shared_data / "expertqa" / "expertqa_medicine_dev.jsonl")
    labels = [e.label for e in readout.examples]
    assert (len(labels), labels.count("Complete"), labels.count("Partial"), labels.count("Incomplete")) == (
        141,
        99,
        6,
        36,
    )
    assert len({e.question for e in readout.examples}) == 31


def test_lexical_features_see_coverage_numbers_and_negation() -> None:
    tokenizer = ClinicalTokenizer(TokenizerConfig(stem=True, stopwords=True))
    claim = "Aspirin is not recommended for children under 12."
    coverage, window, numbers, negation = lexical_features(
        claim, "Aspirin is recommended for children under 12.", tokenizer
    )
    assert coverage == window == pytest.approx(0.8)  # all but "not"
    assert numbers == 0.0 and negation == 1.0
    assert lexical_features(claim, "Aspirin isn’t recommended for children under 16.", tokenizer)[2:] == (1.0, 0.0)
