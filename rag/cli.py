"""The `clinrag` command. Subcommands live beside the code they drive; this module only dispatches.

The `index` group comes from the `indexer` package: the command line is the application layer that
composes both packages, while library code in `rag` never imports `indexer`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rag import __version__
from rag.errors import ClinragError

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    from indexer.cli import register as register_index
    from rag.ask_cli import add_filter_arguments
    from rag.ask_cli import register as register_ask
    from rag.evaluation.cli import register as register_eval
    from rag.finetune_cli import register as register_finetune
    from rag.train_cli import register as register_train

    parser = argparse.ArgumentParser(
        prog="clinrag",
        description="Retrieval-augmented clinical question answering over guidelines and literature.",
    )
    parser.add_argument("--version", action="version", version=f"clinrag {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_index(commands)

    search = commands.add_parser(
        "search",
        help="search an index bundle",
        description="Search an index bundle with BM25, dense or hybrid "
        "retrieval and print the best chunks with their sources.",
    )
    search.add_argument("query", help="the question or keywords")
    search.add_argument("--index", required=True, metavar="DIR", help="index bundle directory")
    search.add_argument("-k", type=int, default=5, help="number of results (default 5)")
    search.add_argument("--mode", choices=["hybrid", "bm25", "dense"], default="hybrid")
    search.add_argument(
        "--rerank",
        action="store_true",
        help="rerank the best 20 (and each retriever's own top 3) with a trained cross-encoder (--reranker DIR)",
    )
    search.add_argument("--reranker", metavar="DIR", help="a reranker folder from `clinrag train reranker`")
    search.add_argument(
        "--ray", metavar="ADDRESS", help="search a sharded index with one Ray actor per shard (auto, HOST:PORT, local)"
    )
    add_filter_arguments(search)
    search.add_argument("--json", action="store_true", help="print results as one JSON object")
    search.set_defaults(handler=_search)
    register_ask(commands)
    register_eval(commands)
    register_finetune(commands)
    register_train(commands)
    return parser


def _search(args: argparse.Namespace) -> int:
    from rag.ask_cli import filters_from_arguments
    from rag.config import RetrievalSettings
    from rag.sharded_search import open_searcher

    filters = filters_from_arguments(args)
    settings = RetrievalSettings(reranker=args.reranker or "default")
    searcher = open_searcher(args.index, settings=settings, ray_address=args.ray)
    rerank = bool(args.rerank or args.reranker)
    hits = searcher.search(args.query, k=args.k, mode=args.mode, filters=filters, rerank=rerank)
    if args.json:
        shown = {"query": args.query, "mode": args.mode, "reranked": rerank, "hits": [h.to_json() for h in hits]}
        print(json.dumps(shown, indent=2))
        return EXIT_OK
    for rank, hit in enumerate(hits, start=1):
        meta = hit.meta
        pages = f", p. {hit.chunk.page_start}" if hit.chunk.page_start else ""
        print(f"{rank}. {hit.chunk.breadcrumb or meta.title} [{meta.source or meta.doc_type}, {meta.year}{pages}]")
        if hit.also_in:
            metas = getattr(searcher, "metas", {})  # a sharded index keeps titles in the shards: ids are shown
            print(f"   also in: {', '.join(metas[d].title if d in metas else d for d in hit.also_in)}")
        snippet = " ".join(hit.chunk.text.split())
        print(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}")
    if not hits:
        print("no results")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ClinragError as exc:
        print(f"clinrag: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "clinrag: interrupted; the index on disk is unchanged or fully updated, never half-written", file=sys.stderr
        )
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
