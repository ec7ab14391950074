"""Identifier scrubbing: every identifier format below is removed, and clinical content survives verbatim."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from rag.text.privacy import IdentifierKind, scrub

# (text, kind, the identifying part that must disappear)
IDENTIFIERS: list[tuple[str, IdentifierKind, str]] = [
    # record numbers
    ("MRN: 12345678 admitted via ED", "MRN", "12345678"),
    ("mrn 0045-7781-22 on the wristband", "MRN", "0045-7781-22"),
    ("Medical record number A1234567.", "MRN", "A1234567"),
    ("Patient ID 00981234, bed 4", "MRN", "00981234"),
    ("Hospital No: RX-123456 transferred", "MRN", "RX-123456"),
    ("NHS number 943 476 5919 confirmed", "MRN", "943 476 5919"),
    ("NHS No. 9434765919", "MRN", "9434765919"),
    ("ref 123456789012 on file", "MRN", "123456789012"),
    # phone numbers
    ("Call 555-123-4567 after 5pm", "PHONE", "555-123-4567"),
    ("phone: (555) 123-4567 ext. 22", "PHONE", "123-4567"),
    ("daughter on +1 555 123 4567", "PHONE", "555 123 4567"),
    ("UK contact +44 20 7946 0958", "PHONE", "7946 0958"),
    ("reach at +33 1 23 45 67 89 tonight", "PHONE", "23 45 67 89"),
    ("tel 020 7946 0958", "PHONE", "7946 0958"),
    ("mobile 07700 900123", "PHONE", "900123"),
    ("Indian number +91-98765-43210", "PHONE", "98765-43210"),
    ("office 555.123.4567 x123", "PHONE", "555.123.4567"),
    ("tel: 555-1234", "PHONE", "555-1234"),
    ("toll-free 1-800-555-0199", "PHONE", "800-555-0199"),
    # e-mail, URL, IP
    ("email john.smith@example.org today", "EMAIL", "john.smith@example.org"),
    ("write to J_Doe+test@mail.hospital.co.uk.", "EMAIL", "J_Doe+test@mail.hospital.co.uk"),
    ("portal https://portal.example.org/patient/123?id=5.", "URL", "portal.example.org"),
    ("see www.example-clinic.com for results", "URL", "example-clinic.com"),
    ("login from 192.168.1.20 flagged", "IP", "192.168.1.20"),
    ("device fe80::1ff:fe23:4567:890a paired", "IP", "fe80::1ff:fe23:4567:890a"),
    # dates of birth and other full dates
    ("DOB: 01/02/1960", "DOB", "01/02/1960"),
    ("Date of birth 3 March 1960", "DOB", "3 March 1960"),
    ("born on March 3rd, 1960 in Ohio", "DOB", "March 3rd, 1960"),
    ("D.O.B. 1960-03-03", "DOB", "1960-03-03"),
    ("DOB-03-MAR-60", "DOB", "03-MAR-60"),
    ("birthdate: 7.11.1948", "DOB", "7.11.1948"),
    ("seen on 2021-05-04 in clinic", "DATE", "2021-05-04"),
    ("admitted on 12/25/2020.", "DATE", "12/25/2020"),
    ("discharged 5 Jan 2022 home", "DATE", "5 Jan 2022"),
    ("October 12, 2019 visit", "DATE", "October 12, 2019"),
    ("colonoscopy 15.03.2019 normal", "DATE", "15.03.2019"),
    ("on the 4th of July, 2018 she fell", "DATE", "4th of July, 2018"),
    # addresses and ZIP codes
    ("lives at 221B Baker Street with her son", "ADDRESS", "221B Baker Street"),
    ("123 Main St, Apt 4B", "ADDRESS", "123 Main St"),
    ("moved to 45 Old Mill Rd last year", "ADDRESS", "45 Old Mill Rd"),
    ("mail to P.O. Box 1234", "ADDRESS", "Box 1234"),
    ("works at 1600 Pennsylvania Ave NW", "ADDRESS", "1600 Pennsylvania Ave"),
    ("88 Elm Drive, Unit 3", "ADDRESS", "88 Elm Drive"),
    ("Springfield, IL 62704", "ZIP", "62704"),
    ("Austin, Texas 78701-1234", "ZIP", "78701"),
    ("zip code 90210", "ZIP", "90210"),
    # social security numbers
    ("SSN 123-45-6789 on file", "SSN", "123-45-6789"),
    ("social security number 123 45 6789", "SSN", "123 45 6789"),
    ("insurance form 078-05-1120", "SSN", "078-05-1120"),
    # names without being marked: labels and titles
    ("Name: John Smith, 67", "NAME", "John Smith"),
    ("Patient name - O'Brien, seen today", "NAME", "O'Brien"),
    ("Mr. Jones reports chest pain", "NAME", "Jones"),
    ("Seen by Dr. A. Patel", "NAME", "Patel"),
    ("Mrs Jane Doe attended", "NAME", "Jane Doe"),
    ("Seen 12 May Dr Jones", "NAME", "Jones"),  # a doctor, not "12 May Dr(ive)"
]

# Clinical text that looks numeric or date-like but identifies nobody.
CLINICAL = [
    "Amoxicillin 500 mg twice daily for 7 days",
    "a 5-mg tablet at night",
    "eGFR 28 mL/min/1.73m2",
    "HbA1c 7.5% last quarter",
    "BP 150/90 mmHg on three visits",
    "a 67-year-old man with CKD",
    "diagnosed in 2019",
    "Viral load 1500000 copies/mL",
    "benzathine penicillin 2400000 units IM",
    "Vitamin D 50000 IU weekly",
    "oxycodone/acetaminophen 5/325 mg every 6 hours",
    "INR 2.5 on 3/12",
    "follow-up 12/2024",
    "Platelets 150 x 10^9/L",
    "ICD-10 E11.9",
    "Insulin glargine 10 units at 22:00",
    "Admit to ward 7B, bed 12",
    "NYHA class III",
    "G3P2 at 32 weeks",
    "Na 128, K 5.9, Cr 2.1",
    "Metoprolol 25 mg BID",
    "COVID-19 in March 2020",
    "walked 2 miles down the road",
    "took 2 tablets on the way home",
    "St John's wort 300 mg",
    "Vancomycin trough 15-20 mg/L",
    "doses at 0, 1 and 6 months",
    "Temp 38.5 C, HR 110, RR 22, SpO2 94%",
    "Prednisone 40 mg daily x 5 days",
    "adrenaline 1:10000 solution",
    "Dose 1,000,000 units",
    "the patient no longer smokes",
    "call back in 2 weeks",
    "patient number 3 of 12",
    "Hemoglobin 9.8 g/dL",
    "drug name: Metformin",
    "heparin 5000 units subcutaneously",
    "since the 2019-2020 season",
    "born in 1960",
    "reviewed on 12 May, repeat in June",
    "Apgar 8/9 at 1 and 5 minutes",
    "BMI 31.2 kg/m2",
    "INR target 2.0-3.0",
    "Tdap at 27-36 weeks",
    "Amoxicillin 875/125 mg",
]


def test_identifier_and_clinical_sets_are_large_enough() -> None:
    assert len(IDENTIFIERS) >= 40
    assert len(CLINICAL) >= 25


@pytest.mark.parametrize(("text", "kind", "secret"), IDENTIFIERS, ids=[t for t, _, _ in IDENTIFIERS])
def test_identifier_is_removed(text: str, kind: IdentifierKind, secret: str) -> None:
    result = scrub(text)
    assert secret.lower() not in result.text.lower()
    assert f"[{kind}]" in result.text
    assert result.counts == {kind: 1}


@pytest.mark.parametrize("text", CLINICAL)
def test_clinical_text_survives_unchanged(text: str) -> None:
    result = scrub(text)
    assert result.text == text
    assert result.counts == {}


def test_labels_stay_so_the_reader_knows_what_was_removed() -> None:
    assert scrub("DOB: 01/02/1960").text == "DOB: [DOB]"
    assert scrub("MRN 12345678").text == "MRN [MRN]"
    assert scrub("Springfield, IL 62704").text == "Springfield, IL [ZIP]"
    assert scrub("Dr. Patel").text == "Dr. [NAME]"


def test_a_realistic_note_counts_each_kind() -> None:
    note = (
        "Name: Maria Gonzalez  DOB: 04/17/1952  MRN: 00839211\n"
        "Address: 14 Cedar Lane, Apt 2, Madison, WI 53703. Phone (608) 555-0143, alt +1 608 555 0199.\n"
        "Email maria.g@example.com. Seen 2023-11-02 by Dr. Okafor; next visit January 5, 2024.\n"
        "72-year-old with eGFR 41, HbA1c 8.1%, BP 142/88. Metformin 500 mg twice daily for 3 months."
    )
    result = scrub(note)
    assert result.counts == {"NAME": 2, "DOB": 1, "MRN": 1, "ADDRESS": 1, "ZIP": 1, "PHONE": 2, "EMAIL": 1, "DATE": 2}
    assert result.total == 11
    for secret in (
        "Gonzalez",
        "04/17/1952",
        "00839211",
        "Cedar",
        "53703",
        "555-0143",
        "maria.g",
        "Okafor",
        "2023-11-02",
    ):
        assert secret not in result.text
    assert "72-year-old with eGFR 41, HbA1c 8.1%, BP 142/88. Metformin 500 mg twice daily for 3 months." in result.text


def test_marked_names_are_removed_case_insensitively_as_whole_words() -> None:
    result = scrub(
        "JOHN SMITH said Smith's wife and john agree; J. Smith signed. Smithson and Johnny unaffected.", ["John Smith"]
    )
    assert result.text == "[NAME] said [NAME]'s wife and [NAME] agree; [NAME] signed. Smithson and Johnny unaffected."
    assert result.counts == {"NAME": 4}


def test_marked_names_accept_a_single_string_and_skip_titles_and_initials() -> None:
    assert scrub("Ann called about her annual review", "Ann").text == "[NAME] called about her annual review"
    assert scrub("Mr A Brown, A-line in place", ["Mr A Brown"]).text == "Mr [NAME], A-line in place"


def test_marked_and_titled_name_counts_once() -> None:
    result = scrub("Dr. Patel reviewed", ["Patel"])
    assert result.text == "Dr. [NAME] reviewed"
    assert result.counts == {"NAME": 1}


def test_scrubbing_twice_changes_nothing_more() -> None:
    once = scrub("Name: Jane Doe, DOB 3/4/1950, phone 555-123-4567, MRN 1234567", ["Jane Doe"])
    twice = scrub(once.text, ["Jane Doe"])
    assert twice.text == once.text
    assert twice.counts == {}


def test_pathological_input_is_fast() -> None:
    nasty = "+" + "1 " * 3000 + "9" * 3000 + " " + "Aa " * 3000 + "1" * 40 + "." * 2000 + "x@" * 2000
    start = time.perf_counter()
    scrub(nasty, ["Aa Bb"])
    assert time.perf_counter() - start < 2.0


def test_import_compiles_nothing() -> None:
    code = "import rag.text.privacy as p; assert p._rules.cache_info().currsize == 0"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
