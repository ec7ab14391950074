"""Integrity: any single flipped byte in any bundle file is caught, and a damaged bundle never answers.

Each trial flips one byte (XOR with a random non-zero mask) at a random position of one bundle file, manifest
included. `verify_bundle` must report it, naming the file; loading must fail with a `BundleError`, because
`load_bundle` checks every file against its checksum and the manifest against its own. The one exception is a
manifest change that leaves its JSON content equal (a space turned into a tab, or the checksum key's own name
damaged): loading then gives exactly the original bundle, which is checked by comparing search results.

CLINRAG_INTEGRITY_FLIPS sets the flips per file (default 6; the report's figure used 150, i.e. 1050 flips).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from indexer import add_sources, build_index, verify_bundle
from rag.cli.main import main
from rag.core.errors import BundleError
from rag.index.store import MANIFEST, MANIFEST_CHECKSUM, load_bundle, manifest_bytes, manifest_checksum, read_manifest
from rag.retrieval.search import Searcher
from tests.reliability.helpers import embedder, index_settings, trials, write_corpus

FLIPS_PER_FILE = trials("CLINRAG_INTEGRITY_FLIPS", 6)
QUERIES = ["treatment of cystitis", "gout colchicine", "refer migraine to a specialist"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    build_index(write_corpus(root / "src", 5), root / "index", index_settings(root / "cache"), embedder=embedder())
    assert verify_bundle(root / "index").ok
    return root / "index"


@pytest.fixture()
def bundle(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(pristine, copy)
    return copy


def _answers(directory: Path) -> list[list[tuple[str, float]]]:
    searcher = Searcher.load(directory, embedder())
    return [[(e.chunk.chunk_id, round(e.score, 6)) for e in searcher.search(q, k=5)] for q in QUERIES]


def _bundle_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


def test_every_single_byte_flip_is_caught(bundle: Path) -> None:
    rng = random.Random(20240607)
    expected = _answers(bundle)
    names = _bundle_files(bundle)
    assert len(names) == 7 and MANIFEST in names
    outcomes = {"load refused": 0, "manifest JSON unchanged, same answers": 0}
    for name in names:
        path = bundle / name
        original = path.read_bytes()
        for _ in range(FLIPS_PER_FILE):
            position = rng.randrange(len(original))
            damaged = bytearray(original)
            damaged[position] ^= rng.randrange(1, 256)
            path.write_bytes(bytes(damaged))
            where = f"{name} byte {position}: {original[position]:#04x} -> {damaged[position]:#04x}"

            report = verify_bundle(bundle)
            assert not report.ok, where
            assert any(name in problem for problem in report.problems), (where, report.problems)
            try:
                load_bundle(bundle)
            except BundleError as exc:
                assert name in str(exc) and ("rebuild" in str(exc) or "verify" in str(exc)), (where, str(exc))
                outcomes["load refused"] += 1
            else:
                # Only a manifest whose JSON content is unchanged may still load, and then it must be identical.
                assert name == MANIFEST, where
                loaded = json.loads(bytes(damaged))
                pristine_manifest = json.loads(original)
                checksum = pristine_manifest.pop(MANIFEST_CHECKSUM)
                # The checksum's own key renamed ("manifest_sha25>"): loads as a manifest from before checksums.
                renamed = [k for k in loaded if k not in pristine_manifest]
                assert all(loaded.pop(k) == checksum for k in renamed), where
                assert loaded == pristine_manifest, where
                assert _answers(bundle) == expected, where
                outcomes["manifest JSON unchanged, same answers"] += 1
        path.write_bytes(original)
    assert verify_bundle(bundle).ok and _answers(bundle) == expected
    assert sum(outcomes.values()) == FLIPS_PER_FILE * len(names)
    print(f"integrity: {FLIPS_PER_FILE * len(names)} flips over {len(names)} files: {outcomes}")


@pytest.mark.parametrize("role", ["chunks", "documents", "vectors", "dense", "bm25", "bm25_vocab"])
def test_truncated_or_missing_file_is_refused(bundle: Path, role: str) -> None:
    name = read_manifest(bundle)["files"][role]["name"]
    path = bundle / name
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(BundleError, match=f"{name} has .* bytes"):
        load_bundle(bundle)
    assert not verify_bundle(bundle).ok
    path.unlink()
    with pytest.raises(BundleError, match="missing"):
        Searcher.load(bundle, embedder())
    assert any("missing" in p for p in verify_bundle(bundle).problems)


def test_text_edit_that_keeps_json_valid_is_refused(bundle: Path) -> None:
    """The dangerous case: a dose changed in a chunk reads as valid data; only the checksum can tell."""
    chunks = next(bundle.glob("chunks.g*.jsonl"))
    text = chunks.read_text(encoding="utf-8")
    assert "100 mg" in text
    chunks.write_text(text.replace("100 mg", "900 mg"), encoding="utf-8")
    with pytest.raises(BundleError, match="does not match its checksum"):
        Searcher.load(bundle, embedder())


def _rewrite_manifest(bundle: Path, change: dict[str, object]) -> None:
    """Edit the manifest as an attacker who knows the format would: with a matching checksum."""
    manifest = read_manifest(bundle)
    manifest["files"]["chunks"].update(change)
    manifest[MANIFEST_CHECKSUM] = manifest_checksum(manifest)
    (bundle / MANIFEST).write_bytes(manifest_bytes(manifest))


@pytest.mark.parametrize(
    "name",
    [
        "../outside/chunks.g1.jsonl",
        "/etc/passwd",
        "{outside}",
        "sub/chunks.g1.jsonl",
        "documents.g1.jsonl",  # another role's file
        "chunks.g1.jsonl/..",
        "chunks.g1.json",
        "..",
        "",
        42,
        None,
    ],
)
def test_manifest_paths_cannot_escape_the_bundle(bundle: Path, tmp_path: Path, name: object) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    real = next(bundle.glob("chunks.g*.jsonl"))
    # A well-formed chunk file outside the bundle: following the path would load it without complaint.
    shutil.copy(real, outside / "chunks.g1.jsonl")
    target = str(outside / "chunks.g1.jsonl") if name == "{outside}" else name
    _rewrite_manifest(bundle, {"name": target})
    with pytest.raises(BundleError, match="not a bundle file name"):
        load_bundle(bundle)
    with pytest.raises(BundleError, match="not a bundle file name"):
        Searcher.load(bundle, embedder())
    report = verify_bundle(bundle)
    assert not report.ok and any("not a bundle file name" in p for p in report.problems)


def test_manifest_must_list_exactly_the_bundle_files(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    manifest["files"]["extra"] = {"name": "extra.g1.bin", "sha256": "0" * 64, "bytes": 1}
    manifest[MANIFEST_CHECKSUM] = manifest_checksum(manifest)
    (bundle / MANIFEST).write_bytes(manifest_bytes(manifest))
    with pytest.raises(BundleError, match="must list exactly the files"):
        load_bundle(bundle)
    del manifest["files"]
    manifest[MANIFEST_CHECKSUM] = manifest_checksum(manifest)
    (bundle / MANIFEST).write_bytes(manifest_bytes(manifest))
    with pytest.raises(BundleError, match="must list exactly the files"):
        load_bundle(bundle)


def test_damaged_settings_are_a_bundle_error_not_a_crash(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    manifest["settings"]["dense"] = {"kind": "no-such-kind"}
    manifest[MANIFEST_CHECKSUM] = manifest_checksum(manifest)
    (bundle / MANIFEST).write_bytes(manifest_bytes(manifest))
    with pytest.raises(BundleError, match="damaged index"):
        load_bundle(bundle)


def test_older_manifest_without_checksum_loads_but_verify_flags_it(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    del manifest[MANIFEST_CHECKSUM]
    (bundle / MANIFEST).write_bytes(manifest_bytes(manifest))
    assert len(load_bundle(bundle).documents) == 5
    report = verify_bundle(bundle)
    assert not report.ok and "no manifest_sha256" in report.problems[0]


def test_damaged_manifest_version_is_damage_not_an_upgrade(bundle: Path) -> None:
    path = bundle / MANIFEST
    path.write_bytes(path.read_bytes().replace(b'"format_version": 1', b'"format_version": 9'))
    with pytest.raises(BundleError, match="does not match its checksum") as caught:
        load_bundle(bundle)
    assert "upgrade" not in str(caught.value)


def test_rebuild_replaces_a_damaged_bundle_and_add_refuses_it(bundle: Path, tmp_path: Path) -> None:
    """Every integrity message says 'rebuild': a build into the same directory must then work."""
    sources = write_corpus(tmp_path / "src", 5)
    settings = index_settings(tmp_path / "cache")
    chunks = next(bundle.glob("chunks.g*.jsonl"))
    chunks.write_bytes(chunks.read_bytes()[:-3])
    with pytest.raises(BundleError, match="damaged index"):
        add_sources(bundle, write_corpus(tmp_path / "more", 1, start=6), embedder=embedder())
    (bundle / MANIFEST).write_text("{not json", encoding="utf-8")  # even an unreadable manifest
    report = build_index(sources, bundle, settings, embedder=embedder())
    assert report.committed and report.documents == 5
    assert verify_bundle(bundle).ok
    names = _bundle_files(bundle)
    generation = read_manifest(bundle)["generation"]
    assert generation == 2 and all(f".g{generation}." in n for n in names if n != MANIFEST)


def test_cli_verify_reports_a_flipped_manifest_byte(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = bundle / MANIFEST
    raw = bytearray(path.read_bytes())
    raw[raw.index(b'"documents": 5') + len('"documents": ')] = ord("7")
    path.write_bytes(bytes(raw))
    assert main(["index", "verify", str(bundle)]) == 1
    err = capsys.readouterr().err
    assert "manifest.json" in err and "checksum" in err
    assert main(["search", "cystitis", "--index", str(bundle)]) == 2
    assert "does not match its checksum" in capsys.readouterr().err
