"""Sharded builds and searches on a real local Ray cluster, started here and stopped after the module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indexer.sharded import build_sharded_index
from rag.core.errors import ConfigError
from rag.core.files import file_sha256
from rag.index.shards import load_sharded, read_sharded_manifest
from rag.index.verify import verify_sharded
from rag.retrieval.sharded import ShardedSearcher
from rag.testing import HashEmbedder
from tests.retrieval.test_sharded import QUERIES, SETTINGS, write_corpus

ray = pytest.importorskip("ray", reason="Ray is in the dev extra: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-src")
    write_corpus(root / "a" / "one.jsonl", 80, seed=1)
    write_corpus(root / "b" / "two.jsonl", 40, seed=2).write_text(
        (root / "b" / "two.jsonl").read_text().replace('"_id": "d', '"_id": "b').replace('"_id": "copy', '"_id": "bc')
    )
    return root


def _files(index: Path) -> dict[str, str]:
    """Checksums of every shard's data files (names differ only by generation, which is the same here)."""
    out = {}
    for folder in load_sharded(index).shard_dirs:
        for path in sorted(folder.glob("*.g*.*")):
            out[f"{folder.name}/{path.name}"] = file_sha256(path)
    return out


def test_a_ray_build_writes_what_the_in_process_build_writes(cluster: Any, corpus: Path, tmp_path: Path) -> None:
    embedder = HashEmbedder(dim=32, max_tokens=48)
    local = build_sharded_index([corpus], tmp_path / "local", 3, SETTINGS, embedder=embedder)
    on_ray = build_sharded_index([corpus], tmp_path / "ray", 3, SETTINGS, embedder=embedder, ray_address="local")
    assert on_ray.ray == "local" and on_ray.searchable_chunks == local.searchable_chunks > 100
    assert [s.searchable for s in on_ray.shards] == [s.searchable for s in local.shards]
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")
    assert verify_sharded(tmp_path / "ray").ok

    threads = ShardedSearcher.load(tmp_path / "ray", embedder)
    actors = ShardedSearcher.load(tmp_path / "ray", embedder, ray_address="local")
    try:
        for query in QUERIES:
            a = [(e.chunk.chunk_id, e.score, e.also_in) for e in threads.search(query, k=10)]
            assert a == [(e.chunk.chunk_id, e.score, e.also_in) for e in actors.search(query, k=10)]
    finally:
        actors.close()


def test_a_worker_killed_mid_build_is_retried_and_the_build_completes(
    cluster: Any, corpus: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "killed-once"

    class DiesOnce(HashEmbedder):  # defined here so Ray ships it by value to its workers
        def embed(self, texts, *, progress=False):  # type: ignore[no-untyped-def]
            if not marker.exists():
                marker.write_text("a worker died here")
                os._exit(1)  # as a killed worker process: no exception, no cleanup
            return super().embed(texts, progress=progress)

    report = build_sharded_index([corpus], tmp_path / "idx", 2, SETTINGS, embedder=DiesOnce(dim=32, max_tokens=48),
                                 ray_address="local")  # fmt: skip
    assert marker.exists(), "the first shard task must have died"
    assert report.committed and verify_sharded(tmp_path / "idx").ok
    assert read_sharded_manifest(tmp_path / "idx")["counts"]["active_chunks"] == report.searchable_chunks


def test_a_shard_that_fails_for_good_fails_the_build_cleanly(cluster: Any, corpus: Path, tmp_path: Path) -> None:
    class AlwaysFails(HashEmbedder):
        def embed(self, texts, *, progress=False):  # type: ignore[no-untyped-def]
            raise RuntimeError("embedding service down")

    with pytest.raises(ConfigError, match=r"failed on the Ray cluster: .*embedding service down"):
        build_sharded_index([corpus], tmp_path / "idx", 2, SETTINGS, embedder=AlwaysFails(dim=32, max_tokens=48),
                            ray_address="local")  # fmt: skip
    assert not (tmp_path / "idx" / "shards.json").exists()
    assert not any(p.is_dir() and p.name.startswith("g") for p in (tmp_path / "idx").iterdir())


def test_a_damaged_shard_is_named_when_ray_actors_load_it(cluster: Any, corpus: Path, tmp_path: Path) -> None:
    from rag.core.errors import BundleError

    embedder = HashEmbedder(dim=32, max_tokens=48)
    build_sharded_index([corpus], tmp_path / "idx", 2, SETTINGS, embedder=embedder)
    chunks = next((tmp_path / "idx" / "g1" / "shard-001").glob("chunks.g*.jsonl"))
    chunks.write_bytes(chunks.read_bytes()[:-10])
    with pytest.raises(BundleError, match="shard-001") as raised:
        ShardedSearcher.load(tmp_path / "idx", embedder, ray_address="local")
    # The worker's own message, not Ray's wrapper with the actor's traceback in it.
    message = str(raised.value)
    assert "\n" not in message and "Traceback" not in message and "ray::" not in message
    assert message.count("shard-001") == 1
