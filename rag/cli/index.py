"""`clinrag index ...`: build, add, remove, info, verify.

Exit codes: 0 ok; 1 some sources failed (each is listed, the rest is indexed) or verify found problems;
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from indexer.build import add_sources, build_index, remove_from_index
from indexer.report import BuildReport, ShardedBuildReport
from indexer.sharded import add_to_sharded, build_sharded_index, remove_from_sharded
from rag.cli.options import (
    add_config_option,
    add_json_flag,
    add_out_option,
    add_progress_options,
    add_ray_option,
)
from rag.core.config import Settings, load_settings, with_overrides
from rag.core.errors import ConfigError
from rag.index.shards import is_sharded, read_sharded_manifest
from rag.index.store import read_manifest
from rag.index.verify import verify_bundle, verify_sharded


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    index = commands.add_parser(
        "index", help="build and maintain an index bundle", description="Build and maintain an index bundle."
    )
    sub = index.add_subparsers(dest="index_command", metavar="COMMAND", required=True)

    build = sub.add_parser(
        "build",
        help="index sources into a bundle (unchanged sources are skipped)",
        description="Index files and directories (PDF, Markdown, text, BEIR JSONL, PubMedQA JSON, corpus "
        "manifests) into a bundle at --out. Rebuilding the same directory reuses every unchanged source.",
    )
    build.add_argument("sources", nargs="+", metavar="SOURCE", help="files or directories to index")
    add_out_option(build, "the bundle directory (created if missing)", as_path=False)
    build.add_argument(
        "--shards", type=int, metavar="N", help="split the index into N shard bundles (README 'Scale-out')"
    )
    _ray_flag(build)
    _settings_flags(build)
    _output_flags(build)
    build.set_defaults(handler=_build)

    add = sub.add_parser(
        "add",
        help="add sources to a bundle",
        description="Add sources to an existing bundle, "
        "with the settings it was built with. Only new text is embedded.",
    )
    add.add_argument("index_dir", metavar="DIR")
    add.add_argument("sources", nargs="+", metavar="SOURCE")
    _ray_flag(add)
    _output_flags(add)
    add.set_defaults(handler=_add)

    remove = sub.add_parser(
        "remove",
        help="remove documents or sources",
        description="Remove documents by id "
        "or every document of a source file. Other vectors are kept, never recomputed.",
    )
    remove.add_argument("index_dir", metavar="DIR")
    remove.add_argument("--doc", action="append", default=[], metavar="ID", help="document id (repeatable)")
    remove.add_argument("--source", action="append", default=[], metavar="PATH", help="source path (repeatable)")
    _ray_flag(remove)
    _output_flags(remove)
    remove.set_defaults(handler=_remove)

    info = sub.add_parser(
        "info", help="describe a bundle", description="Print what a bundle holds and how it was built."
    )
    info.add_argument("index_dir", metavar="DIR")
    add_json_flag(info, "print the whole manifest as JSON")
    info.set_defaults(handler=_info)

    verify = sub.add_parser(
        "verify",
        help="check a bundle's integrity",
        description="Check file checksums and "
        "that chunks, vectors, FAISS and BM25 agree in count and ids. Exit 1 on problems.",
    )
    verify.add_argument("index_dir", metavar="DIR")
    add_json_flag(verify, "print the report as one JSON object")
    verify.set_defaults(handler=_verify)


def _ray_flag(parser: argparse.ArgumentParser) -> None:
    add_ray_option(
        parser,
        "run a sharded build on a Ray cluster: auto, HOST:PORT, ray://HOST:10001, or local[:N] for a private "
        "cluster of N CPUs on this machine (needs `pip install 'clinrag[ray]'`)",
    )


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (override --config)")
    add_config_option(group, as_path=False, what="settings file (TOML or JSON); see README 'Settings'")
    group.add_argument(
        "--embedder",
        metavar="MODEL",
        help="model name, Hugging Face id or local folder (default: the packaged all-MiniLM-L6-v2)",
    )
    group.add_argument(
        "--allow-download", action="store_true", default=None, help="let a Hugging Face id download (needs network)"
    )
    group.add_argument("--batch-size", type=int, metavar="N", help="embedding batch size")
    group.add_argument("--max-tokens", type=int, metavar="N", help="chunk budget in embedder tokens")
    group.add_argument("--overlap", type=int, metavar="N", help="overlap between chunks in tokens")
    group.add_argument("--no-dedup", action="store_true", default=None, help="keep duplicate chunks")
    group.add_argument(
        "--dense", choices=["flat", "hnsw", "ivfflat", "ivfpq"], help="FAISS index kind (default flat: exact)"
    )
    group.add_argument("--cache-dir", metavar="DIR", help="embedding cache folder")
    group.add_argument("--no-cache", action="store_true", default=None, help="do not use the embedding cache")


def _output_flags(parser: argparse.ArgumentParser) -> None:
    add_json_flag(parser, "print the report as one JSON object")
    add_progress_options(parser)


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config) if getattr(args, "config", None) else Settings()
    flags: dict[str, Any] = {
        "index.embedder.model": args.embedder,
        "index.embedder.allow_download": args.allow_download,
        "index.embedder.batch_size": args.batch_size,
        "index.chunker.max_tokens": args.max_tokens,
        "index.chunker.overlap_tokens": args.overlap,
        "index.chunker.dedup": False if args.no_dedup else None,
        "index.dense.kind": args.dense,
        "index.cache_dir": args.cache_dir,
        "index.use_cache": False if args.no_cache else None,
    }
    return with_overrides(settings, {k: v for k, v in flags.items() if v is not None})


def _build(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    out = Path(args.out)
    shards = args.shards
    if shards is None and is_sharded(out):
        shards = int(read_sharded_manifest(out)["n_shards"])  # rebuilding a sharded index keeps it sharded
    if shards is None:
        if args.ray:
            raise ConfigError("--ray builds a sharded index: give --shards N as well")
        return _print_report(build_index(args.sources, out, settings.index, progress=args.progress), args.json)
    report = build_sharded_index(
        args.sources, out, shards, settings.index, progress=args.progress, ray_address=args.ray
    )
    return _print_report(report, args.json)


def _add(args: argparse.Namespace) -> int:
    if is_sharded(Path(args.index_dir)):
        report = add_to_sharded(args.index_dir, args.sources, progress=args.progress, ray_address=args.ray)
        return _print_report(report, args.json)
    _no_ray(args)
    return _print_report(add_sources(args.index_dir, args.sources, progress=args.progress), args.json)


def _remove(args: argparse.Namespace) -> int:
    if is_sharded(Path(args.index_dir)):
        report: BuildReport | ShardedBuildReport = remove_from_sharded(
            args.index_dir, doc_ids=args.doc, source_paths=args.source, progress=args.progress, ray_address=args.ray
        )
        return _print_report(report, args.json)
    _no_ray(args)
    report = remove_from_index(args.index_dir, doc_ids=args.doc, source_paths=args.source, progress=args.progress)
    return _print_report(report, args.json)


def _no_ray(args: argparse.Namespace) -> None:
    if args.ray:
        raise ConfigError(f"{args.index_dir}: --ray applies to sharded indexes (built with --shards N)")


def _print_report(report: BuildReport | ShardedBuildReport, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    elif isinstance(report, ShardedBuildReport):
        where = f"on Ray ({report.ray})" if report.ray else "in this process"
        print(
            f"wrote {report.directory}: {report.documents} documents, {report.searchable_chunks} searchable chunks "
            f"({report.duplicates} duplicates collapsed) from {report.sources} sources in {report.n_shards} shards "
            f"({', '.join(str(s.searchable) for s in report.shards)} chunks), built {where}"
        )
        print(
            f"vectors: {report.vectors_embedded} embedded, {report.vectors_cached} from cache; {report.seconds:.1f} s"
        )
    else:
        verb = "wrote" if report.committed else "up to date:"
        print(
            f"{verb} {report.directory}: {report.documents} documents, {report.searchable_chunks} searchable chunks "
            f"({report.duplicates} duplicates collapsed) from {report.sources} sources "
            f"[{report.sources_loaded} loaded, {report.sources_unchanged} unchanged, {report.sources_removed} removed]"
        )
        print(
            f"vectors: {report.vectors_embedded} embedded, {report.vectors_reused} reused, "
            f"{report.vectors_cached} from cache; {report.seconds:.1f} s"
        )
    for failure in report.failures:
        where = f" [{failure.record}]" if failure.record else ""
        print(f"failed: {failure.path}{where}: {failure.reason}", file=sys.stderr)
    if report.failures:
        print(f"{len(report.failures)} source problem(s); everything else was indexed", file=sys.stderr)
    return report.exit_code


def _info(args: argparse.Namespace) -> int:
    if is_sharded(Path(args.index_dir)):
        return _sharded_info(args)
    manifest = read_manifest(Path(args.index_dir))
    if args.json:
        print(json.dumps(manifest, indent=2, ensure_ascii=False))
        return 0
    counts = manifest.get("counts", {})
    emb = manifest.get("embedder", {})
    dense = manifest.get("dense", {})
    size = sum(int(f.get("bytes", 0)) for f in manifest.get("files", {}).values())
    lines = [
        f"index      {args.index_dir} (format {manifest['format_version']}, generation {manifest['generation']}, "
        f"clinrag {manifest.get('clinrag_version')})",
        f"built      {manifest.get('created_at')}; updated {manifest.get('updated_at')}",
        f"embedder   {emb.get('name')} (dim {emb.get('dim')}, normalized {emb.get('normalized')})",
        f"dense      {dense.get('built_kind')} ({dense.get('metric')})",
        f"bm25       k1={manifest['bm25'].get('k1')} b={manifest['bm25'].get('b')} idf={manifest['bm25'].get('idf')} "
        f"tokenizer={manifest['bm25'].get('tokenizer', {}).get('name')}",
        f"contents   {counts.get('sources')} sources, {counts.get('documents')} documents, "
        f"{counts.get('active_chunks')} searchable chunks, {counts.get('duplicates')} duplicates",
        f"size       {size / 1e6:.1f} MB",
    ]
    print("\n".join(lines))
    for source in manifest.get("sources", []):
        print(f"  {source['documents']:>6} docs {source['chunks']:>7} chunks  {source['path']}")
    failures = manifest.get("failures", [])
    if failures:
        print(f"{len(failures)} failure(s) at the last update:")
        for f in failures:
            print(f"  {f['path']}{' [' + f['record'] + ']' if f.get('record') else ''}: {f['reason']}")
    return 0


def _sharded_info(args: argparse.Namespace) -> int:
    manifest = read_sharded_manifest(Path(args.index_dir))
    if args.json:
        print(json.dumps(manifest, indent=2, ensure_ascii=False))
        return 0
    counts, emb = manifest.get("counts", {}), manifest.get("embedder", {})
    print(f"index      {args.index_dir} (sharded, {manifest['n_shards']} shards, generation {manifest['generation']}, "
          f"clinrag {manifest.get('clinrag_version')})")  # fmt: skip
    print(f"built      {manifest.get('created_at')}; updated {manifest.get('updated_at')}")
    print(f"embedder   {emb.get('name')} (dim {emb.get('dim')}, normalized {emb.get('normalized')})")
    print(f"dense      {manifest['settings']['dense']['kind']} per shard")
    print(f"contents   {counts.get('sources')} sources, {counts.get('documents')} documents, "
          f"{counts.get('active_chunks')} searchable chunks, {counts.get('duplicates')} duplicates")  # fmt: skip
    print(f"per shard  {', '.join(str(n) for n in counts.get('per_shard', []))} searchable chunks")
    for source in manifest.get("sources", []):
        print(f"  {source['documents']:>6} docs {source['chunks']:>7} chunks  {source['path']}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    directory = Path(args.index_dir)
    report = verify_sharded(directory) if is_sharded(directory) else verify_bundle(directory)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif report.ok:
        print(f"ok: {args.index_dir}: " + ", ".join(f"{v} {k}" for k, v in report.counts.items()))
    else:
        for problem in report.problems:
            print(f"problem: {problem}", file=sys.stderr)
    return 0 if report.ok else 1
