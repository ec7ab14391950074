"""Patient context for a question: a typed record, retrieval terms, the prompt's patient block, and drug warnings.

`flag_drugs` reads an answer (or any text) for drugs that clash with the record: a drug the patient is allergic
to, one in the same class or a cross-reacting class, one the patient already takes, or a second drug of a class
the patient already takes. The class table is `rag/data/drug_classes.json`, curated and deliberately small:
the flags are prompts for a clinician's check, not a complete interaction checker.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from rag.core.errors import ConfigError
from rag.text.privacy import scrub

Sex = Literal["female", "male", "other"]
HepaticImpairment = Literal["none", "mild", "moderate", "severe"]
FlagKind = Literal["allergy", "cross_reactivity", "current_medication", "duplicate_class"]

_Item = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Patient(_Strict):
    """What is known about the patient; every field is optional because questions often carry only a few facts."""

    # strict numbers and booleans: "67" or "yes" in a record is a data error, not something to guess at.
    age: float | None = Field(None, ge=0, le=130, strict=True)  # years; 0.5 = six months
    sex: Sex | None = None
    pregnant: bool | None = Field(None, strict=True)
    lactating: bool | None = Field(None, strict=True)
    weight_kg: float | None = Field(None, gt=0, le=650, strict=True)
    egfr: float | None = Field(None, ge=0, le=200, strict=True)  # mL/min/1.73m2
    hepatic_impairment: HepaticImpairment | None = None
    conditions: tuple[_Item, ...] = ()
    medications: tuple[_Item, ...] = ()
    allergies: tuple[_Item, ...] = ()
    notes: str = Field("", strict=True, max_length=20_000)
    names: tuple[_Item, ...] = ()  # the patient's (and relatives') names, removed from notes before prompting

    @model_validator(mode="after")
    def _consistent(self) -> Patient:
        if self.sex == "male" and (self.pregnant or self.lactating):
            state = "pregnant" if self.pregnant else "lactating"
            raise ValueError(f"{state} is true but sex is 'male'; correct one of the two fields")
        return self

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, origin: str = "patient") -> Patient:
        """Validate a decoded record; errors name `origin`, the field path and the fix."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f'{origin}: a patient record must be an object like {{"age": 67}}, not {type(data).__name__}'
            )
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = "; ".join(_describe(err, tuple(cls.model_fields)) for err in exc.errors())
            raise ConfigError(
                f"{origin}: invalid patient record: {problems}. Correct the fields named; "
                "rag.answering.patient.Patient "
                "lists every key with its type and range"
            ) from exc

    def query_terms(self) -> list[str]:
        """Conditions plus context words that guidelines use for special populations, to widen retrieval."""
        terms = list(self.conditions)
        if self.pregnant:
            terms.append("pregnancy")
        if self.lactating:
            terms.append("breastfeeding")
        if self.egfr is not None and self.egfr < 60:
            terms.append("renal impairment")
        if self.hepatic_impairment not in (None, "none"):
            terms.append("hepatic impairment")
        terms.extend(_age_terms(self.age))
        return _unique(terms)

    def prompt_lines(self) -> list[str]:
        """A compact description for the prompt's patient block; notes are scrubbed of identifiers first."""
        lines: list[str] = []
        if self.age is not None:
            lines.append(f"Age: {_format_age(self.age)}")
        if self.sex is not None:
            lines.append(f"Sex: {self.sex}")
        if self.pregnant is not None:
            lines.append(f"Pregnant: {'yes' if self.pregnant else 'no'}")
        if self.lactating is not None:
            lines.append(f"Breastfeeding: {'yes' if self.lactating else 'no'}")
        if self.weight_kg is not None:
            lines.append(f"Weight: {self.weight_kg:g} kg")
        if self.egfr is not None:
            lines.append(f"eGFR: {self.egfr:g} mL/min/1.73m2 ({_renal_category(self.egfr)})")
        if self.hepatic_impairment is not None:
            lines.append(f"Hepatic impairment: {self.hepatic_impairment}")
        for label, items in (("Conditions", self.conditions), ("Current medications", self.medications)):
            if items:
                lines.append(f"{label}: {', '.join(items)}")
        if self.allergies:
            lines.append(f"Allergies: {', '.join(self.allergies)}")
        notes = " ".join(self.notes.split())  # one line: the block is line-oriented
        if notes:
            lines.append(f"Notes: {scrub(notes, self.names).text}")
        return lines


