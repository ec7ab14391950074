"""Helpers shared by the loaders: overrides, metadata mapping, text decoding, ids and hashes."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rag.core.types import DocType, DocumentMeta, LoadFailure, as_doc_type, parse_year

SUPPORTED_SUFFIXES: tuple[str, ...] = (".pdf", ".md", ".markdown", ".txt", ".jsonl", ".json")

# Keys of a front matter block or a BEIR `metadata` object that become DocumentMeta fields, not `extra`.
META_KEYS = frozenset({"title", "issuer", "source", "year", "url", "type", "licence", "license", "id"})

_SNIFF_BYTES = 8192
# One text or Markdown document, or one JSONL record, larger than this is not a clinical document or passage
# (a whole textbook is a few MB); refusing it keeps one bad file from holding a build for minutes.
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
MAX_RECORD_BYTES = 8 * 1024 * 1024
# Share of control characters above which decoded "text" is really binary. Real text has almost none;
# random bytes decoded as cp1252 have about 11 %.
_MAX_CONTROL_SHARE = 0.05
_SLUG_DROP = re.compile(r"[^a-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Overrides:
    """What the caller (a flag or a corpus manifest) says about every document, replacing what the file says."""

    doc_type: DocType | None = None
    source: str | None = None
    licence: str | None = None
    url: str | None = None  # a default: used only for documents that name no url themselves


def slugify(text: str, *, max_len: int = 80) -> str:
    """A file-name-safe id: lowercase, only [a-z0-9._-], at most `max_len` characters, never empty."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _SLUG_DROP.sub("-", ascii_text.lower()).strip("-.")[:max_len].strip("-.")
    return slug or "document"


def fail(path: Path | str, reason: str, record: str | None = None) -> LoadFailure:
    return LoadFailure(path=str(path), reason=reason, record=record)


def decode_text(raw: bytes) -> str | None:
    """Bytes of a text file as str, or None when they look binary.

    UTF-8 (with or without BOM), UTF-16 and UTF-32 with BOM and mostly-ASCII UTF-16 without one are exact;
    anything else falls back to cp1252 and then latin-1, which never fail, so that old Windows-exported notes
    still load.
    """
    if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):  # before UTF-16: the same first two bytes
        try:
            return raw.decode("utf-32")
        except UnicodeDecodeError:
            return None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            return None
    if b"\x00" in raw[:_SNIFF_BYTES]:
        encoding = _bomless_utf16(raw[:_SNIFF_BYTES])
        if encoding is None:
            return None
        try:
            raw = raw.decode(encoding).encode("utf-8")
        except UnicodeDecodeError:
            return None
    text = _decode_with_fallback(raw)
    sample = text[:_SNIFF_BYTES]
    controls = len(_CONTROL.findall(sample))
    if sample and controls / len(sample) > _MAX_CONTROL_SHARE:
        return None
    return text


def _bomless_utf16(sample: bytes) -> str | None:
    """ "utf-16-le"/"utf-16-be" for UTF-16 saved without a byte-order mark (mostly ASCII text, so every other
    byte is NUL), else None. Binary data has NULs too, but not in one byte position only."""
    even, odd = sample[0::2], sample[1::2]
    if len(sample) < 2 or len(sample) % 2:
        return None
    even_nul, odd_nul = even.count(0) / len(even), odd.count(0) / len(odd)
    if odd_nul > 0.9 and even_nul < 0.1:
        return "utf-16-le"
    if even_nul > 0.9 and odd_nul < 0.1:
        return "utf-16-be"
    return None


def _decode_with_fallback(raw: bytes) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def clean_text(text: str) -> str:
    """Unix newlines, no control characters other than newline and tab, no BOM."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    return _CONTROL.sub("", text)


def extra_string(value: object) -> str:
    """A metadata value as the plain string `DocumentMeta.extra` holds; lists are joined with "; "."""
    if isinstance(value, list | tuple):
        return "; ".join(extra_string(v) for v in value if v is not None)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return str(value).strip()


def build_meta(
    fields: Mapping[str, object],
    *,
    title: str,
    default_type: DocType,
    overrides: Overrides,
    url: str | None = None,
) -> DocumentMeta:
    """DocumentMeta from a front matter block or BEIR metadata; raises ValueError for an unknown type.

    The caller's overrides win over the file; a type in the file is only validated when it is used.
    """
    doc_type = overrides.doc_type or _doc_type(fields.get("type"), default_type)
    source = overrides.source or _text(fields.get("source")) or _text(fields.get("issuer"))
    licence = overrides.licence or _text(fields.get("licence")) or _text(fields.get("license")) or None
    extra = {
        str(key): extra_string(value)
        for key, value in fields.items()
        if key not in META_KEYS and value is not None and extra_string(value)
    }
    return DocumentMeta(
        title=title,
        doc_type=doc_type,
        source=source,
        year=parse_year(fields.get("year")),
        url=url or _text(fields.get("url")) or overrides.url or None,
        licence=licence,
        extra=extra,
    )


def _doc_type(value: object, default: DocType) -> DocType:
    if value is None or not str(value).strip():
        return default
    return as_doc_type(value)


def _text(value: object) -> str:
    return "" if value is None else extra_string(value)


def drop_title(path: tuple[str, ...], title: str) -> tuple[str, ...]:
    """A heading path without a leading entry that only repeats the document title."""
    if path and path[0].casefold() == title.casefold():
        return path[1:]
    return path


def short_title(text: str, *, limit: int = 80) -> str:
    """The first `limit` characters of `text` on one line, cut back to a word boundary where one is near."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:-")
