"""A sharded index: N ordinary bundles plus the corpus-wide BM25 statistics, committed through one manifest.

Layout (N = generation of the sharded index, bumped by every build):

    shards.json                   format stamps, settings, embedder, sources, one entry per shard (its folder and
                                  the SHA-256 of its manifest.json), the global files' checksums and, last,
                                  `manifest_sha256` over the rest
    gN/shard-000/ ...             ordinary bundles (rag.index.store), each holding the documents that hash to it
    gN/bm25_stats.npz             corpus-wide BM25 statistics: chunk count, total length, document frequencies
    gN/bm25_stats_vocab.json      their terms
    gN/absorbed.json              searchable chunk id -> documents it stands for as a collapsed duplicate (a
                                  duplicate may live in another shard than the chunk that absorbed it)

Shards are written first, each atomically; `shards.json` is replaced last with `os.replace`, so a build killed at
any moment leaves the previous sharded index whole (its generation folder untouched) and the next build removes
the half-written folder. Every shard's manifest carries its files' checksums, and `shards.json` carries each shard
manifest's checksum, so one chain of hashes covers the whole index.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.core.errors import BundleError, BundleMismatchError
from rag.core.files import file_sha256, now_iso
from rag.core.version import __version__
from rag.index.sparse import CorpusStats
from rag.index.store import (
    MANIFEST,
    MANIFEST_CHECKSUM,
    atomic_write_bytes,
    fsync_file,
    manifest_bytes,
    manifest_checksum,
)

SHARDED_FORMAT = "clinrag-sharded-index"
SHARDED_VERSION = 1
SHARDED_MANIFEST = "shards.json"
GLOBAL_FILES = {
    "bm25_stats": "bm25_stats.npz",
    "bm25_stats_vocab": "bm25_stats_vocab.json",
    "absorbed": "absorbed.json",
}
_GENERATION_DIR = re.compile(r"^g(\d+)$")
_SHARD_DIR = re.compile(r"^g(\d+)/shard-(\d{3,})$")


def is_sharded(directory: Path) -> bool:
    return (directory / SHARDED_MANIFEST).is_file()


def shard_of(doc_id: str, n_shards: int) -> int:
    """The shard a document lives in: a stable hash of its id, so a rebuild puts it in the same shard."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "big") % n_shards


def shard_name(index: int) -> str:
    return f"shard-{index:03d}"


@dataclass(frozen=True)
class ShardedIndex:
    """A committed sharded index: its manifest, its shard folders, and the corpus-wide search data."""

    directory: Path
    manifest: dict[str, Any]
    shard_dirs: list[Path]
    stats: CorpusStats
    absorbed: dict[str, tuple[str, ...]]

    @property
    def embedder(self) -> str:
        return str(self.manifest["embedder"]["name"])


def read_sharded_manifest(directory: Path) -> dict[str, Any]:
    path = directory / SHARDED_MANIFEST
    if not path.is_file():
        raise BundleError(f"{directory}: not a sharded clinrag index (no {SHARDED_MANIFEST}); build one with "
                          f"`clinrag index build SOURCES --out {directory} --shards N`")  # fmt: skip
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc}); rebuild the sharded index") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != SHARDED_FORMAT:
        raise BundleError(f"{path}: not a sharded clinrag index manifest; rebuild it with `clinrag index build`")
    if manifest.get(MANIFEST_CHECKSUM) != manifest_checksum(manifest):
        raise BundleError(f"{path}: the manifest does not match its checksum (modified or damaged); run "
                          "`clinrag index verify` and rebuild the index")  # fmt: skip
    if manifest.get("format_version") != SHARDED_VERSION:
        raise BundleMismatchError(
            f"{directory}: sharded index format version {manifest.get('format_version')}, expected "
            f"{SHARDED_VERSION}; rebuild it (unchanged vectors come from the embedding cache)"
        )
    return manifest


def shard_dirs(directory: Path, manifest: Mapping[str, Any]) -> list[Path]:
    """The shard folders the manifest names; a name that is not `gN/shard-NNN` is refused (never followed)."""
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise BundleError(f"{directory / SHARDED_MANIFEST}: lists no shards; the manifest is damaged: rebuild")
    out = []
    for entry in shards:
        name = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _SHARD_DIR.match(name):
            raise BundleError(
                f"{directory / SHARDED_MANIFEST}: shard path {name!r} is not of the form gN/shard-NNN "
                "(a path outside the index is never followed); rebuild the index"
            )
        out.append(directory / name)
    return out


