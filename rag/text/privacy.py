"""Remove direct identifiers from free text before it reaches a prompt, a log or a trace.

`scrub` replaces each identifier with a typed placeholder (`[PHONE]`, `[DOB]`, ...) and counts what it
removed. It is a pattern-based safety net, not a de-identification guarantee: unlabelled names are only
caught when the caller marks them or a title ("Mr.", "Dr.") or a "Name:" label precedes them.

The patterns are deliberately narrow where clinical text looks like an identifier: doses ("500 mg"), lab
values ("BP 150/90", "HbA1c 7.5%"), ages, durations and years alone are left untouched, and long numbers
followed by a unit ("1500000 copies/mL") are measurements, not record numbers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

IdentifierKind = Literal["MRN", "PHONE", "EMAIL", "DOB", "DATE", "ADDRESS", "ZIP", "SSN", "NAME", "URL", "IP"]


@dataclass(frozen=True)
class Scrubbed:
    """Text with identifiers replaced, and how many of each kind were replaced (kinds not found are absent)."""

    text: str
    counts: dict[IdentifierKind, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


_Accept = Callable[[re.Match[str]], bool]


@dataclass(frozen=True)
class _Rule:
    kind: IdentifierKind
    pattern: re.Pattern[str]
    # A match is replaced only when this accepts it: some checks (digit counts) are clumsy as regexes.
    accept: _Accept | None = None


# --- building blocks (plain strings; compiled lazily in _rules) -------------------------------------------------

# A number followed by a unit is a measurement, never an identifier.
_NOT_MEASUREMENT = (
    r"(?!\s*(?:(?:mg|mcg|µg|ug|g|kg|ml|l|dl|units?|iu|mmol|µmol|umol|mmhg|mm|cm|bpm|copies|cells|ng|pg|"
    r"meq|mosm|x\s*10)\b|%|/))"
)
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_MONTH_NUM = r"(?:0?[1-9]|1[0-2])"
_YEAR4 = r"(?:1[89]\d\d|20\d\d)"
_ORDINAL = r"(?:st|nd|rd|th)?"
_MONTH_NAME = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)(?![a-z])\.?"
)
# Numbers that sit inside a longer number, ratio or date are not the start of an identifier.
_NUM_START = r"(?<![\w.])(?<!\d[/-])"
_NUM_END = r"(?!\w)(?![/.-]\d)"

_NUMERIC_DATE = rf"{_NUM_START}{_DAY}(?P<sep1>[/.-]){_DAY}(?P=sep1)(?:{_YEAR4}|\d\d){_NUM_END}{_NOT_MEASUREMENT}"
_ISO_DATE = rf"{_NUM_START}{_YEAR4}(?P<sep2>[/.-]){_MONTH_NUM}(?P=sep2){_DAY}{_NUM_END}"
_MONTH_FIRST_DATE = rf"\b{_MONTH_NAME}\s+{_DAY}{_ORDINAL},?\s+{_YEAR4}\b"
_DAY_FIRST_DATE = rf"\b{_DAY}{_ORDINAL}\s+(?:of\s+)?{_MONTH_NAME},?\s+{_YEAR4}\b"
_CLINICAL_DATE = rf"\b{_DAY}[-/ ]{_MONTH_NAME}[-/ ](?:{_YEAR4}|\d\d)\b"  # 03-MAR-1960, as lab systems print
_ANY_DATE = f"(?:{_NUMERIC_DATE}|{_ISO_DATE}|{_MONTH_FIRST_DATE}|{_DAY_FIRST_DATE}|{_CLINICAL_DATE})"

_DOB_LABEL = r"(?P<label>\b(?:DOB|D\.O\.B\.?|date\s+of\s+birth|birth\s*date|born(?:\s+on)?)\s*(?:[:#-]|is)?\s*)"

_MRN_LABEL = (
    r"(?P<label>\b(?:MRN|medical\s+record\s+(?:number|num\.?|no\.?|\#)|med(?:ical)?\s+rec(?:ord)?\s*\#|"
    r"patient\s+(?:id|identifier|number|no\.?)|pt\.?\s*id|hospital\s+(?:number|no\.?|id)|NHS\s+(?:number|no\.?)|"
    r"chart\s+(?:number|no\.?|\#)|record\s*\#)\s*(?:[:#=]|is)?\s*\#?\s*)"
)
# An NHS number (943 476 5919) or a 6-16 character id holding at least one digit.
_MRN_VALUE = r"(?:\d{3}[ -]?\d{3}[ -]?\d{4}(?!\w)|(?=[a-z0-9-]*\d)[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){5,15}(?!\w))"

_SSN_LABEL = r"(?P<label>\b(?:SSN|SS\#|social\s+security(?:\s+(?:number|no\.?|\#))?)\s*(?:[:#]|is)?\s*)"

_PHONE_EXTENSION = r"(?:\s*(?:x|ext\.?|extension)\s*\d{1,6})?"
_PHONE_LABEL = (
    r"(?P<label>\b(?:phone|tel(?:ephone)?|mobile|cell(?:\s*phone)?|fax|pager|call|contact)\b\.?\s*"
    r"(?:no\.?|number|\#)?\s*[:#]?\s*)"
)
_LABELLED_PHONE = _PHONE_LABEL + rf"(?P<value>\+?\(?\d[\d\s().-]{{5,}}\d){_PHONE_EXTENSION}"
_US_PHONE = (
    r"(?<![\w+])(?<!\d[\s.-])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s*|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\d)"
    rf"{_NOT_MEASUREMENT}{_PHONE_EXTENSION}"
)
_INTERNATIONAL_PHONE = rf"(?<![\w+])\+\d{{1,3}}(?:[\s.-]?(?:\(\d{{1,4}}\)|\d{{1,5}})){{2,6}}(?!\d){_PHONE_EXTENSION}"
_UK_NATIONAL_PHONE = r"(?<![\w+.])0\d{2,4}[\s-]?\d{3,4}[\s-]?\d{3,4}(?![\d.])"

_EMAIL = r"(?<![\w.+-])[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?![\w-])"
_URL = r"\b(?:https?://|ftp://|www\.)[^\s<>\"'()\[\]]*[^\s<>\"'()\[\].,;:!?]"
_IPV4_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"(?<![\w.]){_IPV4_OCTET}(?:\.{_IPV4_OCTET}){{3}}(?!\w)(?!\.\d)"
_HEX = r"[0-9a-f]{1,4}"
_IPV6 = rf"(?<![\w:])(?:(?:{_HEX}:){{7}}{_HEX}|(?:{_HEX}(?::{_HEX}){{0,6}})?::(?:{_HEX}(?::{_HEX}){{0,6}})?)(?![\w:])"

# "Dr" followed by a capitalised word is a doctor ("seen 12 May Dr Jones"), not a drive.
_STREET_SUFFIX = (
    r"(?i:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr(?!\.?\s+[A-Z][a-z])|court|ct|place|pl|way|"
    r"terrace|parkway|pkwy|highway|hwy|circle|cir|close|crescent|square|sq|trail)"
)
_DIRECTION = r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
# Street names are capitalised words ("Main", "Old Mill", "5th"): lowercase prose ("2 miles down the road")
# must not read as an address.
_STREET_WORD = r"(?:[A-Z][A-Za-z'.-]*|\d+(?i:st|nd|rd|th))"
_UNIT = r"(?:,?\s*(?i:apt|apartment|unit|suite|ste|flat|\#)\.?\s*\#?\s*[A-Za-z0-9-]+)?"
_STREET_ADDRESS = (
    rf"(?<![\w/.,-])\d{{1,6}}[A-Za-z]?\s+(?:{_STREET_WORD}\s+){{1,4}}{_STREET_SUFFIX}\b\.?{_DIRECTION}{_UNIT}"
)
_PO_BOX = r"(?i:\bP\.?\s*O\.?\s*Box\s+\d+)"

_STATE_CODES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|"
    "OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY"
)
_STATE_NAMES = (
    "alabama|alaska|arizona|arkansas|california|colorado|connecticut|delaware|florida|georgia|hawaii|idaho|"
    "illinois|indiana|iowa|kansas|kentucky|louisiana|maine|maryland|massachusetts|michigan|minnesota|"
    "mississippi|missouri|montana|nebraska|nevada|new\\s+hampshire|new\\s+jersey|new\\s+mexico|new\\s+york|"
    "north\\s+carolina|north\\s+dakota|ohio|oklahoma|oregon|pennsylvania|rhode\\s+island|south\\s+carolina|"
    "south\\s+dakota|tennessee|texas|utah|vermont|virginia|washington|west\\s+virginia|wisconsin|wyoming"
)
_ZIP = rf"\d{{5}}(?:-\d{{4}})?(?!\w)(?!-\d){_NOT_MEASUREMENT}"
_ZIP_AFTER_STATE = rf"(?P<label>\b(?:{_STATE_CODES}|(?i:{_STATE_NAMES}))\b,?\s+){_ZIP}"
_ZIP_LABELLED = rf"(?P<label>\b(?i:zip(?:\s*code)?|postal\s+code|postcode)\s*[:#]?\s*){_ZIP}"

_LONG_DIGIT_RUN = rf"(?<![\w.,])\d{{7,}}(?!\w)(?![.,]\d){_NOT_MEASUREMENT}"

# A capitalised name word: "Smith", "McDonald", "O'Brien"; all-caps words are usually labels ("DOB").
_NAME_WORD = r"[A-Z](?:[a-z]|'[A-Z])[A-Za-z'-]*"
_LABELLED_NAME = (
    r"(?P<label>(?<!\w)(?i:(?<!drug )(?<!brand )(?<!generic )(?<!trade )(?<!file )(?<!user )"
    r"(?:(?:patient|pt\.?|full|first|last|given|family|sur)\s*)?name)\s*[:=-]\s*)"
    rf"(?:[A-Z]{{2,}}[A-Z'-]*,\s*)?{_NAME_WORD}(?:\s+(?:[A-Z]\.|{_NAME_WORD})){{0,2}}"
)
_TITLED_NAME = rf"(?P<label>\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+)(?:[A-Z]\.\s*)?{_NAME_WORD}(?:\s+{_NAME_WORD})?"
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof"})


def _digits_between(low: int, high: int, group: str = "value") -> _Accept:
    def accept(match: re.Match[str]) -> bool:
        text: str = match.group(group) if group in match.re.groupindex else match.group(0)
        number: str = re.split(r"(?i)\s*(?:x|ext\.?|extension)\s*\d", text)[0]  # extensions don't count
        digits = sum(ch.isdigit() for ch in number)
        return low <= digits <= high

    return accept


def _has_hex_digit(match: re.Match[str]) -> bool:
    return any(ch not in ":" for ch in match.group(0))  # a bare "::" is punctuation, not an address


@functools.cache
def _rules() -> tuple[_Rule, ...]:
    """The fixed rules in the order they run: containers (URLs, e-mails) before their parts, labelled
    identifiers before the generic number patterns that would otherwise claim them (an NHS number reads
    like a phone number), names last so a placeholder is never mistaken for one."""
    i = re.IGNORECASE

    def rule(kind: IdentifierKind, pattern: str, flags: int = 0, accept: _Accept | None = None) -> _Rule:
        return _Rule(kind, re.compile(pattern, flags), accept)

    return (
        rule("URL", _URL, i),
        rule("EMAIL", _EMAIL, i),
        rule("IP", _IPV6, i, _has_hex_digit),
        rule("IP", _IPV4),
        rule("SSN", _SSN_LABEL + r"\d{3}[-\s]?\d{2}[-\s]?\d{4}(?!\d)", i),
        rule("SSN", r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])"),
        rule("MRN", _MRN_LABEL + _MRN_VALUE, i),
        rule("DOB", _DOB_LABEL + _ANY_DATE, i),
        rule("PHONE", _LABELLED_PHONE, i, _digits_between(7, 15)),
        rule("PHONE", _INTERNATIONAL_PHONE, i, _digits_between(8, 15)),
        rule("PHONE", _US_PHONE, i),
        rule("PHONE", _UK_NATIONAL_PHONE, 0, _digits_between(10, 11)),
        rule("DATE", _ANY_DATE, i),
        rule("ADDRESS", _STREET_ADDRESS),
        rule("ADDRESS", _PO_BOX),
        rule("ZIP", _ZIP_LABELLED),
        rule("ZIP", _ZIP_AFTER_STATE),
        rule("MRN", _LONG_DIGIT_RUN, i),
        rule("NAME", _LABELLED_NAME),
        rule("NAME", _TITLED_NAME),
    )


def _marked_names_rule(names: Sequence[str]) -> _Rule | None:
    """Whole names first ("John Smith" is one name, not two), then each part of them on its own."""
    variants: set[str] = set()
    for name in names:
        parts = [p for p in re.split(r"[\s,]+", name.strip()) if p]
        parts_no_titles = [p for p in parts if p.rstrip(".").lower() not in _TITLES]
        if parts_no_titles:
            variants.add(r"[\s,]+".join(re.escape(p) for p in parts_no_titles))
        if len(parts_no_titles) >= 2:  # "J. Smith" for "John Smith"
            variants.add(rf"{re.escape(parts_no_titles[0][0])}\.?\s*{re.escape(parts_no_titles[-1])}")
        # Initials are too ambiguous to remove on their own ("J" would hit "J-tube").
        variants.update(re.escape(p.rstrip(".")) for p in parts_no_titles if len(p.rstrip(".")) >= 2)
    if not variants:
        return None
    alternatives = "|".join(sorted(variants, key=len, reverse=True))
    return _Rule("NAME", re.compile(rf"(?<![\w\[])(?:{alternatives})(?!\w)", re.IGNORECASE))


def _apply(rule: _Rule, text: str) -> tuple[str, int]:
    hits = 0
    has_label = "label" in rule.pattern.groupindex

    def replace(match: re.Match[str]) -> str:
        nonlocal hits
        if rule.accept is not None and not rule.accept(match):
            return match.group(0)
        hits += 1
        label = (match.group("label") or "") if has_label else ""
        return f"{label}[{rule.kind}]"

    return rule.pattern.sub(replace, text), hits


def scrub(text: str, names: Sequence[str] = ()) -> Scrubbed:
    """Replace direct identifiers in `text` with `[KIND]` placeholders; `names` are removed wherever they occur."""
    if isinstance(names, str):  # a lone string would otherwise be scrubbed letter by letter
        names = (names,)
    marked = _marked_names_rule(names)
    rules = _rules() if marked is None else (*_rules()[:-2], marked, *_rules()[-2:])
    counts: dict[IdentifierKind, int] = {}
    for rule in rules:
        text, hits = _apply(rule, text)
        if hits:
            counts[rule.kind] = counts.get(rule.kind, 0) + hits
    return Scrubbed(text=text, counts=counts)
