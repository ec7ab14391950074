"""Concurrency: many threads on one Engine answer as one thread does, and index updates never show readers a
half-updated bundle: a loaded Searcher keeps its generation, a load during a commit gets one whole generation,
and `Engine.reload` swaps a new one in between two questions, never inside one.

The thread switch interval is cut to 10 microseconds while these tests run, so threads interleave far more
often than in normal use. CLINRAG_CONCURRENCY_ROUNDS sets the rounds (default 2; the report used 50).
"""

from __future__ import annotations

import json
import random
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from indexer import add_sources, build_index, remove_from_index
from rag.answering.engine import Engine
from rag.answering.patient import Patient
from rag.checking.support import LexicalSupportChecker
from rag.core.config import Settings, with_overrides
from rag.index.store import load_bundle
from rag.models.generators.base import ChatMessage
from rag.retrieval.search import Searcher
from rag.testing import LexicalReranker, ScriptedGenerator
from tests.reliability.helpers import CONDITIONS, embedder, index_settings, trials, write_corpus, write_guideline

ROUNDS = trials("CLINRAG_CONCURRENCY_ROUNDS", 2)
THREADS = 8
QUESTIONS = [f"What is the first-line treatment of {condition}?" for condition, _ in CONDITIONS[:8]] + [
    "When should migraine be referred to a specialist?",
    "gout colchicine dose",
    "quantum chromodynamics of gluons",  # weak retrieval: abstains
    "   ",  # an error, answered as an abstention by ask_many
]
PATIENT = Patient.model_validate({"age": 70, "egfr": 25, "allergies": ["penicillin"], "medications": ["colchicine"]})


@pytest.fixture(autouse=True)
def frequent_thread_switches() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(previous)


def reply(messages: Sequence[ChatMessage]) -> str:
    """A deterministic model: cites the first two passages with their first sentence, and one invented key."""
    passages = re.findall(r'<evidence key="(E\d+)"[^>]*>\n[^:\n]*: ([^.\n]*)', messages[-1].content)
    lines = [f"{n}. {text.strip()}. [{key}]" for n, (key, text) in enumerate(passages[:2], 1)]
    return "SUGGESTIONS:\n" + "\n".join([*lines, "3. Rest and fluids help. [E42]"])


def _engine(index: Path, **overrides: object) -> Engine:
    settings = with_overrides(Settings(), {"answer.min_evidence_score": 0.05, "answer.evidence_k": 4, **overrides})
    return Engine.load(
        index,
        ScriptedGenerator(reply),
        settings,
        embedder=embedder(),
        checker=LexicalSupportChecker(),
        reranker=LexicalReranker(),
    )


def _comparable(answer: Any) -> str:
    record = answer.to_dict()
    record.pop("timings_ms")
    return json.dumps(record, sort_keys=True)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("concurrency")
    build_index(write_corpus(root / "src", 10), root / "index", index_settings(root / "cache"), embedder=embedder())
    return root / "index"


def test_many_threads_answer_exactly_as_one(index: Path) -> None:
    engine = _engine(index)
    cases = [(q, None) for q in QUESTIONS] + [(q, PATIENT) for q in QUESTIONS[:4]]
    expected = {(q, p is not None): _comparable(a) for (q, p), a in zip(cases, _ask_each(engine, cases), strict=True)}
    assert sum('"abstained": false' in a for a in expected.values()) >= 8  # most questions are really answered

    def worker(seed: int) -> list[tuple[tuple[str, bool], str]]:
        order = random.Random(seed).sample(cases, len(cases))
        answers = [_comparable(a) for a in _ask_each(engine, order)]
        return [((q, p is not None), a) for (q, p), a in zip(order, answers, strict=True)]

    with ThreadPoolExecutor(THREADS) as pool:
        for round_ in range(ROUNDS):
            for results in pool.map(worker, range(round_ * THREADS, (round_ + 1) * THREADS)):
                for key, answer in results:
                    assert answer == expected[key], key


def _ask_each(engine: Engine, cases: Sequence[tuple[str, Patient | None]]) -> list[Any]:
    # ask_many turns a bad question into an abstention, as a server handling many requests would want.
    return engine.ask_many([q for q, _ in cases], [p for _, p in cases])


def test_concurrent_answers_log_whole_lines(index: Path, tmp_path: Path) -> None:
    log = tmp_path / "answers.jsonl"
    engine = _engine(index, **{"answer.log_file": str(log)})
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda n: engine.ask(QUESTIONS[n % 8]), range(THREADS * 4 * ROUNDS)))
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == THREADS * 4 * ROUNDS
    assert all(json.loads(line)["question"] in QUESTIONS for line in lines)


