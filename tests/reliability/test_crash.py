"""A build killed part-way (SIGKILL, no cleanup) leaves the previous bundle loading and verifying."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from indexer import build_index, verify_bundle
from indexer.embed_cache import EmbeddingCache
from rag.core.config import IndexSettings
from rag.index.store import load_bundle, read_manifest
from rag.testing import HashEmbedder

DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import indexer.vectors, rag.index.store
    from indexer import build_index
    from rag.core.config import IndexSettings
    from rag.testing import HashEmbedder

    target, kill_at = sys.argv[1], sys.argv[2]
    kill_after = int(sys.argv[3])
    calls = {"n": 0}

    def killer(original):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        return wrapped

    if kill_at == "fsync":
        rag.index.store.fsync_file = killer(rag.index.store.fsync_file)
    elif kill_at == "gc":
        rag.index.store._remove_other_generations = killer(rag.index.store._remove_other_generations)
    elif kill_at == "embed":
        indexer.vectors.BLOCK = 2
        HashEmbedder.embed = killer(HashEmbedder.embed)
    settings = IndexSettings.model_validate_json(sys.argv[4])
    build_index([Path(p) for p in sys.argv[5:]], Path(target), settings, embedder=HashEmbedder(dim=32, max_tokens=64))
    """
)


def _docs(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.md"
        path.write_text(
            f"# {name.title()}\n\n## Care\n\n{name} is treated with rest and fluids. "
            f"Patients with {name} should be reviewed in {len(name)} days.\n"
        )
        paths.append(path)
    return paths


def _run_killed(out: Path, kill_at: str, after: int, settings: IndexSettings, sources: list[Path]) -> int:
    cmd = [sys.executable, "-c", DRIVER, str(out), kill_at, str(after), settings.model_dump_json(), *map(str, sources)]
    return subprocess.run(cmd, capture_output=True, timeout=120, env={**os.environ}).returncode


@pytest.fixture()
def settings(tmp_path: Path) -> IndexSettings:
    return IndexSettings.model_validate({"cache_dir": str(tmp_path / "cache")})


@pytest.mark.parametrize("after", [0, 2, 5])
def test_kill_while_writing_files_keeps_old_bundle(tmp_path: Path, settings: IndexSettings, after: int) -> None:
    out = tmp_path / "index"
    old = _docs(tmp_path / "src", ["influenza", "measles"])
    build_index(old, out, settings, embedder=HashEmbedder(dim=32, max_tokens=64))
    before = read_manifest(out)
    new = old + _docs(tmp_path / "src", ["mumps", "rubella"])
    assert _run_killed(out, "fsync", after, settings, new) == -signal.SIGKILL
    assert read_manifest(out) == before
    assert verify_bundle(out).ok
    assert len(load_bundle(out).documents) == 2
    # The next write cleans the half-written generation and succeeds.
    report = build_index(new, out, settings, embedder=HashEmbedder(dim=32, max_tokens=64))
    assert report.documents == 4 and verify_bundle(out).ok
    names = {p.name for p in out.iterdir()}
    assert all(f".g{read_manifest(out)['generation']}." in n for n in names if ".g" in n)


def test_kill_after_commit_gives_the_new_bundle(tmp_path: Path, settings: IndexSettings) -> None:
    out = tmp_path / "index"
    old = _docs(tmp_path / "src", ["influenza"])
    build_index(old, out, settings, embedder=HashEmbedder(dim=32, max_tokens=64))
    new = old + _docs(tmp_path / "src", ["mumps"])
    assert _run_killed(out, "gc", 0, settings, new) == -signal.SIGKILL
    assert verify_bundle(out).ok and len(load_bundle(out).documents) == 2


def test_kill_while_embedding_keeps_finished_vectors(tmp_path: Path, settings: IndexSettings) -> None:
    out = tmp_path / "index"
    sources = _docs(tmp_path / "src", ["influenza", "measles", "mumps", "rubella", "pertussis", "tetanus"])
    assert _run_killed(out, "embed", 2, settings, sources) == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    fake = HashEmbedder(dim=32, max_tokens=64)
    with EmbeddingCache(Path(settings.cache_dir or "") / "embeddings.sqlite") as cache:
        rows = cache._conn.execute("SELECT COUNT(*) FROM vectors WHERE model = ?", (fake.name,)).fetchone()[0]
    assert rows == 4  # two finished blocks of two
    report = build_index(sources, out, settings, embedder=fake)
    assert report.vectors_cached == 4 and report.vectors_embedded == report.searchable_chunks - 4
