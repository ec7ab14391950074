"""Patient records: loading and validation, retrieval terms, the prompt block, and drug warnings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag.answering.patient import DrugFlag, DrugTable, Patient, drug_table, flag_drugs, load_patient
from rag.core.errors import ConfigError

GOOD = {
    "age": 67,
    "sex": "female",
    "pregnant": False,
    "weight_kg": 72.5,
    "egfr": 28,
    "hepatic_impairment": "none",
    "conditions": ["type 2 diabetes", "hypertension"],
    "medications": ["lisinopril 10 mg daily", "metformin 500 mg twice daily"],
    "allergies": ["penicillin"],
    "notes": "Lives with daughter Anna Kowalski, phone 555-123-4567.\nDOB 02/03/1957; MRN 88231907.",
    "names": ["Maria Kowalski", "Anna Kowalski"],
}


def write(tmp_path: Path, data: Any, name: str = "patient.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def kinds(flags: list[DrugFlag]) -> list[tuple[str, str, str]]:
    return [(f.kind, f.drug, f.because) for f in flags]


# --- loading and validation --------------------------------------------------------------------------------------


def test_load_a_good_file(tmp_path: Path) -> None:
    patient = load_patient(write(tmp_path, GOOD))
    assert patient.age == 67
    assert patient.egfr == 28
    assert patient.allergies == ("penicillin",)
    assert patient.names == ("Maria Kowalski", "Anna Kowalski")


def test_patient_is_frozen() -> None:
    patient = Patient(age=40)
    with pytest.raises(ValueError):
        patient.age = 41  # type: ignore[misc]


def test_unknown_key_names_the_key_the_file_and_the_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, {**GOOD, "blood_type": "A+"})
    with pytest.raises(ConfigError) as err:
        load_patient(path)
    message = str(err.value)
    assert str(path) in message
    assert "'blood_type'" in message
    assert "egfr" in message and "allergies" in message  # the fix: the keys that are accepted


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"age": "sixty"}, "age"),
        ({"age": "67"}, "age"),  # a number written as text is a data error, not something to guess at
        ({"pregnant": "yes"}, "pregnant"),
        ({"allergies": "penicillin"}, "allergies"),
        ({"conditions": ["asthma", 3]}, "conditions[1]"),
        ({"conditions": ["asthma", "  "]}, "conditions[1]"),
        ({"sex": "F"}, "sex"),
        ({"hepatic_impairment": "bad"}, "hepatic_impairment"),
        ({"age": 140}, "age"),
        ({"weight_kg": 0}, "weight_kg"),
    ],
)
def test_bad_types_and_ranges_name_the_field(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    path = write(tmp_path, {**GOOD, **change})
    with pytest.raises(ConfigError, match="invalid patient record") as err:
        load_patient(path)
    assert str(path) in str(err.value)
    assert f"{field}:" in str(err.value)


def test_pregnant_male_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"p\.json: .*pregnant is true but sex is 'male'"):
        Patient.from_mapping({"sex": "male", "pregnant": True}, origin="p.json")
    with pytest.raises(ConfigError, match="lactating is true but sex is 'male'"):
        Patient.from_mapping({"sex": "male", "lactating": True})
    assert Patient.from_mapping({"sex": "male", "pregnant": False}).pregnant is False
    assert Patient.from_mapping({"sex": "other", "pregnant": True}).pregnant is True


def test_negative_egfr_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"egfr: Input should be greater than or equal to 0 \(got -5\)"):
        load_patient(write(tmp_path, {"egfr": -5}))


def test_malformed_json_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '{"age": 67,')
    with pytest.raises(ConfigError, match="not valid JSON") as err:
        load_patient(path)
    assert str(path) in str(err.value)


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be an object"):
        load_patient(write(tmp_path, [1, 2]))


def test_missing_file_says_check_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read patient file.*check the path"):
        load_patient(tmp_path / "absent.json")


def test_empty_record_is_valid() -> None:
    patient = Patient.from_mapping({})
    assert patient.query_terms() == []
    assert patient.prompt_lines() == []


# --- retrieval terms and prompt block ----------------------------------------------------------------------------


def test_query_terms_add_population_words() -> None:
    patient = Patient(
        age=70, egfr=45, hepatic_impairment="moderate", conditions=["heart failure", "gout", "Heart Failure"]
    )
    assert patient.query_terms() == ["heart failure", "gout", "renal impairment", "hepatic impairment", "older adults"]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"age": 0.5}, ["infants", "children"]),
        ({"age": 8}, ["children"]),
        ({"age": 15}, ["children", "adolescents"]),
        ({"age": 40, "egfr": 75, "hepatic_impairment": "none"}, []),
        ({"sex": "female", "pregnant": True, "lactating": True}, ["pregnancy", "breastfeeding"]),
    ],
)
def test_query_terms_by_population(record: dict[str, Any], expected: list[str]) -> None:
    assert Patient.from_mapping(record).query_terms() == expected


def test_prompt_lines_are_compact_and_scrubbed(tmp_path: Path) -> None:
    lines = load_patient(write(tmp_path, GOOD)).prompt_lines()
    assert lines[:8] == [
        "Age: 67",
        "Sex: female",
        "Pregnant: no",
        "Weight: 72.5 kg",
        "eGFR: 28 mL/min/1.73m2 (severe renal impairment)",
        "Hepatic impairment: none",
        "Conditions: type 2 diabetes, hypertension",
        "Current medications: lisinopril 10 mg daily, metformin 500 mg twice daily",
    ]
    assert lines[8] == "Allergies: penicillin"
    assert lines[9] == "Notes: Lives with daughter [NAME], phone [PHONE]. DOB [DOB]; MRN [MRN]."
    assert not any("Kowalski" in line or "Anna" in line for line in lines)


@pytest.mark.parametrize(
    ("egfr", "category"),
    [(95, "normal renal function"), (70, "mildly reduced renal function"), (45, "moderate renal impairment"),
     (15, "severe renal impairment"), (9.5, "kidney failure")],
)  # fmt: skip
def test_egfr_category(egfr: float, category: str) -> None:
    assert Patient(egfr=egfr).prompt_lines() == [f"eGFR: {egfr:g} mL/min/1.73m2 ({category})"]


def test_infant_age_is_shown_in_months() -> None:
    assert Patient(age=0.75).prompt_lines() == ["Age: 9 months"]


# --- drug flags --------------------------------------------------------------------------------------------------


def test_allergy_exact_match_is_case_insensitive_and_plural_tolerant() -> None:
    patient = Patient(allergies=["Ibuprofen"])
    assert kinds(flag_drugs("Take IBUPROFEN 400 mg.", patient)) == [("allergy", "IBUPROFEN", "Ibuprofen")]
    assert kinds(flag_drugs("avoid ibuprofens", patient)) == [("allergy", "ibuprofens", "Ibuprofen")]
    assert kinds(flag_drugs("Advil 200 mg", patient)) == [("allergy", "Advil", "Ibuprofen")]  # brand name


def test_penicillin_allergy_flags_the_whole_class() -> None:
    patient = Patient(allergies=["penicillin (rash as a child)"])
    text = "Give amoxicillin, or ampicillin; piperacillin-tazobactam if severe; Augmentin or amoxicillin/clavulanate."
    flags = flag_drugs(text, patient)
    assert [f.drug for f in flags] == ["amoxicillin", "ampicillin", "piperacillin-tazobactam", "Augmentin"]
    assert {f.kind for f in flags} == {"allergy"}
    assert "same class (penicillins)" in flags[0].message
    assert "amoxicillin-clavulanate" in flags[3].message


@pytest.mark.parametrize(
    "spelling",
    [
        "co-trimoxazole",
        "Cotrimoxazole",
        "trimethoprim-sulfamethoxazole",
        "sulfamethoxazole/trimethoprim",
        "TMP/SMX",
        "Bactrim",
    ],
)
def test_sulfa_allergy_flags_co_trimoxazole_in_any_spelling(spelling: str) -> None:
    flags = flag_drugs(f"Options: {spelling} DS twice daily.", Patient(allergies=["sulfa"]))
    assert kinds(flags) == [("allergy", spelling, "sulfa")]
    assert "same class (sulfonamides)" in flags[0].message


def test_spellings_of_one_drug_give_one_flag() -> None:
    flags = flag_drugs("co-trimoxazole (Bactrim, TMP/SMX)", Patient(allergies=["sulfa"]))
    assert kinds(flags) == [("allergy", "co-trimoxazole", "sulfa")]


def test_nsaid_allergy_flags_aspirin_and_other_nsaids() -> None:
    patient = Patient(allergies=["NSAIDs"])
    flags = flag_drugs("naproxen, diclofenac gel or low-dose aspirin; paracetamol is fine", patient)
    assert [(f.kind, f.drug) for f in flags] == [
        ("allergy", "naproxen"),
        ("allergy", "diclofenac"),
        ("allergy", "aspirin"),
    ]


def test_cephalosporin_with_penicillin_allergy_is_cross_reactivity() -> None:
    flags = flag_drugs("Switch to ceftriaxone 1 g daily or cefalexin.", Patient(allergies=["amoxicillin"]))
    assert kinds(flags) == [
        ("cross_reactivity", "ceftriaxone", "amoxicillin"),
        ("cross_reactivity", "cefalexin", "amoxicillin"),
    ]
    assert "cephalosporins" in flags[0].message and "1-2%" in flags[0].message


def test_current_medication_and_duplicate_class() -> None:
    patient = Patient(medications=["Lisinopril 20 mg once daily", "atorvastatin 40 mg"])
    flags = flag_drugs("Continue lisinopril; add enalapril? A statin such as rosuvastatin.", patient)
    assert kinds(flags) == [
        ("current_medication", "lisinopril", "Lisinopril 20 mg once daily"),
        ("duplicate_class", "enalapril", "Lisinopril 20 mg once daily"),
        ("current_medication", "statin", "atorvastatin 40 mg"),
        ("duplicate_class", "rosuvastatin", "atorvastatin 40 mg"),
    ]
    assert "duplicates the class (ACE inhibitors)" in flags[1].message


def test_brand_of_a_current_medication_is_the_same_drug() -> None:
    flags = flag_drugs("Start Eliquis 5 mg twice daily", Patient(medications=["apixaban"]))
    assert kinds(flags) == [("current_medication", "Eliquis", "apixaban")]


def test_therapeutic_groups_warn_of_duplicates_but_not_of_allergy() -> None:
    assert kinds(flag_drugs("add clopidogrel", Patient(medications=["aspirin 81 mg"]))) == [
        ("duplicate_class", "clopidogrel", "aspirin 81 mg")
    ]
    assert flag_drugs("add clopidogrel", Patient(allergies=["aspirin"])) == []


def test_unknown_substances_match_as_whole_words() -> None:
    patient = Patient(allergies=["latex", "shellfish (hives)"], medications=["vitamin D 1000 IU"])
    flags = flag_drugs("Use latex-free gloves. Latex gloves are not ok. Avoid shellfish. Vitamin D daily.", patient)
    assert kinds(flags) == [
        ("allergy", "Latex", "latex"),
        ("allergy", "shellfish", "shellfish (hives)"),
        ("current_medication", "Vitamin D", "vitamin D 1000 IU"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Penicillamine 250 mg for Wilson disease",  # shares letters with penicillin, different drug
        "non-penicillin regimens such as doxycycline",
        "Azithromycin 500 mg then 250 mg daily",
        "Paracetamol 1 g four times daily",
        "Nystatin suspension for thrush",  # contains "statin"
        "a penicillin-allergic patient",
        "aspiring athletes",
    ],
)
def test_no_false_flags(text: str) -> None:
    patient = Patient(allergies=["penicillin", "aspirin"], medications=["atorvastatin"])
    assert flag_drugs(text, patient) == []


def test_each_drug_is_flagged_once_per_record_entry() -> None:
    flags = flag_drugs("amoxicillin now, amoxicillin later, Amoxicillin again", Patient(allergies=["penicillin"]))
    assert len(flags) == 1


def test_no_record_no_flags() -> None:
    assert flag_drugs("amoxicillin 500 mg", Patient()) == []


def test_packaged_table_covers_the_common_classes() -> None:
    table = drug_table()
    classes = {c for term in table.terms.values() for c in term.classes}
    assert len(classes) >= 25
    for name in ("penicillins", "cephalosporins", "NSAIDs", "ACE inhibitors", "DOACs", "SSRIs", "opioids"):
        assert name in classes
    assert table.lookup("Augmentin") == table.lookup("amoxicillin-clavulanate")


def test_a_bad_table_is_reported_with_its_origin() -> None:
    with pytest.raises(ConfigError, match=r"t\.json: synonym 'foo' points to 'bar'"):
        DrugTable.from_mapping(
            {"version": 1, "classes": {"x": {"members": ["a"]}}, "synonyms": {"foo": "bar"}}, origin="t.json"
        )
    with pytest.raises(ConfigError, match=r"t\.json: invalid drug table: unknown key 'colour'"):
        DrugTable.from_mapping({"version": 1, "classes": {}, "colour": 1}, origin="t.json")
    with pytest.raises(ConfigError, match="unknown class"):
        bad = {
            "version": 1,
            "classes": {"x": {"members": ["a"]}},
            "cross_reactivity": [{"allergy": "x", "drug": "y", "note": ""}],
        }
        DrugTable.from_mapping(bad, origin="t.json")


def test_a_custom_table_can_be_passed() -> None:
    table = DrugTable.from_mapping({"version": 1, "classes": {"widgets": {"members": ["widgetol", "gadgetol"]}}})
    flags = flag_drugs("try gadgetol", Patient(allergies=["widgetol"]), table)
    assert kinds(flags) == [("allergy", "gadgetol", "widgetol")]


def test_import_reads_no_table() -> None:
    code = "import rag.answering.patient as p; assert p.drug_table.cache_info().currsize == 0"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