# --- readers during index updates ----------------------------------------------------------------------------


class Writer:
    """Commits generation after generation (add, remove, full rebuild) and records what each one holds."""

    def __init__(self, index: Path, root: Path) -> None:
        self.index = index
        self.extra = [write_guideline(root / "extra", c, t) for c, t in CONDITIONS[10:12]]
        self.base = sorted((root / "src").glob("*.md"))
        self.settings = index_settings(root / "cache")
        self.generations: dict[int, dict[str, set[str]]] = {}
        self.done = threading.Event()
        self.record()

    def record(self) -> None:
        bundle = load_bundle(self.index)
        self.generations[bundle.manifest["generation"]] = {
            "documents": {d.doc_id for d in bundle.documents},
            "chunks": {c.chunk_id for c in bundle.active_chunks},
        }

    def run(self, commits: int) -> None:
        try:
            for n in range(commits):
                if n % 3 == 0:
                    add_sources(self.index, self.extra, embedder=embedder())
                elif n % 3 == 1:
                    remove_from_index(self.index, source_paths=self.extra[:1], embedder=embedder())
                else:
                    build_index(self.base[: 7 + n % 2], self.index, self.settings, embedder=embedder())
                self.record()
        finally:
            self.done.set()


@pytest.fixture()
def moving_index(tmp_path: Path) -> tuple[Path, Writer]:
    sources = write_corpus(tmp_path / "src", 10)
    build_index(sources, tmp_path / "index", index_settings(tmp_path / "cache"), embedder=embedder())
    return tmp_path / "index", Writer(tmp_path / "index", tmp_path)


def test_searchers_see_one_whole_generation_while_commits_happen(moving_index: tuple[Path, Writer]) -> None:
    index, writer = moving_index
    observed: list[tuple[int, set[str], set[str]]] = []  # (generation, documents, result chunk ids)
    errors: list[str] = []
    held = Searcher.load(index, embedder())  # loaded before any commit: must keep answering from generation 1
    held_results = {q: [e.chunk.chunk_id for e in held.search(q, k=5)] for q in QUESTIONS[:8]}

    def reader() -> None:
        while not writer.done.is_set():
            try:
                searcher = Searcher.load(index, embedder())
                generation = searcher.bundle.manifest["generation"]
                found = {e.chunk.chunk_id for q in QUESTIONS[:8] for e in searcher.search(q, k=5)}
                observed.append((generation, {d.doc_id for d in searcher.bundle.documents}, found))
                for q, ids in held_results.items():
                    if [e.chunk.chunk_id for e in held.search(q, k=5)] != ids:
                        errors.append(f"a loaded Searcher changed its answer to {q!r} after a commit")
            except Exception as exc:  # an exception in a thread would otherwise only be a pytest warning
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    writer.run(commits=3 * ROUNDS)
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert len(writer.generations) == 3 * ROUNDS + 1
    assert len({g for g, _, _ in observed}) >= 2, "readers never loaded a second generation: the test proves nothing"
    for generation, documents, found in observed:
        committed = writer.generations[generation]
        assert documents == committed["documents"], f"generation {generation}: documents of another generation"
        assert found <= committed["chunks"], f"generation {generation}: results from another generation"
    latest = max(writer.generations)
    fresh = Searcher.load(index, embedder())
    assert fresh.bundle.manifest["generation"] == latest
    assert {d.doc_id for d in fresh.bundle.documents} == writer.generations[latest]["documents"]


def test_engine_reload_swaps_between_questions_never_inside_one(moving_index: tuple[Path, Writer]) -> None:
    index, writer = moving_index
    engine = _engine(index)
    answers: list[tuple[str, set[str]]] = []
    errors: list[str] = []

    def asker(seed: int) -> None:
        rng = random.Random(seed)
        while not writer.done.is_set():
            question = rng.choice(QUESTIONS[:8])
            try:
                answer = engine.ask(question)
            except Exception as exc:  # any failure of a reader is what this test is about
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            answers.append((question, {r.chunk_id for r in answer.references}))

    def reloading_writer() -> None:
        original = writer.record

        def record_and_reload() -> None:
            original()
            engine.reload()

        writer.record = record_and_reload  # type: ignore[method-assign]
        writer.run(commits=3 * ROUNDS)

    threads = [threading.Thread(target=asker, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    reloading_writer()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert engine.searcher.bundle.manifest["generation"] == max(writer.generations)
    for question, references in answers:
        assert any(references <= g["chunks"] for g in writer.generations.values()), (
            f"an answer to {question!r} mixed passages of two generations"
        )
    assert not engine.reload()  # nothing new on disk: no reload
