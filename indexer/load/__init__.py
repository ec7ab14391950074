"""Document loaders: turn source files into `SourceDocument`s, and every problem into a `LoadFailure`.

`load_source` never raises for bad input, so that one damaged PDF cannot stop an index build; the failure's
reason names the problem and the fix. `iter_source_files` expands folders into the files to load, and refuses
a collection of separate corpora (a folder with a `collection.toml` marker) with a ConfigError: see `collection`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from indexer.load.collection import COLLECTION_FILE, refuse_collection, refuse_collections
from indexer.load.common import MAX_DOCUMENT_BYTES, SUPPORTED_SUFFIXES, Overrides, fail
from indexer.load.jsonl import load_beir_jsonl
from indexer.load.manifest import ManifestError, is_manifest, merge_overrides, parse_manifest
from indexer.load.pdf import load_pdf
from indexer.load.pubmedqa import is_pubmedqa, load_pubmedqa
from indexer.load.text import load_markdown, load_plain_text
from rag.core.errors import ConfigError
from rag.core.files import file_sha256  # one streamed hash for sources and bundle files
from rag.core.types import DocType, LoadFailure, LoadResult, as_doc_type

__all__ = ["SUPPORTED_SUFFIXES", "file_sha256", "iter_source_files", "load_source", "refuse_collections"]

_TEXT_SUFFIXES = frozenset({".md", ".markdown", ".txt"})
# Manifests may point at manifests; this bounds a chain and, with the visited set, breaks cycles.
_MAX_MANIFEST_DEPTH = 8

_BytesLoader = Callable[[Path, bytes, Overrides], LoadResult]
_BYTES_LOADERS: dict[str, _BytesLoader] = {
    ".pdf": load_pdf,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".txt": load_plain_text,
}


def load_source(
    path: Path,
    *,
    doc_type: DocType | None = None,
    source: str | None = None,
    licence: str | None = None,
) -> LoadResult:
    """Load one file (PDF, Markdown, text, BEIR JSONL, PubMedQA JSON or corpus manifest).

    The keyword arguments replace what the file says for every document in it.
    """
    path = Path(path)
    try:
        checked_type = as_doc_type(doc_type, where="doc_type") if doc_type is not None else None
    except ValueError as exc:
        return LoadResult(failures=(fail(path, str(exc)),))
    overrides = Overrides(doc_type=checked_type, source=source or None, licence=licence or None)
    return _load(path, overrides, ())


def _load(path: Path, overrides: Overrides, manifests: tuple[Path, ...]) -> LoadResult:
    try:
        return _dispatch(path, overrides, manifests)
    except OSError as exc:
        reason = f"cannot read file ({exc.strerror or exc}): check that it exists and is readable"
        return LoadResult(failures=(fail(path, reason),))
    except Exception as exc:  # a loader bug must not stop a build either; say where to look
        reason = f"unexpected error while loading ({type(exc).__name__}: {exc}): report it with this file"
        return LoadResult(failures=(fail(path, reason),))


def _dispatch(path: Path, overrides: Overrides, manifests: tuple[Path, ...]) -> LoadResult:
    if not path.exists():
        return LoadResult(failures=(fail(path, "no such file: check the path"),))
    if path.is_dir():
        return LoadResult(failures=(fail(path, "is a folder, not a file: pass it to iter_source_files first"),))
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        shown = suffix or "(no suffix)"
        reason = f"unsupported file type {shown}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
        return LoadResult(failures=(fail(path, reason),))
    size = path.stat().st_size
    if size == 0:
        return LoadResult(failures=(fail(path, "empty document: the file is 0 bytes; replace it or remove it"),))
    if suffix in _TEXT_SUFFIXES and size > MAX_DOCUMENT_BYTES:
        reason = (
            f"{size / 2**20:.1f} MB is too large for one text document (limit {MAX_DOCUMENT_BYTES // 2**20} MB): "
            "split it into files of one document each"
        )
        return LoadResult(failures=(fail(path, reason),))
    if suffix == ".jsonl":
        return load_beir_jsonl(path, overrides)
    if suffix == ".json":
        return _load_json(path, overrides, manifests)
    return _BYTES_LOADERS[suffix](path, path.read_bytes(), overrides)


def _load_json(path: Path, overrides: Overrides, manifests: tuple[Path, ...]) -> LoadResult:
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:
        return LoadResult(failures=(fail(path, f"invalid JSON ({exc}): fix the file"),))
    if is_manifest(data):
        return _load_manifest(path, data, overrides, manifests)
    if is_pubmedqa(data):
        return load_pubmedqa(path, data, overrides)
    reason = (
        'unrecognised JSON: expected native PubMedQA ({pmid: {"QUESTION", "CONTEXTS", ...}}) or a corpus '
        'manifest ({"clinrag_corpus": 1, "path": ...}); convert other corpora to BEIR .jsonl'
    )
    return LoadResult(failures=(fail(path, reason),))


def _load_manifest(path: Path, data: dict[str, object], caller: Overrides, manifests: tuple[Path, ...]) -> LoadResult:
    try:
        manifest = parse_manifest(path, data)
    except ManifestError as exc:
        return LoadResult(failures=(fail(path, str(exc)),))
    here = path.resolve()
    if here in manifests or len(manifests) >= _MAX_MANIFEST_DEPTH:
        return LoadResult(failures=(fail(path, 'corpus manifests point at each other in a loop: fix "path"'),))
    if not manifest.target.exists():
        reason = (
            f'manifest points at {manifest.target}, which does not exist: fix "path" '
            "(a relative path is resolved from the manifest's folder)"
        )
        return LoadResult(failures=(fail(path, reason),))
    overrides = merge_overrides(caller, manifest.overrides)
    try:
        targets, failures = iter_source_files([manifest.target])
    except ConfigError as exc:  # the manifest points at a collection of corpora
        return LoadResult(failures=(fail(path, f'{exc} (fix "path")'),))
    results = [_load(target, overrides, (*manifests, here)) for target in targets]
    return _merge(results, failures)


def _merge(results: Sequence[LoadResult], failures: Sequence[LoadFailure] = ()) -> LoadResult:
    return LoadResult(
        documents=tuple(doc for result in results for doc in result.documents),
        failures=(*failures, *(f for result in results for f in result.failures)),
    )


def iter_source_files(paths: Sequence[Path]) -> tuple[list[Path], list[LoadFailure]]:
    """The files to load, in a deterministic order, and the paths that do not exist.

    Folders are walked recursively in sorted order, skipping hidden entries and unsupported suffixes;
    a file named explicitly is kept whatever its suffix, so that `load_source` can say why it is not read.
    A file reached twice is listed once. Of a BEIR folder (corpus.jsonl, queries.jsonl, qrels/) only the corpus
    is read. A collection folder (see `indexer.load.collection`), named or reached by
    the walk, raises ConfigError before anything is read.
    """
    files: list[Path] = []
    failures: list[LoadFailure] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            refuse_collection(path)
            candidates = _walk(path)
        elif path.exists():
            candidates = [path]
        else:
            failures.append(fail(path, "no such file or folder: check the path"))
            continue
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                files.append(candidate)
    return files, failures


def _is_beir_folder(filenames: Sequence[str], dirnames: Sequence[str]) -> bool:
    return "corpus.jsonl" in filenames and "queries.jsonl" in filenames and "qrels" in dirnames


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    for folder, dirnames, filenames in os.walk(root):
        # Pruning in place stops os.walk from descending into hidden folders (.git, .venv, ...).
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if COLLECTION_FILE in filenames:
            refuse_collection(Path(folder))
        if _is_beir_folder(filenames, dirnames):
            # A BEIR folder's queries.jsonl holds the questions, not documents: indexed, each question would be
            # found first for itself (PubMedQA's folder once gave 1,500 "documents" for 1,000 abstracts).
            filenames = ["corpus.jsonl"]
        for name in filenames:
            candidate = Path(folder) / name
            if not name.startswith(".") and candidate.suffix.lower() in SUPPORTED_SUFFIXES and candidate.is_file():
                found.append(candidate)
    return sorted(found, key=lambda p: p.relative_to(root).parts)
