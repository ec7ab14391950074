"""corpora/ is a collection of separate corpora: each member builds cleanly, the folder itself is refused at once.

The rule (a `collection.toml` marker, indexer.load.collection) is tested on folders made in tmp_path; the real
corpora/ is checked for a marker that matches its folders, manifests that resolve into the shared data, and no
folder that holds the same documents twice. MedQuAD is loaded (about a second) but never embedded here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from indexer import build_index
from indexer.load import iter_source_files, load_source
from indexer.load.collection import COLLECTION_FILE, read_collection, refuse_collection
from indexer.load.manifest import is_manifest, parse_manifest
from indexer.sharded import build_sharded_index
from rag.core.config import IndexSettings
from rag.core.errors import ConfigError
from rag.models.embed import Vectors
from rag.testing import HashEmbedder

PROJECT = Path(__file__).resolve().parents[2]
CORPORA = PROJECT / "corpora"


class RecordingEmbedder(HashEmbedder):
    """The test fake, remembering every text it was asked to count or embed."""

    def __init__(self) -> None:
        super().__init__(dim=32, max_tokens=64)
        self.seen: list[str] = []

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        self.seen.extend(texts)
        return super().count_tokens(texts)

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        self.seen.extend(texts)
        return super().embed(texts, progress=progress)


@pytest.fixture()
def settings(tmp_path: Path) -> IndexSettings:
    return IndexSettings.model_validate({"cache_dir": str(tmp_path / "cache"), "progress": False})


def write_collection(root: Path, members: dict[str, bool]) -> Path:
    """A collection folder with one Markdown document in each member."""
    lines = ["clinrag_collection = 1"]
    for name, corpus in members.items():
        lines += [f"[members.{name}]", f"corpus = {str(corpus).lower()}", f'description = "the {name} folder"']
        (root / name).mkdir(parents=True)
        (root / name / f"{name}.md").write_text(f"# {name}\n\nSome text about {name}.\n", encoding="utf-8")
    (root / COLLECTION_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# The rule, on folders made here.


def test_building_a_collection_fails_fast_with_one_line(tmp_path: Path, settings: IndexSettings) -> None:
    root = write_collection(tmp_path / "shelf", {"demo": True, "data": True, "samples": False})
    embedder = RecordingEmbedder()
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as caught:
        build_index([root], out, settings, embedder=embedder)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{root}: holds several corpora (demo/, data/; not a corpus: samples/)")
    assert message.endswith(f"build one of them, e.g. clinrag index build {root / 'demo'}")
    assert embedder.seen == [] and not out.exists()  # nothing loaded or embedded, --out not even created


def test_a_collection_inside_a_walked_folder_is_refused(tmp_path: Path) -> None:
    write_collection(tmp_path / "top" / "shelf", {"demo": True})
    with pytest.raises(ConfigError, match="holds several corpora"):
        iter_source_files([tmp_path / "top"])


def test_a_sharded_build_refuses_a_collection_too(tmp_path: Path, settings: IndexSettings) -> None:
    root = write_collection(tmp_path / "shelf", {"demo": True})
    with pytest.raises(ConfigError, match="holds several corpora"):
        build_sharded_index([root], tmp_path / "out", 2, settings, embedder=RecordingEmbedder())
    assert not (tmp_path / "out").exists()


def test_members_build_and_non_corpus_members_are_refused(tmp_path: Path, settings: IndexSettings) -> None:
    root = write_collection(tmp_path / "shelf", {"demo": True, "samples": False})
    report = build_index([root / "demo"], tmp_path / "out", settings, embedder=HashEmbedder(dim=32, max_tokens=64))
    assert report.failures == () and report.documents == 1
    with pytest.raises(ConfigError) as caught:
        iter_source_files([root / "samples"])
    assert str(caught.value) == (
        f"{root / 'samples'}: the samples folder ({root / COLLECTION_FILE} marks it corpus = false); "
        f"build a corpus instead, e.g. clinrag index build {root / 'demo'}"
    )


def test_a_manifest_pointing_at_a_collection_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    write_collection(tmp_path / "shelf", {"demo": True})
    manifest = tmp_path / "all.corpus.json"
    manifest.write_text(json.dumps({"clinrag_corpus": 1, "path": "shelf"}), encoding="utf-8")
    result = load_source(manifest)
    assert result.documents == ()
    assert len(result.failures) == 1 and "holds several corpora" in result.failures[0].reason
    assert 'fix "path"' in result.failures[0].reason


def test_a_collection_toml_of_someone_else_is_ignored(tmp_path: Path) -> None:
    (tmp_path / COLLECTION_FILE).write_text('title = "my stamps"\n', encoding="utf-8")
    (tmp_path / "a.md").write_text("# A\n\nText.\n", encoding="utf-8")
    assert read_collection(tmp_path) is None
    assert iter_source_files([tmp_path])[0] == [tmp_path / "a.md"]
    (tmp_path / COLLECTION_FILE).write_text("[[[ not toml", encoding="utf-8")
    assert read_collection(tmp_path) is None


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        ("clinrag_collection = 2\n", "set clinrag_collection = 1"),
        ("clinrag_collection = 1\nmembrs = 1\n", "unknown key(s) membrs"),
        ("clinrag_collection = 1\n[members.demo]\ncorpus = 'yes'\n", "corpus = true|false"),
        ("clinrag_collection = [1\n", "invalid TOML"),
    ],
)
def test_a_broken_marker_says_what_to_fix(tmp_path: Path, text: str, fix: str) -> None:
    (tmp_path / COLLECTION_FILE).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="collection") as caught:
        refuse_collection(tmp_path)
    assert fix in str(caught.value)


# The real corpora/ folder.


def test_corpora_is_a_collection_and_building_it_fails_fast(tmp_path: Path, settings: IndexSettings) -> None:
    embedder = RecordingEmbedder()
    with pytest.raises(ConfigError) as caught:
        build_index([CORPORA], tmp_path / "out", settings, embedder=embedder)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{CORPORA}: holds several corpora (guidelines/, datasets/")
    assert f"clinrag index build {CORPORA / 'guidelines'}" in message
    assert embedder.seen == [] and not (tmp_path / "out").exists()


def test_the_marker_lists_every_folder_of_corpora() -> None:
    collection = read_collection(CORPORA)
    assert collection is not None
    folders = {p.name for p in CORPORA.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert {m.name for m in collection.members} == folders
    assert {m.name for m in collection.members if not m.corpus} == {"examples"}
    assert all(m.description for m in collection.members)
    assert not [p.name for p in CORPORA.iterdir() if p.is_file() and p.name not in (COLLECTION_FILE, "README.md")]


def test_the_demo_guidelines_build_cleanly(tmp_path: Path, settings: IndexSettings) -> None:
    embedder = HashEmbedder(dim=32, max_tokens=64)
    report = build_index([CORPORA / "guidelines"], tmp_path / "out", settings, embedder=embedder)
    assert report.failures == () and report.exit_code == 0
    assert report.documents == 14 and report.committed


def corpus_folders() -> list[Path]:
    collection = read_collection(CORPORA)
    assert collection is not None
    return [CORPORA / m.name for m in collection.members if m.corpus]


def manifests() -> list[Path]:
    return sorted(CORPORA.rglob("*.corpus.json"))


def test_every_manifest_resolves_into_the_shared_data(shared_data: Path) -> None:
    found = manifests()
    assert {p.parent.name for p in found} == {"datasets", "pubmedqa-pqal"}
    for path in found:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert is_manifest(data), path
        manifest = parse_manifest(path, data)
        assert manifest.target.exists(), path
        assert manifest.target.resolve().is_relative_to(shared_data.resolve()), path
        assert manifest.overrides.doc_type and manifest.overrides.source and manifest.overrides.licence, path


def test_no_folder_holds_the_same_documents_twice(shared_data: Path) -> None:
    """Load (never embed) every source of every corpus folder: no failures, and no document id twice."""
    for folder in corpus_folders():
        files, walk_failures = iter_source_files([folder])
        assert files and walk_failures == [], folder
        data = {f: json.loads(f.read_bytes()) for f in files if f.suffix == ".json"}
        targets = [parse_manifest(f, d).target.resolve() for f, d in data.items() if is_manifest(d)]
        assert len(targets) == len(set(targets)), folder
        owner: dict[str, Path] = {}
        for file in files:
            result = load_source(file)
            assert result.failures == (), (file, result.failures[:3])
            for doc in result.documents:
                assert doc.doc_id not in owner, f"{doc.doc_id} in both {owner[doc.doc_id]} and {file}"
                owner[doc.doc_id] = file
