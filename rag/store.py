"""The index bundle: a directory of plain files, committed atomically through `manifest.json`.

Layout (N = generation, bumped by every write):

    manifest.json            format/version stamps, settings, sources, failures, counts, file checksums
    documents.gN.jsonl       one document per line: id, metadata, source path and hash
    chunks.gN.jsonl          every chunk; collapsed duplicates carry "duplicate_of" and are not searchable
    vectors.gN.npy           float32 (active chunks x dim), row i = i-th active chunk
    dense.gN.faiss           FAISS index over the same rows, ids = rag.dense.faiss_id(chunk id)
    bm25.gN.npz              BM25 term counts (CSR arrays) of the active chunks, same row order
    bm25_vocab.gN.json       the BM25 vocabulary (column order)

A write puts a whole new generation beside the old one and then replaces `manifest.json` with `os.replace`,
which is atomic: a process killed at any moment leaves either the old or the new manifest, and each only
names files that are complete. Files of other generations are deleted after the commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag import __version__
from rag.errors import BundleError, BundleLockedError, BundleMismatchError
from rag.sparse import TermCounts
from rag.types import Chunk, DocumentMeta

FORMAT_NAME = "clinrag-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
_GENERATION_FILE = re.compile(r"^(documents|chunks|vectors|dense|bm25|bm25_vocab)\.g(\d+)\.(jsonl|npy|faiss|npz|json)$")
FILE_ROLES = {
    "documents": "jsonl",
    "chunks": "jsonl",
    "vectors": "npy",
    "dense": "faiss",
    "bm25": "npz",
    "bm25_vocab": "json",
}


@dataclass(frozen=True)
class DocumentRecord:
    doc_id: str
    meta: DocumentMeta
    source_path: str
    source_hash: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.doc_id, "meta": self.meta.to_json(), "source": self.source_path, "sha256": self.source_hash}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DocumentRecord:
        return cls(str(data["id"]), DocumentMeta.from_json(data["meta"]), str(data["source"]), str(data["sha256"]))


@dataclass(frozen=True)
class StoredChunk:
    chunk: Chunk
    duplicate_of: str | None = None


@dataclass
class BundleContents:
    """Everything a generation holds, in memory. `chunks` keeps duplicates; the arrays cover active chunks."""

    manifest: dict[str, Any]
    documents: list[DocumentRecord]
    chunks: list[StoredChunk]
    vectors: npt.NDArray[np.float32]
    dense_index: Any
    term_counts: TermCounts
    path: Path = field(default_factory=Path)

    @property
    def active_chunks(self) -> list[Chunk]:
        return [c.chunk for c in self.chunks if c.duplicate_of is None]


def manifest_path(directory: Path) -> Path:
    return directory / MANIFEST


def is_bundle(directory: Path) -> bool:
    return manifest_path(directory).is_file()


def holds_only_clinrag_files(directory: Path) -> bool:
    """True for an empty folder or one holding only what a killed first build leaves behind."""
    return all(
        entry.name == LOCK or _GENERATION_FILE.match(entry.name) or entry.name.startswith(".manifest.")
        for entry in directory.iterdir()
    )


def read_manifest(directory: Path) -> dict[str, Any]:
    path = manifest_path(directory)
    if not directory.exists():
        raise BundleError(f"{directory}: no such index; build one with `clinrag index build SOURCES --out {directory}`")
    if not path.is_file():
        raise BundleError(
            f"{directory}: not a clinrag index (no {MANIFEST}); build one with "
            f"`clinrag index build SOURCES --out {directory}`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc}); rebuild the index with `clinrag index build`") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{path}: not a clinrag index manifest; rebuild the index with `clinrag index build`")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        fix = (
            f"upgrade clinrag (this is {__version__}, format {FORMAT_VERSION})"
            if newer
            else "rebuild it with `clinrag index build SOURCES --out DIR` (unchanged vectors come from the cache)"
        )
        raise BundleMismatchError(f"{directory}: index format version {version}, expected {FORMAT_VERSION}; {fix}")
    return manifest


def check_embedder(manifest: Mapping[str, Any], directory: Path, name: str, dim: int | None = None) -> None:
    """Refuse a bundle whose vectors come from another embedder than the caller's."""
    built = manifest.get("embedder", {})
    if built.get("name") != name or (dim is not None and built.get("dim") != dim):
        raise BundleMismatchError(
            f"{directory}: index was built with embedder {built.get('name')!r} (dim {built.get('dim')}), "
            f"but you are using {name!r}" + (f" (dim {dim})" if dim is not None else "") + ". "
            f"Use --embedder {built.get('name')} to query it, or rebuild into a new directory with your embedder."
        )


