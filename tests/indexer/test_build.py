"""build -> info -> verify -> add -> remove round trips, incremental reuse, failures, and a mismatched embedder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexer import add_sources, build_index, remove_from_index, verify_bundle
from rag.core.config import IndexSettings
from rag.core.errors import BundleMismatchError, ConfigError
from rag.index.store import load_bundle, manifest_checksum, read_manifest
from rag.retrieval.search import Searcher
from rag.testing import HashEmbedder


def write_md(folder: Path, name: str, title: str, body: str, year: int = 2020) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(
        f"---\ntitle: {title}\nissuer: Test Society\nyear: {year}\nurl: https://example.org/{name}\n"
        f"type: guideline\n---\n# {title}\n\n{body}\n",
        encoding="utf-8",
    )
    return path


BODIES = {
    "htn.md": (
        "Hypertension",
        "## Treatment\n\nStart a thiazide diuretic or an ACE inhibitor. "
        "Amlodipine is an alternative first-line drug. Check potassium after two weeks.",
    ),
    "uti.md": (
        "Cystitis",
        "## Treatment\n\nNitrofurantoin 100 mg twice daily for five days is first line. "
        "Avoid nitrofurantoin when the eGFR is below 30.",
    ),
    "af.md": (
        "Atrial fibrillation",
        "## Anticoagulation\n\nUse a direct oral anticoagulant when the CHA2DS2-VASc "
        "score is 2 or more in men. Warfarin is required for mechanical heart valves.",
    ),
}


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    for name, (title, body) in BODIES.items():
        write_md(folder, name, title, body)
    return folder


@pytest.fixture()
def settings(tmp_path: Path) -> IndexSettings:
    return IndexSettings.model_validate(
        {"cache_dir": str(tmp_path / "cache"), "chunker": {"max_tokens": 48, "overlap_tokens": 8}}
    )


def test_round_trip_build_info_verify_add_remove(
    tmp_path: Path, corpus: Path, settings: IndexSettings, fake_embedder: HashEmbedder
) -> None:
    out = tmp_path / "index"
    first = build_index([corpus], out, settings, embedder=fake_embedder)
    assert first.committed and first.failures == ()
    assert first.documents == 3 and first.searchable_chunks >= 3
    assert first.vectors_embedded == first.searchable_chunks
    manifest = read_manifest(out)
    assert manifest["counts"]["documents"] == 3
    assert manifest["embedder"] == {"name": fake_embedder.name, "dim": 32, "normalized": True, "max_tokens": 64}
    assert {Path(s["path"]).name for s in manifest["sources"]} == set(BODIES)
    assert all(len(s["sha256"]) == 64 for s in manifest["sources"])
    assert verify_bundle(out).ok

    hits = Searcher.load(out, fake_embedder).search("nitrofurantoin for cystitis", k=2, mode="bm25")
    assert hits[0].meta.title == "Cystitis"
    assert hits[0].meta.year == 2020 and "bm25" in hits[0].retrievers

    new = write_md(tmp_path / "more", "asthma.md", "Asthma", "## Relief\n\nUse budesonide-formoterol as needed.")
    added = add_sources(out, [new], embedder=fake_embedder)
    assert added.documents == 4 and added.sources_unchanged == 3 and added.sources_loaded == 1
    assert added.vectors_reused == first.searchable_chunks
    assert added.vectors_embedded == added.searchable_chunks - first.searchable_chunks
    assert verify_bundle(out).ok

    removed = remove_from_index(out, doc_ids=["htn"], embedder=fake_embedder)
    assert removed.documents == 3 and removed.vectors_embedded == 0
    assert verify_bundle(out).ok
    titles = {h.meta.title for h in Searcher.load(out, fake_embedder).search("thiazide amlodipine", k=10)}
    assert "Hypertension" not in titles

    gone = remove_from_index(out, source_paths=[new], embedder=fake_embedder)
    assert gone.documents == 2 and gone.sources == 3 and gone.sources_removed == 1 and verify_bundle(out).ok


def test_unchanged_rebuild_writes_nothing_and_embeds_nothing(
    tmp_path: Path, corpus: Path, settings: IndexSettings, fake_embedder: HashEmbedder
) -> None:
    out = tmp_path / "index"
    build_index([corpus], out, settings, embedder=fake_embedder)
    generation = read_manifest(out)["generation"]
    again = build_index([corpus], out, settings, embedder=fake_embedder)
    assert not again.committed and again.sources_unchanged == 3 and again.vectors_embedded == 0
    assert read_manifest(out)["generation"] == generation

    (corpus / "uti.md").write_text((corpus / "uti.md").read_text() + "\nRecheck after three days.\n")
    changed = build_index([corpus], out, settings, embedder=fake_embedder)
    assert changed.committed and changed.sources_loaded == 1 and changed.sources_unchanged == 2
    assert 0 < changed.vectors_embedded < changed.searchable_chunks


def test_vectors_come_from_cache_for_a_new_bundle(
    tmp_path: Path, corpus: Path, settings: IndexSettings, fake_embedder: HashEmbedder
) -> None:
    build_index([corpus], tmp_path / "a", settings, embedder=fake_embedder)
    second = build_index([corpus], tmp_path / "b", settings, embedder=fake_embedder)
    assert second.vectors_embedded == 0 and second.vectors_cached == second.searchable_chunks
    a, b = load_bundle(tmp_path / "a"), load_bundle(tmp_path / "b")
    np.testing.assert_array_equal(np.asarray(a.vectors), np.asarray(b.vectors))


def test_bad_sources_are_reported_and_the_rest_indexed(
    tmp_path: Path, corpus: Path, settings: IndexSettings, fake_embedder: HashEmbedder
) -> None:
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog")
    (corpus / "empty.txt").write_text("")
    report = build_index([corpus, tmp_path / "missing.md"], tmp_path / "index", settings, embedder=fake_embedder)
    assert report.committed and report.exit_code == 1 and report.documents == 3
    failed = {Path(f.path).name for f in report.failures}
    assert {"broken.pdf", "empty.txt", "missing.md"} <= failed
    manifest = read_manifest(tmp_path / "index")
    assert {Path(f["path"]).name for f in manifest["failures"]} >= {"broken.pdf", "empty.txt"}
    assert verify_bundle(tmp_path / "index").ok


def test_a_source_that_turns_bad_keeps_its_previous_version(
    tmp_path: Path, corpus: Path, settings: IndexSettings, fake_embedder: HashEmbedder
) -> None:
    out = tmp_path / "index"
    build_index([corpus], out, settings, embedder=fake_embedder)
    (corpus / "uti.md").write_bytes(b"\x00\x01\x02binary garbage\x00" * 50)
    report = build_index([corpus], out, settings, embedder=fake_embedder)
    assert report.exit_code == 1 and report.documents == 3
    assert "kept the previously indexed version" in report.failures[0].reason
    hits = Searcher.load(out, fake_embedder).search("nitrofurantoin", k=1)
    assert hits[0].meta.title == "Cystitis"


def test_duplicate_documents_collapse(
    tmp_path: Path, corpus: Path, settings: IndexSettings, fake_embedder: HashEmbedder
) -> None:
    title, body = BODIES["uti.md"]
    write_md(corpus, "uti-copy.md", title, body)
    report = build_index([corpus], tmp_path / "index", settings, embedder=fake_embedder)
    assert report.documents == 4 and report.duplicates >= 1
    bundle = load_bundle(tmp_path / "index")
    assert len(bundle.active_chunks) == report.searchable_chunks == report.chunks - report.duplicates
    assert verify_bundle(tmp_path / "index").ok


def test_remove_unknown_document_is_an_error(
    tmp_path: Path, corpus: Path, settings: IndexSettings, fake_embedder: HashEmbedder
) -> None:
    out = tmp_path / "index"
    build_index([corpus], out, settings, embedder=fake_embedder)
    with pytest.raises(ConfigError, match="not in the index"):
        remove_from_index(out, doc_ids=["nope"], embedder=fake_embedder)
    with pytest.raises(ConfigError, match="not in the index"):
        remove_from_index(out, source_paths=[tmp_path / "nope.md"], embedder=fake_embedder)
    assert verify_bundle(out).ok


def test_other_embedder_is_refused(
    tmp_path: Path, corpus: Path, settings: IndexSettings, fake_embedder: HashEmbedder
) -> None:
    out = tmp_path / "index"
    build_index([corpus], out, settings, embedder=fake_embedder)
    other = HashEmbedder(dim=16, max_tokens=64)
    with pytest.raises(BundleMismatchError, match="--embedder"):
        Searcher.load(out, other)
    with pytest.raises(BundleMismatchError):
        add_sources(out, [corpus], embedder=other)
    same_name_other_dim = HashEmbedder(dim=16, max_tokens=64, name="clinrag/hash-embedder")
    object.__setattr__(same_name_other_dim, "_name", fake_embedder.name)
    with pytest.raises(BundleMismatchError, match="dimensional"):
        Searcher.load(out, same_name_other_dim).search("cystitis", mode="dense")


def test_refuses_to_write_into_a_foreign_directory(
    tmp_path: Path, corpus: Path, settings: IndexSettings, fake_embedder: HashEmbedder
) -> None:
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"...")
    with pytest.raises(ConfigError, match="not empty"):
        build_index([corpus], foreign, settings, embedder=fake_embedder)
    assert sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]


def test_format_version_mismatch_says_what_to_do(
    tmp_path: Path, corpus: Path, settings: IndexSettings, fake_embedder: HashEmbedder
) -> None:
    out = tmp_path / "index"
    build_index([corpus], out, settings, embedder=fake_embedder)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = 99
    manifest["manifest_sha256"] = manifest_checksum(manifest)  # as a newer clinrag would write it
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleMismatchError, match="upgrade clinrag"):
        load_bundle(out)


def test_no_pickle_in_the_bundle(
    tmp_path: Path, corpus: Path, settings: IndexSettings, fake_embedder: HashEmbedder
) -> None:
    out = tmp_path / "index"
    build_index([corpus], out, settings, embedder=fake_embedder)
    for path in out.iterdir():
        if path.suffix in {".npy", ".npz"}:
            # allow_pickle=False loads fail on object arrays: this proves every array is plain data.
            loaded = np.load(path, allow_pickle=False)
            if hasattr(loaded, "files"):
                for name in loaded.files:
                    assert loaded[name].dtype != object
        assert b"\x80\x04\x95" not in path.read_bytes()[:64]  # pickle protocol 4 header


def test_new_text_pipeline_rechunks_but_reuses_vectors(
    tmp_path: Path,
    corpus: Path,
    settings: IndexSettings,
    fake_embedder: HashEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "index"
    first = build_index([corpus], out, settings, embedder=fake_embedder)
    import indexer.assemble
    import indexer.build

    monkeypatch.setattr(indexer.assemble, "TEXT_PIPELINE_VERSION", 999)
    monkeypatch.setattr(indexer.build, "TEXT_PIPELINE_VERSION", 999)
    again = build_index([corpus], out, settings, embedder=fake_embedder)
    assert again.committed and again.sources_loaded == 3
    assert again.vectors_embedded == 0 and again.vectors_reused == first.searchable_chunks
    assert read_manifest(out)["text_pipeline_version"] == 999
