"""Collections: a folder of separate corpora, marked by a `collection.toml` at its root, that is never indexed whole.

    clinrag_collection = 1

    [members.guidelines]
    corpus = true
    description = "the demo corpus"

    [members.examples]
    corpus = false
    description = "example inputs, not documents"

Indexing a collection folder would mix corpora that are meant to be built apart (two manifests of the same
documents, example inputs that are not documents), so naming one, or walking into one, is a configuration
error whose one-line message names a member to build instead; so is naming a member marked `corpus = false`.
A `collection.toml` without the `clinrag_collection` key is someone else's file and is ignored.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rag.core.errors import ConfigError

COLLECTION_FILE = "collection.toml"
COLLECTION_KEY = "clinrag_collection"
COLLECTION_VERSION = 1
_ALLOWED_KEYS = frozenset({COLLECTION_KEY, "members"})
_MEMBER_KEYS = frozenset({"corpus", "description"})


@dataclass(frozen=True)
class Member:
    name: str  # a sub-folder of the collection
    corpus: bool
    description: str = ""


@dataclass(frozen=True)
class Collection:
    folder: Path
    members: tuple[Member, ...]

    @property
    def marker(self) -> Path:
        return self.folder / COLLECTION_FILE

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    def suggestion(self, lead: str = "build one of them") -> str:
        """What to build instead, e.g. `build one of them, e.g. clinrag index build corpora/guidelines`."""
        corpora = [m for m in self.members if m.corpus]
        if not corpora:
            return f"build a folder inside {self.folder} instead"
        first = next((m for m in corpora if (self.folder / m.name).is_dir()), corpora[0])
        return f"{lead}, e.g. clinrag index build {self.folder / first.name}"


def read_collection(folder: Path) -> Collection | None:
    """The collection `folder` is the root of, or None; raises ConfigError for a marker that cannot be followed."""
    marker = Path(folder) / COLLECTION_FILE
    if not marker.is_file():
        return None
    try:
        raw = marker.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{marker}: cannot read this collection marker ({exc}): fix or remove it") from exc
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        if COLLECTION_KEY not in raw:
            return None  # not a clinrag file
        raise ConfigError(f"{marker}: invalid TOML ({exc}): fix the collection marker") from exc
    if COLLECTION_KEY not in data:
        return None
    return Collection(Path(folder), _members(marker, data))


def refuse_collection(folder: Path) -> None:
    """Raise ConfigError (one line) when `folder` is a collection, or a member of one that is not a corpus."""
    folder = Path(folder)
    collection = read_collection(folder)
    if collection is not None:
        corpora = ", ".join(f"{m.name}/" for m in collection.members if m.corpus)
        others = ", ".join(f"{m.name}/" for m in collection.members if not m.corpus)
        held = f"{corpora}; not a corpus: {others}" if corpora and others else corpora or f"not a corpus: {others}"
        raise ConfigError(
            f"{folder}: holds several corpora ({held}), as {collection.marker} says; {collection.suggestion()}"
        )
    resolved = folder.resolve()
    parent = read_collection(resolved.parent)
    member = parent.member(resolved.name) if parent is not None else None
    if parent is not None and member is not None and not member.corpus:
        shown = folder.parent if folder.name not in ("", "..") else resolved.parent
        what = member.description or "not a corpus"
        collection = Collection(shown, parent.members)
        raise ConfigError(
            f"{folder}: {what} ({collection.marker} marks it corpus = false); "
            f"{collection.suggestion('build a corpus instead')}"
        )


def refuse_collections(paths: Iterable[Path]) -> None:
    """`refuse_collection` for every folder among `paths`: cheap, so a build can check before it starts."""
    for path in paths:
        if Path(path).is_dir():
            refuse_collection(Path(path))


def _members(marker: Path, data: Mapping[str, object]) -> tuple[Member, ...]:
    unknown = sorted(set(data) - _ALLOWED_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_ALLOWED_KEYS))
        raise ConfigError(f"{marker}: unknown key(s) {', '.join(unknown)} in collection marker; allowed: {allowed}")
    if data.get(COLLECTION_KEY) != COLLECTION_VERSION:
        version = data.get(COLLECTION_KEY)
        fix = f"set {COLLECTION_KEY} = {COLLECTION_VERSION}"
        raise ConfigError(f"{marker}: unsupported collection marker version {version!r}: {fix}")
    table = data.get("members", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{marker}: members must be tables, e.g. [members.guidelines] with corpus = true")
    members = []
    for name, entry in table.items():
        if not isinstance(entry, dict) or Path(name).name != name or name in (".", ".."):
            raise ConfigError(f"{marker}: [members.{name}] must be a table named after a sub-folder")
        unknown = sorted(set(entry) - _MEMBER_KEYS)
        corpus = entry.get("corpus", True)
        description = entry.get("description", "")
        if unknown or not isinstance(corpus, bool) or not isinstance(description, str):
            raise ConfigError(f'{marker}: [members.{name}] takes corpus = true|false and description = "..." only')
        members.append(Member(name, corpus, description.strip()))
    return tuple(members)
