"""Patient cases: the set's reader refuses bad lines, and an answer is scored by what its first suggestion offers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.answering.answer import Answer, Flag, Reference, Suggestion
from rag.answering.patient import Patient
from rag.core.errors import ConfigError
from rag.datasets.patient_cases import PatientCase, read_patient_cases
from rag.evaluation.patient_cases import evaluate_patient_cases, score_case, summarize_patient_cases

VALVE = PatientCase(
    "pc-1",
    "Which anticoagulant for her atrial fibrillation?",
    Patient(conditions=("atrial fibrillation", "mechanical mitral valve")),
    "af",
    ("warfarin",),
    ("doac", "apixaban"),
)
CONTROL = PatientCase("pc-2", "First-line for cystitis?", Patient(age=40.0), "cystitis", ("nitrofurantoin",), ())


def answer(*texts: str, flags: tuple[tuple[Flag, ...], ...] = (), doc: str = "af") -> Answer:
    marks = flags or tuple(() for _ in texts)
    suggestions = tuple(Suggestion(t, ("E1",), 0.9, True, f) for t, f in zip(texts, marks, strict=True))
    ref = Reference("E1", "c1", doc, doc, "", None, "guideline", None, None, None, "", "", 0.5, True)
    return Answer("q", suggestions, (ref,), not texts, None, (), (), "extractive", "answer", None)


def test_a_warning_that_names_the_excluded_option_is_a_right_first_suggestion() -> None:
    warning = "DOACs are contraindicated in patients with mechanical heart valves; these patients need warfarin."
    record = score_case(VALVE, answer(warning), 0.1)
    assert record.right_first and not record.excluded_first and record.hit and not record.control


def test_offering_the_excluded_option_first_or_unflagged_later_is_caught() -> None:
    doac = "DOACs are preferred over warfarin for most patients."
    first = score_case(VALVE, answer(doac, "Warfarin with an INR of 2.5 to 3.5."), 0.1)
    assert first.excluded_first and not first.right_first
    later = score_case(VALVE, answer("Warfarin with an INR of 2.5 to 3.5.", doac), 0.1)
    assert later.right_first and later.excluded_unflagged == 1
    flagged = (), (Flag("contraindication", "mechanical heart valves"),)
    assert score_case(VALVE, answer("Warfarin, INR 2.5-3.5.", doac, flags=flagged), 0.1).excluded_unflagged == 0
    assert not score_case(VALVE, answer(), 0.1).right_first  # no suggestion: not right


def test_the_summary_splits_ruled_out_cases_from_controls_and_a_failure_does_not_stop_the_run() -> None:
    def ask(question: str, patient: Patient) -> Answer:
        if question.startswith("First"):
            raise ValueError("the model failed")
        return answer("Warfarin with an INR of 2.5 to 3.5.")

    records = evaluate_patient_cases([VALVE, CONTROL], ask)
    assert records[1].error == "the model failed" and records[1].abstained
    report = summarize_patient_cases(records)
    assert (report.cases, report.ruled_out_cases, report.errors) == (2, 1, 1)
    assert report.right_first_rate_ruled_out == 1.0 and report.right_first_rate_controls == 0.0
    assert report.right_first_rate == 0.5 and report.excluded_first_rate == 0.0


def write(tmp_path: Path, rows: list[object]) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_the_reader_keeps_good_cases_and_names_the_line_of_a_bad_one(tmp_path: Path) -> None:
    good = {"_id": "a", "text": "q?", "patient": {"allergies": ["penicillin"]}, "doc_id": "d",
            "expected": ["Nitrofurantoin"], "excluded": ["amoxicillin"]}  # fmt: skip
    cases = read_patient_cases(write(tmp_path, [good]))
    assert cases[0].expected == ("nitrofurantoin",) and cases[0].patient.allergies == ("penicillin",)
    bad_patient = good | {"_id": "b", "patient": {"age": "67"}}
    with pytest.raises(ConfigError, match=r"case 2: patient: invalid patient record"):
        read_patient_cases(write(tmp_path, [good, bad_patient]))
    with pytest.raises(ConfigError, match=r"case 1: missing field\(s\) excluded"):
        read_patient_cases(write(tmp_path, [{k: v for k, v in good.items() if k != "excluded"}]))
    with pytest.raises(ConfigError, match="expected must name at least one"):
        read_patient_cases(write(tmp_path, [good | {"expected": []}]))
    with pytest.raises(ConfigError, match="duplicate _id"):
        read_patient_cases(write(tmp_path, [good, good]))
    with pytest.raises(ConfigError, match="no cases"):
        read_patient_cases(write(tmp_path, []))


def test_the_command_line_refuses_two_sets_or_cases_without_an_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rag.cli.main import main

    cases = write(tmp_path, [])
    assert main(["eval", "answers", "--cases", str(cases), "--questions", str(cases), "--index", "x"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["eval", "answers", "--cases", str(cases)]) == 2
    assert "--cases needs the index it is asked of" in capsys.readouterr().err