def load_bundle(directory: Path, *, mmap: bool = True) -> BundleContents:
    """Load the committed generation. Vectors are memory-mapped, so loading a large index is cheap."""
    from rag.config import DenseIndexSettings
    from rag.dense import read_dense_index

    manifest = read_manifest(directory)
    # Search-time FAISS parameters (efSearch, nprobe) are the ones the bundle was built with.
    dense_settings = DenseIndexSettings.model_validate(manifest.get("settings", {}).get("dense", {}))
    files = {role: directory / info["name"] for role, info in manifest["files"].items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise BundleError(
            f"{directory}: files named by the manifest are missing: {', '.join(missing)}; rebuild the index"
        )
    try:
        documents = [DocumentRecord.from_json(r) for r in _read_jsonl(files["documents"])]
        chunks = [StoredChunk(Chunk.from_json(r), r.get("duplicate_of")) for r in _read_jsonl(files["chunks"])]
        vectors = np.load(files["vectors"], mmap_mode="r" if mmap else None, allow_pickle=False)
        dense_index = read_dense_index(files["dense"], dense_settings)
        term_counts = TermCounts.load(files["bm25"], files["bm25_vocab"])
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BundleError(
            f"{directory}: damaged index ({type(exc).__name__}: {exc}); run `clinrag index verify` and rebuild it"
        ) from exc
    return BundleContents(manifest, documents, chunks, vectors, dense_index, term_counts, directory)


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


@contextlib.contextmanager
def write_lock(directory: Path) -> Iterator[None]:
    """One writer per bundle; readers never need the lock because commits are atomic."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK).open("a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BundleLockedError(
                f"{directory}: another clinrag process is writing this index; wait for it to finish"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def write_generation(
    directory: Path,
    manifest: dict[str, Any],
    documents: Sequence[DocumentRecord],
    chunks: Sequence[StoredChunk],
    vectors: npt.NDArray[np.float32],
    dense_index: Any,
    term_counts: TermCounts,
) -> dict[str, Any]:
    """Write a new generation and commit it. The caller holds `write_lock(directory)`."""
    from rag.dense import write_dense_index

    previous = manifest_path(directory)
    generation = 1
    if previous.is_file():
        with contextlib.suppress(OSError, ValueError, json.JSONDecodeError):
            generation = int(json.loads(previous.read_text(encoding="utf-8")).get("generation", 0)) + 1
    names = {role: f"{role}.g{generation}.{ext}" for role, ext in FILE_ROLES.items()}
    paths = {role: directory / name for role, name in names.items()}
    for path in paths.values():  # leftovers of a killed write of this same generation
        path.unlink(missing_ok=True)

    _write_jsonl(paths["documents"], (d.to_json() for d in documents))
    _write_jsonl(
        paths["chunks"],
        ({**c.chunk.to_json(), **({"duplicate_of": c.duplicate_of} if c.duplicate_of else {})} for c in chunks),
    )
    with paths["vectors"].open("wb") as fh:
        np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
    write_dense_index(dense_index, paths["dense"])
    term_counts.save(paths["bm25"], paths["bm25_vocab"])

    files = {}
    for role, path in paths.items():
        _fsync_file(path)
        files[role] = {"name": names[role], "sha256": file_sha256(path), "bytes": path.stat().st_size}
    committed = {
        **manifest,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "generation": generation,
        "clinrag_version": __version__,
        "files": files,
    }
    _atomic_write_json(previous, committed)
    _remove_other_generations(directory, generation)
    return committed


def _write_jsonl(path: Path, rows: Iterator[dict[str, Any]] | Any) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
            fh.write("\n")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_json(path: Path, data: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _remove_other_generations(directory: Path, keep: int) -> None:
    for entry in directory.iterdir():
        match = _GENERATION_FILE.match(entry.name)
        stale_generation = match is not None and int(match.group(2)) != keep
        stale_manifest = entry.name.startswith(".manifest.") and entry.name.endswith(".tmp")
        if stale_generation or stale_manifest:
            entry.unlink(missing_ok=True)


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
