"""BEIR-format retrieval data read as published: `corpus.jsonl`, `queries.jsonl` and `qrels/SPLIT.tsv`.

Each reader names the file and line of a problem (a line that is not JSON, a missing field, a bad score).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rag.core.errors import ConfigError

Qrels = dict[str, dict[str, int]]


def _jsonl_fields(path: Path, what: str, read: Callable[[dict[str, Any]], str]) -> dict[str, str]:
    """`_id` -> read(row) for every line of a BEIR JSONL file; a bad line is an error that names it."""
    out: dict[str, str] = {}
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    out[str(row["_id"])] = read(row)
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ConfigError(
                        f"{path}: line {number}: not a BEIR {what} ({exc}); expected _id and text"
                    ) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} file ({exc.strerror}); check the path") from exc
    return out


def load_queries(path: Path) -> dict[str, str]:
    """BEIR queries.jsonl (`_id`, `text`); bad lines are errors that name the line."""
    return _jsonl_fields(path, "query", lambda row: str(row["text"]))


def load_query_types(path: Path) -> dict[str, str]:
    """Query id -> metadata.qtype of a BEIR queries.jsonl (MedQuAD's "treatment", "symptoms", ...), where given."""
    types = _jsonl_fields(path, "query", lambda row: str((row.get("metadata") or {}).get("qtype") or ""))
    return {qid: qtype for qid, qtype in types.items() if qtype}


def load_corpus_texts(path: Path) -> dict[str, str]:
    """Document id -> text of a BEIR corpus.jsonl (the judged passages an answer is compared with)."""
    return _jsonl_fields(path, "document", lambda row: str(row.get("text", "")))


def load_qrels(path: Path) -> Qrels:
    """BEIR qrels TSV (`query-id corpus-id score`, header optional) or TREC (`qid 0 docid rel`)."""
    qrels: Qrels = {}
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            for number, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
                cells = row if len(row) > 1 else (row[0].split() if row else [])
                if not cells or (number == 1 and cells[0] in {"query-id", "qid", "query_id"}):
                    continue
                if len(cells) == 4:  # TREC: qid iteration docid relevance
                    cells = [cells[0], cells[2], cells[3]]
                if len(cells) != 3:
                    raise ConfigError(f"{path}: line {number}: expected query-id, corpus-id, score")
                try:
                    qrels.setdefault(cells[0], {})[cells[1]] = int(float(cells[2]))
                except ValueError as exc:
                    raise ConfigError(f"{path}: line {number}: relevance {cells[2]!r} is not a number") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read qrels ({exc.strerror}); check the path") from exc
    return qrels


def resolve_beir(
    corpus: Sequence[Path], queries: Path | None, qrels: Path | None, split: str = "dev"
) -> tuple[list[Path], Path, Path]:
    """Accept a BEIR directory (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) or explicit files."""
    files: list[Path] = []
    for path in corpus:
        if path.is_dir() and (path / "corpus.jsonl").is_file():
            files.append(path / "corpus.jsonl")
            queries = queries or path / "queries.jsonl"
            qrels = qrels or path / "qrels" / f"{split}.tsv"
        else:
            files.append(path)
    if queries is None or qrels is None:
        raise ConfigError("give --queries and --qrels, or a BEIR directory as --corpus")
    return files, queries, qrels
