"""Markdown and plain-text loaders: optional YAML front matter, ATX headings as sections."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from indexer.load.common import Overrides, build_meta, clean_text, decode_text, fail, slugify
from rag.core.types import DocType, LoadResult, SectionSpan, SourceDocument

# Notes and guideline summaries written by hand are closer to guidelines than to literature.
DEFAULT_TYPE: DocType = "guideline"

_FRONT_MATTER_CLOSE = re.compile(r"^(?:---|\.\.\.)[ \t]*$", re.MULTILINE)
# The optional closing #s are removed in code (`_heading_title`): as a lazy group followed by optional runs
# of blanks, the pattern backtracked quadratically ("# a" + 40,000 spaces took 22 s).
_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*)$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


class FrontMatterError(ValueError):
    """The YAML block at the top of a file cannot be used."""


@dataclass(frozen=True)
class _Heading:
    level: int
    title: str
    start: int  # offset of the heading line in the body


def load_markdown(path: Path, raw: bytes, overrides: Overrides) -> LoadResult:
    return _load(path, raw, overrides, markdown=True)


def load_plain_text(path: Path, raw: bytes, overrides: Overrides) -> LoadResult:
    return _load(path, raw, overrides, markdown=False)


def _load(path: Path, raw: bytes, overrides: Overrides, *, markdown: bool) -> LoadResult:
    decoded = decode_text(raw)
    if decoded is None:
        return LoadResult(failures=(fail(path, _BINARY),))
    try:
        fields, body = split_front_matter(clean_text(decoded))
    except FrontMatterError as exc:
        return LoadResult(failures=(fail(path, str(exc)),))
    body = body.lstrip("\n").rstrip()
    if not body.strip():
        return LoadResult(failures=(fail(path, _EMPTY),))
    headings = find_headings(body) if markdown else []
    title = _title(fields, headings, body, path, markdown=markdown)
    try:
        meta = build_meta(fields, title=title, default_type=DEFAULT_TYPE, overrides=overrides)
    except ValueError as exc:
        return LoadResult(failures=(fail(path, f"front matter: {exc}"),))
    doc_id = str(fields.get("id") or "").strip() or slugify(path.stem)
    sections = heading_sections(headings, title, len(body))
    document = SourceDocument(doc_id=doc_id, text=body, meta=meta, source_path=str(path), sections=sections)
    return LoadResult(documents=(document,))


_EMPTY = "empty document: no text to index (only whitespace or front matter); add text or remove the file"
_BINARY = "binary file, not text: NUL or control bytes found; give it the suffix of its real format or remove it"


def split_front_matter(text: str) -> tuple[Mapping[str, object], str]:
    """(front matter fields, body) of a text that may open with a `---` YAML block."""
    first_line, _, rest = text.partition("\n")
    if first_line.rstrip() != "---":
        return {}, text
    close = _FRONT_MATTER_CLOSE.search(rest)
    if close is None:
        raise FrontMatterError("front matter opened with --- is never closed: add a closing --- line after it")
    try:
        fields = yaml.safe_load(rest[: close.start()])
    except yaml.YAMLError as exc:
        raise FrontMatterError(f"invalid YAML in front matter ({_yaml_problem(exc)}): fix it or remove it") from exc
    if fields is None:
        fields = {}
    if not isinstance(fields, dict):
        raise FrontMatterError("front matter is not a mapping of key: value lines: write it as 'title: ...' lines")
    return {str(k): v for k, v in fields.items()}, rest[close.end() :]


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    # The YAML block starts on the file's second line.
    return f"{problem} at line {mark.line + 2}" if mark is not None else str(problem)


def find_headings(body: str) -> list[_Heading]:
    """ATX headings outside fenced code blocks, where `#` lines are code comments, not headings."""
    headings: list[_Heading] = []
    fence: str | None = None
    offset = 0
    for line in body.split("\n"):
        fence_match = _FENCE.match(line)
        if fence_match:
            marker = fence_match.group(1)
            fence = marker if fence is None else (None if marker == fence else fence)
        elif fence is None:
            match = _ATX.match(line)
            title = _heading_title(match.group(2)) if match else ""
            if match and title:
                headings.append(_Heading(len(match.group(1)), title, offset))
        offset += len(line) + 1
    return headings


def _heading_title(text: str) -> str:
    """An ATX heading's text without its optional closing sequence: "Title ##" -> "Title", "C#" stays."""
    title = text.rstrip(" \t")
    bare = title.rstrip("#")
    if bare != title and bare.endswith((" ", "\t")):
        title = bare
    return title.strip()


def heading_sections(headings: list[_Heading], title: str, text_len: int) -> tuple[SectionSpan, ...]:
    """One span per heading, running to the next heading, with the path of headings open at that point.

    The first H1 is left out of every path when it only repeats the document title.
    """
    title_heading = next((h for h in headings if h.level == 1), None)
    if title_heading is not None and title_heading.title.casefold() != title.casefold():
        title_heading = None
    stack: list[_Heading] = []
    spans: list[SectionSpan] = []
    for i, heading in enumerate(headings):
        while stack and stack[-1].level >= heading.level:
            stack.pop()
        stack.append(heading)
        end = headings[i + 1].start if i + 1 < len(headings) else text_len
        path = tuple(h.title for h in stack if h is not title_heading)
        if path and end > heading.start:
            spans.append(SectionSpan(path=path, start=heading.start, end=end))
    return tuple(spans)


def _title(fields: Mapping[str, object], headings: list[_Heading], body: str, path: Path, *, markdown: bool) -> str:
    from_fields = str(fields.get("title") or "").strip()
    if from_fields:
        return from_fields
    if markdown:
        first_h1 = next((h.title for h in headings if h.level == 1), "")
        return first_h1 or path.stem
    first_line = next((line.strip() for line in body.split("\n") if line.strip()), "")
    return first_line[:200] or path.stem
