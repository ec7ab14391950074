"""The index bundle: a directory of plain files, committed atomically through `manifest.json`.

Layout (N = generation, bumped by every write):

    manifest.json            format/version stamps, settings, sources, failures, counts, file checksums and,
                             last, `manifest_sha256`: the checksum of the manifest's own other content
    documents.gN.jsonl       one document per line: id, metadata, source path and hash
    chunks.gN.jsonl          every chunk; collapsed duplicates carry "duplicate_of" and are not searchable
    vectors.gN.npy           float32 (active chunks x dim), row i = i-th active chunk
    dense.gN.faiss           FAISS index over the same rows, ids = rag.index.dense.faiss_id(chunk id)
    bm25.gN.npz              BM25 term counts (CSR arrays) of the active chunks, same row order
    bm25_vocab.gN.json       the BM25 vocabulary (column order)

A write puts a whole new generation beside the old one and then replaces `manifest.json` with `os.replace`,
which is atomic: a process killed at any moment leaves either the old or the new manifest, and each only
names files that are complete. Files of other generations are deleted after the commit.

Loading checks every file against its checksum (and the manifest against its own), so a damaged bundle fails
with a `BundleError` instead of answering from altered text. A manifest may only name files of the fixed
`ROLE.gN.EXT` form: never a path that could reach outside the bundle directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.core.errors import BundleError, BundleLockedError, BundleMismatchError
from rag.core.files import file_sha256
from rag.core.types import Chunk, DocumentMeta
from rag.core.version import __version__
from rag.index.npio import NUMPY_LOAD_LOCK
from rag.index.sparse import TermCounts

FORMAT_NAME = "clinrag-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_CHECKSUM = "manifest_sha256"
LOCK = ".lock"
# Loads that meet a commit in the middle retry with the newer generation; a writer committing this often
# while one load runs means something is wrong.
LOAD_ATTEMPTS = 5
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
    if not path.is_file() and (directory / "shards.json").is_file():
        raise BundleError(
            f"{directory}: a sharded index; `clinrag search`, `clinrag eval retrieval --index` and "
            "rag.retrieval.sharded.open_searcher read it, while `ask` and training need a single bundle for now "
            "(build one without --shards)"
        )
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
    # Checked before the version, so that a damaged version number is reported as damage and not as a format
    # to upgrade to. Bundles written before the manifest carried its own checksum still load; `verify` flags them.
    stated = manifest.get(MANIFEST_CHECKSUM)
    if stated is not None and stated != manifest_checksum(manifest):
        raise BundleError(
            f"{path}: the manifest does not match its checksum (modified or damaged); "
            "run `clinrag index verify` and rebuild the index with `clinrag index build`"
        )
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


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The manifest exactly as `write_generation` writes it, so a reader can tell an edited file from ours."""
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def manifest_checksum(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of everything in the manifest but the checksum itself."""
    return hashlib.sha256(manifest_bytes({k: v for k, v in manifest.items() if k != MANIFEST_CHECKSUM})).hexdigest()


def bundle_files(directory: Path, manifest: Mapping[str, Any]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Each role's file and its manifest entry. Refuses entries that are not plain `ROLE.gN.EXT` names, so a
    damaged or hostile manifest cannot make clinrag read or hash a file outside the bundle directory."""
    files = manifest.get("files")
    where = manifest_path(directory)
    if not isinstance(files, dict) or set(files) != set(FILE_ROLES):
        raise BundleError(
            f"{where}: the manifest must list exactly the files {', '.join(FILE_ROLES)}; "
            "it is damaged: rebuild the index"
        )
    out: dict[str, tuple[Path, dict[str, Any]]] = {}
    for role, info in files.items():
        name = info.get("name") if isinstance(info, dict) else None
        match = _GENERATION_FILE.match(name) if isinstance(name, str) else None
        if match is None or match.group(1) != role or f"{role}.g{match.group(2)}.{FILE_ROLES[role]}" != name:
            raise BundleError(
                f"{where}: file name {name!r} for {role} is not a bundle file name like {role}.g1.{FILE_ROLES[role]} "
                "(a path outside the bundle is never followed); the manifest is damaged: rebuild the index"
            )
        assert isinstance(info, dict)
        out[role] = (directory / name, info)
    return out


def check_file(role: str, path: Path, info: Mapping[str, Any]) -> str | None:
    """What is wrong with one bundle file (missing, wrong size, wrong checksum), or None."""
    try:
        size = path.stat().st_size
        if size != info.get("bytes", size):
            return f"{role}: {path.name} has {size} bytes, the manifest says {info.get('bytes')} (damaged)"
        if file_sha256(path) != info.get("sha256"):
            return f"{role}: {path.name} does not match its checksum (modified or damaged)"
    except FileNotFoundError:  # also when a commit deletes it between two of these steps
        return f"{role}: {path.name} is missing"
    except OSError as exc:
        return f"{role}: {path.name} cannot be read ({exc.strerror or exc})"
    return None


def check_embedder(manifest: Mapping[str, Any], directory: Path, name: str, dim: int | None = None) -> None:
    """Refuse a bundle whose vectors come from another embedder than the caller's."""
    built = manifest.get("embedder", {})
    if built.get("name") != name or (dim is not None and built.get("dim") != dim):
        raise BundleMismatchError(
            f"{directory}: index was built with embedder {built.get('name')!r} (dim {built.get('dim')}), "
            f"but you are using {name!r}" + (f" (dim {dim})" if dim is not None else "") + ". "
            f"Use --embedder {built.get('name')} to query it, or rebuild into a new directory with your embedder."
        )


def load_bundle(directory: Path, *, mmap: bool = True, check_checksums: bool = True) -> BundleContents:
    """Load the committed generation. Vectors are memory-mapped, so loading a large index is cheap.

    Every file is checked against its manifest checksum first (hashing runs at about 1.7 GB/s, far below the
    cost of parsing the chunks); `check_checksums=False` is for callers that have just checked them.
    """
    manifest = read_manifest(directory)
    for _ in range(LOAD_ATTEMPTS):
        try:
            return _load_generation(directory, manifest, mmap=mmap, check_checksums=check_checksums)
        except BundleError:
            # Readers take no lock, so a writer may commit a newer generation and delete this one's files while
            # they are being read: then load the newer one. The same generation failing again is real damage.
            latest = read_manifest(directory)
            if latest.get("generation") == manifest.get("generation"):
                raise
            manifest = latest
    raise BundleError(
        f"{directory}: the index changed {LOAD_ATTEMPTS} times while it was being loaded; "
        "load it again once the writer has finished"
    )


def _load_generation(directory: Path, manifest: dict[str, Any], *, mmap: bool, check_checksums: bool) -> BundleContents:
    from rag.core.config import DenseIndexSettings
    from rag.index.dense import read_dense_index

    files = bundle_files(directory, manifest)
    missing = [str(p) for p, _ in files.values() if not p.is_file()]
    if missing:
        raise BundleError(
            f"{directory}: files named by the manifest are missing: {', '.join(missing)}; rebuild the index"
        )
    if check_checksums:
        damaged = [problem for role, (p, info) in files.items() if (problem := check_file(role, p, info))]
        if damaged:
            raise BundleError(
                f"{directory}: damaged index: {'; '.join(damaged)}; run `clinrag index verify` and rebuild it"
            )
    paths = {role: p for role, (p, _) in files.items()}
    try:
        # Search-time FAISS parameters (efSearch, nprobe) are the ones the bundle was built with.
        dense_settings = DenseIndexSettings.model_validate(manifest.get("settings", {}).get("dense", {}))
        documents = [DocumentRecord.from_json(r) for r in _read_jsonl(paths["documents"])]
        chunks = [StoredChunk(Chunk.from_json(r), r.get("duplicate_of")) for r in _read_jsonl(paths["chunks"])]
        with NUMPY_LOAD_LOCK:
            vectors = np.load(paths["vectors"], mmap_mode="r" if mmap else None, allow_pickle=False)
        dense_index = read_dense_index(paths["dense"], dense_settings)
        term_counts = TermCounts.load(paths["bm25"], paths["bm25_vocab"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
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
    from rag.index.dense import write_dense_index

    previous = manifest_path(directory)
    # Past every generation on disk, not only the committed one: a damaged manifest that cannot be read must
    # not make this write reuse (and first delete) the files the old manifest names.
    seen = [int(m.group(2)) for entry in directory.iterdir() if (m := _GENERATION_FILE.match(entry.name))]
    if previous.is_file():
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError, json.JSONDecodeError):
            seen.append(int(json.loads(previous.read_text(encoding="utf-8")).get("generation", 0)))
    generation = max(seen, default=0) + 1
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
        fsync_file(path)
        files[role] = {"name": names[role], "sha256": file_sha256(path), "bytes": path.stat().st_size}
    committed = {
        **{k: v for k, v in manifest.items() if k != MANIFEST_CHECKSUM},
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "generation": generation,
        "clinrag_version": __version__,
        "files": files,
    }
    committed[MANIFEST_CHECKSUM] = manifest_checksum(committed)
    atomic_write_bytes(previous, manifest_bytes(committed))
    _remove_other_generations(directory, generation)
    return committed


def _write_jsonl(path: Path, rows: Iterator[dict[str, Any]] | Any) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
            fh.write("\n")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
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


def absorbed_by_chunk(chunks: Sequence[StoredChunk]) -> dict[str, tuple[str, ...]]:
    """Searchable chunk id -> the other documents it stands for: those whose every chunk was collapsed as a duplicate.

    A document that lost only some chunks (a boilerplate paragraph shared by hundreds of pages) is not absorbed:
    its own chunks are still searchable, and a shared paragraph does not make two documents the same.
    """
    owner = {c.chunk.chunk_id: c.chunk.doc_id for c in chunks}
    partly_kept = {c.chunk.doc_id for c in chunks if c.duplicate_of is None}
    absorbed: dict[str, dict[str, None]] = {}
    for stored in chunks:
        survivor, doc = stored.duplicate_of, stored.chunk.doc_id
        if survivor is not None and doc not in partly_kept and doc != owner.get(survivor):
            absorbed.setdefault(survivor, {})[doc] = None
    return {chunk_id: tuple(docs) for chunk_id, docs in absorbed.items()}