def shard_problems(directory: Path, manifest: Mapping[str, Any]) -> list[str]:
    """Missing or altered shards and global files (checksums only; each shard's own files are checked on load)."""
    problems = []
    for entry, folder in zip(manifest["shards"], shard_dirs(directory, manifest), strict=True):
        shard_manifest = folder / MANIFEST
        if not shard_manifest.is_file():
            problems.append(f"shard {entry['path']} is missing ({shard_manifest} not found): rebuild the index")
        elif file_sha256(shard_manifest) != entry.get("manifest_sha256"):
            problems.append(f"shard {entry['path']}: its manifest does not match the sharded manifest (replaced or "
                            "damaged): rebuild the index")  # fmt: skip
    for role, info in _global_files(directory, manifest).items():
        path, sha = info
        if not path.is_file():
            problems.append(f"{role}: {path} is missing: rebuild the index")
        elif file_sha256(path) != sha:
            problems.append(f"{role}: {path} does not match its checksum (modified or damaged): rebuild the index")
    return problems


def load_sharded(directory: Path) -> ShardedIndex:
    """The committed sharded index, its checksums checked; mixed embedders across shards are refused."""
    manifest = read_sharded_manifest(directory)
    problems = shard_problems(directory, manifest)
    if problems:
        raise BundleError(f"{directory}: damaged sharded index: {'; '.join(problems)}")
    folders = shard_dirs(directory, manifest)
    for folder in folders:
        built = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("embedder", {})
        if built.get("name") != manifest["embedder"]["name"] or built.get("dim") != manifest["embedder"]["dim"]:
            raise BundleMismatchError(
                f"{folder}: built with embedder {built.get('name')!r} but the sharded index uses "
                f"{manifest['embedder']['name']!r}; all shards must share one embedder: rebuild the index"
            )
    files = {role: path for role, (path, _) in _global_files(directory, manifest).items()}
    try:
        stats = CorpusStats.load(files["bm25_stats"], files["bm25_stats_vocab"])
        absorbed = {k: tuple(v) for k, v in json.loads(files["absorbed"].read_text(encoding="utf-8")).items()}
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise BundleError(f"{directory}: damaged sharded index ({type(exc).__name__}: {exc}); rebuild it") from exc
    return ShardedIndex(directory, manifest, folders, stats, absorbed)


def _global_files(directory: Path, manifest: Mapping[str, Any]) -> dict[str, tuple[Path, str]]:
    generation = manifest.get("generation")
    files = manifest.get("files")
    if not isinstance(generation, int) or not isinstance(files, dict) or set(files) != set(GLOBAL_FILES):
        raise BundleError(f"{directory / SHARDED_MANIFEST}: the manifest must list {', '.join(GLOBAL_FILES)}; it is "
                          "damaged: rebuild the index")  # fmt: skip
    return {role: (directory / f"g{generation}" / GLOBAL_FILES[role], str(files[role])) for role in GLOBAL_FILES}


def holds_only_sharded_files(directory: Path) -> bool:
    """True for an empty folder or one holding only what a killed first sharded build leaves behind."""
    return all(
        entry.name == ".lock"
        or entry.name.startswith(".manifest.")
        or (entry.is_dir() and _GENERATION_DIR.match(entry.name))
        for entry in directory.iterdir()
    )


def next_generation(directory: Path) -> int:
    """Past every generation folder on disk, so a killed build's leftovers are never reused."""
    seen = [int(m.group(1)) for entry in directory.iterdir() if (m := _GENERATION_DIR.match(entry.name))]
    return max(seen, default=0) + 1


def generation_dir(directory: Path, generation: int) -> Path:
    return directory / f"g{generation}"


def commit_sharded(
    directory: Path,
    generation: int,
    manifest: dict[str, Any],
    stats: CorpusStats,
    absorbed: Mapping[str, tuple[str, ...]],
) -> dict[str, Any]:
    """Write the global files of `generation` (its shards are already written) and commit it."""
    folder = generation_dir(directory, generation)
    paths = {role: folder / name for role, name in GLOBAL_FILES.items()}
    stats.save(paths["bm25_stats"], paths["bm25_stats_vocab"])
    paths["absorbed"].write_text(json.dumps({k: list(v) for k, v in absorbed.items()}), encoding="utf-8")
    for path in paths.values():
        fsync_file(path)
    shards = []
    for i in range(int(manifest["n_shards"])):
        rel = f"g{generation}/{shard_name(i)}"
        shards.append({"path": rel, "manifest_sha256": file_sha256(directory / rel / MANIFEST)})
    committed = {
        **{k: v for k, v in manifest.items() if k != MANIFEST_CHECKSUM},
        "format": SHARDED_FORMAT,
        "format_version": SHARDED_VERSION,
        "generation": generation,
        "clinrag_version": __version__,
        "updated_at": now_iso(),
        "shards": shards,
        "files": {role: file_sha256(path) for role, path in paths.items()},
    }
    committed[MANIFEST_CHECKSUM] = manifest_checksum(committed)
    atomic_write_bytes(directory / SHARDED_MANIFEST, manifest_bytes(committed))
    remove_other_generations(directory, generation)
    return committed


def remove_other_generations(directory: Path, keep: int | None) -> None:
    for entry in directory.iterdir():
        match = _GENERATION_DIR.match(entry.name)
        if match is not None and int(match.group(1)) != keep and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