def load_patient(path: str | os.PathLike[str]) -> Patient:
    """Read a patient record from a JSON file."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read patient file ({exc.strerror}); check the path") from exc
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{file}: not valid JSON ({exc}); fix the syntax, e.g. with `python -m json.tool`") from exc
    return Patient.from_mapping(data, origin=str(file))


def _describe(err: Mapping[str, Any], allowed: tuple[str, ...]) -> str:
    """One validation problem as "field path: what is wrong (got value)", with the fix for unknown keys."""
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in err["loc"]).lstrip(".")
    if err["type"] == "extra_forbidden":
        return f"unknown key {path!r}; remove it or use one of: {', '.join(allowed)}"
    problem: str = err["msg"].removeprefix("Value error, ")
    if not path:  # a whole-record check: its message names the fields involved
        return problem
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return f"{path}: {problem} (got {got})"


def _age_terms(age: float | None) -> list[str]:
    if age is None:
        return []
    if age < 1:
        return ["infants", "children"]
    if age < 12:
        return ["children"]
    if age < 18:
        return ["children", "adolescents"]
    return ["older adults"] if age >= 65 else []


def _format_age(age: float) -> str:
    if age < 2:  # dosing for infants is by month
        months = round(age * 12)
        return f"{months} month{'s' if months != 1 else ''}"
    return f"{age:g}"


def _renal_category(egfr: float) -> str:
    """KDIGO GFR categories, worded the way drug labels word dose adjustments."""
    if egfr >= 90:
        return "normal renal function"
    if egfr >= 60:
        return "mildly reduced renal function"
    if egfr >= 30:
        return "moderate renal impairment"
    if egfr >= 15:
        return "severe renal impairment"
    return "kidney failure"


def _unique(items: list[str]) -> list[str]:
    """Drop repeats case-insensitively, keeping the first spelling and the order."""
    first: dict[str, str] = {}
    for item in items:
        first.setdefault(item.lower(), item)
    return list(first.values())


# --- drug classes ------------------------------------------------------------------------------------------------


class _ClassEntry(_Strict):
    aliases: tuple[str, ...] = ()
    members: tuple[str, ...] = Field(min_length=1)
    shared_allergy: bool = True


class _CrossEntry(_Strict):
    allergy: str
    drug: str
    note: str


class _TableFile(_Strict):
    version: Literal[1]
    about: str = ""
    classes: dict[str, _ClassEntry]
    synonyms: dict[str, str] = Field(default_factory=dict)
    cross_reactivity: tuple[_CrossEntry, ...] = ()


@dataclass(frozen=True)
class _Term:
    drug: str | None  # canonical member name; None when the term names a whole class ("NSAIDs")
    classes: frozenset[str]


@dataclass(frozen=True)
class DrugTable:
    """Drug terms (members, brands, class words) with their classes, and which classes cross-react."""

    terms: Mapping[str, _Term]  # keyed by _compact(term)
    cross: Mapping[tuple[str, str], str]  # (allergy class, drug class) -> why
    shared_allergy: frozenset[str]  # classes where an allergy to one member warns about the others
    pattern: re.Pattern[str]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, origin: str = "drug table") -> DrugTable:
        try:
            table = _TableFile.model_validate(dict(data))
        except ValidationError as exc:
            problems = "; ".join(_describe(err, tuple(_TableFile.model_fields)) for err in exc.errors())
            raise ConfigError(f"{origin}: invalid drug table: {problems}") from exc
        terms = _build_terms(table, origin)
        for entry in table.cross_reactivity:
            if entry.allergy not in table.classes or entry.drug not in table.classes:
                raise ConfigError(f"{origin}: cross_reactivity names an unknown class in {entry}; use a key of classes")
        alternatives = sorted({_term_regex(term) for term in _all_spellings(table)}, key=len, reverse=True)
        # A term inside a longer word ("penicillamine") or a hyphenated compound ("non-penicillin",
        # "penicillin-allergic", "heparin-induced") names no drug being given.
        pattern = re.compile(rf"(?<![\w-])(?P<term>{'|'.join(alternatives)})(?:e?s)?(?![\w-])", re.IGNORECASE)
        return cls(
            terms=MappingProxyType(terms),
            cross=MappingProxyType({(e.allergy, e.drug): e.note for e in table.cross_reactivity}),
            shared_allergy=frozenset(name for name, entry in table.classes.items() if entry.shared_allergy),
            pattern=pattern,
        )

    def lookup(self, term: str) -> _Term | None:
        return self.terms.get(_compact(term))


def _compact(term: str) -> str:
    """Spelling-insensitive key: "Amoxicillin/Clavulanate", "amoxicillin-clavulanate" and "co trimoxazole"
    meet their table entries however they are separated."""
    return re.sub(r"[\s/-]+", "", term.lower())


def _term_regex(term: str) -> str:
    return r"[\s/-]*".join(re.escape(word) for word in re.split(r"[\s/-]+", term.strip()) if word)


def _all_spellings(table: _TableFile) -> set[str]:
    spellings = set(table.synonyms)
    for name, entry in table.classes.items():
        spellings.update((name, *entry.aliases, *entry.members))
    return spellings


def _build_terms(table: _TableFile, origin: str) -> dict[str, _Term]:
    members: dict[str, set[str]] = {}
    display: dict[str, str] = {}
    for name, entry in table.classes.items():
        for member in entry.members:
            members.setdefault(_compact(member), set()).add(name)
            display[_compact(member)] = member
    terms = {key: _Term(display[key], frozenset(classes)) for key, classes in members.items()}
    for synonym, target in table.synonyms.items():
        if _compact(target) not in terms:
            raise ConfigError(f"{origin}: synonym {synonym!r} points to {target!r}, which no class lists as a member")
        terms[_compact(synonym)] = terms[_compact(target)]
    for name, entry in table.classes.items():
        for alias in (name, *entry.aliases):
            known = terms.get(_compact(alias))
            if known is not None and known.drug is not None:
                raise ConfigError(f"{origin}: {alias!r} is both a drug and a class alias; keep only one")
            classes = (known.classes if known else frozenset()) | {name}
            terms[_compact(alias)] = _Term(None, classes)
    return terms


@functools.cache
def drug_table() -> DrugTable:
    """The packaged class table, read on first use."""
    resource = resources.files("rag").joinpath("data/drug_classes.json")
    try:
        data = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{resource}: cannot read the packaged drug table ({exc}); reinstall clinrag") from exc
    return DrugTable.from_mapping(data, origin=str(resource))


# --- drug flags --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrugFlag:
    kind: FlagKind
    drug: str  # as the text writes it
    because: str  # the allergy or medication entry of the record it clashes with
    message: str


@dataclass(frozen=True)
class _Mention:
    surface: str
    start: int
    drug: str | None
    classes: frozenset[str]


@dataclass(frozen=True)
class _Entry:
    raw: str
    drug: str | None
    classes: frozenset[str]


def _find(text: str, table: DrugTable) -> list[_Mention]:
    found: list[_Mention] = []
    for match in table.pattern.finditer(text):
        term = table.lookup(match.group("term"))
        if term is not None:
            found.append(_Mention(match.group(0), match.start(), term.drug, term.classes))
    return found


def _resolve(raw: str, table: DrugTable) -> list[_Entry]:
    """Record entries are free text ("lisinopril 10 mg daily", "penicillin (rash)"): use the drugs they
    name, or the substance itself when the table does not know it ("latex")."""
    mentions = _find(raw, table)
    if mentions:
        return [_Entry(raw, m.drug, m.classes) for m in mentions]
    substance = re.sub(r"\(.*?\)", " ", raw)
    substance = " ".join(re.split(r"\s+\d", substance)[0].split())
    return [_Entry(raw, substance, frozenset())] if substance else []


def _find_unknown(text: str, entries: list[_Entry]) -> list[_Mention]:
    found: list[_Mention] = []
    for entry in entries:
        if entry.drug is None or entry.classes:
            continue
        pattern = rf"(?<![\w-]){_term_regex(entry.drug)}(?:e?s)?(?![\w-])"
        found.extend(_Mention(m.group(0), m.start(), entry.drug, frozenset()) for m in re.finditer(pattern, text, re.I))
    return found


def _same_drug(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and _compact(a) == _compact(b)


def _named(m: _Mention) -> str:
    return m.surface if m.drug is None or _same_drug(m.surface, m.drug) else f"{m.surface} ({m.drug})"


def _allergy_flag(m: _Mention, allergy: _Entry, table: DrugTable) -> DrugFlag | None:
    if _same_drug(m.drug, allergy.drug):
        return DrugFlag("allergy", m.surface, allergy.raw, f"{_named(m)}: the patient is allergic to {allergy.raw}")
    # A class named as the allergy ("sulfa") covers all of it; a single drug only where the class shares allergy.
    shared = m.classes & allergy.classes
    if allergy.drug is not None:
        shared &= table.shared_allergy
    if shared:
        why = f"{_named(m)} is in the same class ({min(shared)}) as the patient's allergy to {allergy.raw}"
        return DrugFlag("allergy", m.surface, allergy.raw, why)
    for allergy_class in sorted(allergy.classes):
        for drug_class in sorted(m.classes):
            note = table.cross.get((allergy_class, drug_class))
            if note is not None:
                why = f"{_named(m)} ({drug_class}) may cross-react with the patient's allergy to {allergy.raw}: {note}"
                return DrugFlag("cross_reactivity", m.surface, allergy.raw, why)
    return None


def _medication_flag(m: _Mention, med: _Entry) -> DrugFlag | None:
    shared = m.classes & med.classes
    if _same_drug(m.drug, med.drug) or (m.drug is None and shared):
        return DrugFlag("current_medication", m.surface, med.raw, f"{_named(m)}: the patient already takes {med.raw}")
    if shared:
        why = f"{_named(m)} duplicates the class ({min(shared)}) of current medication {med.raw}"
        return DrugFlag("duplicate_class", m.surface, med.raw, why)
    return None


def flag_drugs(text: str, patient: Patient, table: DrugTable | None = None) -> list[DrugFlag]:
    """Warnings for drugs in `text` that clash with the patient's allergies or medications, in text order."""
    table = table or drug_table()
    allergies = [e for raw in patient.allergies for e in _resolve(raw, table)]
    medications = [e for raw in patient.medications for e in _resolve(raw, table)]
    mentions = _find(text, table) + _find_unknown(text, allergies + medications)
    flags: dict[tuple[str, str, str], DrugFlag] = {}
    for m in sorted(mentions, key=lambda m: m.start):
        candidates = [_allergy_flag(m, a, table) for a in allergies] + [_medication_flag(m, x) for x in medications]
        for flag in candidates:
            if flag is not None:
                # One warning per drug and record entry, however often and under whatever brand it recurs.
                flags.setdefault((flag.kind, _compact(m.drug or m.surface), flag.because), flag)
    return list(flags.values())
