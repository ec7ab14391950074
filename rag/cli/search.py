"""`clinrag search`: the best chunks of an index (single or sharded) for a query, with their sources."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rag.cli.options import (
    EXIT_OK,
    add_filter_arguments,
    add_index_option,
    add_json_flag,
    add_ray_option,
    add_reranker_options,
    filters_from_arguments,
)


def register(commands: Any) -> None:
    search = commands.add_parser(
        "search",
        help="search an index bundle",
        description="Search an index bundle with BM25, dense or hybrid "
        "retrieval and print the best chunks with their sources.",
    )
    search.add_argument("query", help="the question or keywords")
    add_index_option(search, "index bundle directory", required=True, as_path=False)
    search.add_argument("-k", type=int, default=5, help="number of results (default 5)")
    search.add_argument("--mode", choices=["hybrid", "bm25", "dense"], default="hybrid")
    add_reranker_options(
        search,
        reranker_help="a reranker folder from `clinrag train reranker`",
        rerank_help="rerank the best 20 (and each retriever's own top 3) with a trained cross-encoder (--reranker DIR)",
    )
    add_ray_option(search, "search a sharded index with one Ray actor per shard (auto, HOST:PORT, local)")
    add_filter_arguments(search)
    add_json_flag(search, "print results as one JSON object")
    search.set_defaults(handler=run_search)


def run_search(args: argparse.Namespace) -> int:
    from rag.core.config import RetrievalSettings
    from rag.retrieval.sharded import open_searcher

    filters = filters_from_arguments(args)
    scale = {} if args.rerank_prior_scale is None else {"rerank_prior_scale": args.rerank_prior_scale}
    settings = RetrievalSettings.model_validate({"reranker": args.reranker or "default", **scale})
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
