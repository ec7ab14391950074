"""Kill `build`, `add` and `remove` with SIGKILL over many trials; check the bundle after every kill.

Run by tests/reliability/test_crash_trials.py as `python -m tests.reliability.crash_driver CONFIG_JSON`; prints one
JSON summary line.

The driver process only forks, sleeps, kills and copies folders: every index operation and every check runs in
a forked child, so the driver never starts FAISS or OpenMP threads that a fork could inherit half-locked, and a
trial costs no interpreter start. Two ways to pick the kill moment:

- "time": SIGKILL from the driver after a random delay, uniform over 1.1 x the operation's measured duration,
  so kills land anywhere: loading, embedding, cache writes, file writes, the commit, the clean-up;
- "step": the child kills itself just before its k-th write step (file writes, fsyncs, the manifest
  rename, deletions), k uniform over all the steps of a full run, so every step is hit, not only the long ones.

After each kill a checking child asserts: the manifest is exactly the previous one (and the documents the
previous ones) or exactly the new one; `verify_bundle` is ok; a Searcher loads and answers. If the old bundle
survived, the operation is run again to completion and must succeed, clean up every stale file and verify.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

OPERATIONS = ("build", "add", "remove", "first-build")
OLD_SOURCES = 6


def _corpus(root: Path, op: str) -> list[Path]:
    return sorted((root / f"{op}-corpus").glob("*.md"))


def _operation(op: str, root: Path, target: Path) -> Callable[[], int]:
    """The operation on `target`, with the embedding cache `target`.cache beside it: each trial starts with
    no cache, so a kill can also land in a cache write, and the re-run must cope with what it left."""
    from indexer import add_sources, build_index, remove_from_index
    from tests.reliability.helpers import embedder, index_settings

    corpus = _corpus(root, op)
    settings = index_settings(target.with_name(target.name + ".cache"))
    if op in ("build", "first-build"):
        # A full rebuild that drops two sources, keeps three, keeps one whose text changed, brings three new.
        sources = corpus[2 : OLD_SOURCES + 3]
        return lambda: build_index(sources, target, settings, embedder=embedder()).exit_code
    if op == "add":
        new = corpus[OLD_SOURCES : OLD_SOURCES + 3]
        return lambda: add_sources(target, new, embedder=embedder()).exit_code
    if op == "remove":
        return lambda: remove_from_index(target, doc_ids=["asthma", "gout"], embedder=embedder()).exit_code
    raise ValueError(f"unknown operation {op!r}; use one of {', '.join(OPERATIONS)}")


def _make_corpus(root: Path, op: str) -> None:
    from tests.reliability.helpers import write_corpus

    write_corpus(root / f"{op}-corpus", OLD_SOURCES + 3)


def _change_a_source(root: Path, op: str) -> None:
    """After the starting bundle is built: the full rebuild then meets one source with new text."""
    from tests.reliability.helpers import write_guideline

    write_guideline(root / f"{op}-corpus", "cystitis", "fosfomycin 3 g as a single dose", year=2024)


# --- write steps, counted in the child ----------------------------------------------------------------------


def _install_step_counter(kill_at: int | None, record: list[str]) -> None:
    """Wrap each write step; kill the process just before step `kill_at` (1-based), or only record them."""
    import pathlib

    import numpy as np

    import rag.index.dense
    import rag.index.sparse
    import rag.index.store

    def wrap(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            record.append(label)
            if kill_at is not None and len(record) >= kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        setattr(owner, name, wrapped)

    wrap(rag.index.store, "_write_jsonl", "write jsonl")
    wrap(np, "save", "write vectors")
    wrap(rag.index.dense, "write_dense_index", "write faiss")
    wrap(rag.index.sparse.TermCounts, "save", "write bm25")
    wrap(rag.index.store, "fsync_file", "fsync data file")
    wrap(rag.index.store, "atomic_write_bytes", "write manifest tmp")
    wrap(os, "replace", "rename manifest")
    wrap(rag.index.store, "_remove_other_generations", "delete old generation")
    wrap(pathlib.Path, "unlink", "unlink file")


# --- children -----------------------------------------------------------------------------------------------


def _fork(body: Callable[[], int]) -> int:
    pid = os.fork()
    if pid == 0:  # child: never return into the driver's loop
        code = 1
        try:
            code = body()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _wait(pid: int) -> tuple[str, int]:
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "killed", os.WTERMSIG(status)
    return "exited", os.WEXITSTATUS(status)


def _snapshot(directory: Path) -> dict[str, Any]:
    from rag.index.store import is_bundle, load_bundle, read_manifest

    if not is_bundle(directory):
        return {"generation": 0, "documents": [], "manifest": None}
    return {
        "generation": read_manifest(directory)["generation"],
        "documents": sorted(d.doc_id for d in load_bundle(directory).documents),
        "manifest": (directory / "manifest.json").read_text(encoding="utf-8"),
    }


def _check(op: str, root: Path, work: Path, old: dict[str, Any], new: dict[str, Any], out: Path) -> int:
    from indexer import verify_bundle
    from rag.index.store import holds_only_clinrag_files, is_bundle, read_manifest
    from rag.retrieval.search import Searcher
    from tests.reliability.helpers import embedder

    result: dict[str, Any] = {"problems": []}
    problems: list[str] = result["problems"]
    now = _snapshot(work)
    if now["generation"] == old["generation"]:
        result["state"] = "old"
        if now["manifest"] != old["manifest"] or now["documents"] != old["documents"]:
            problems.append("the previous bundle changed although the write never committed")
        if not is_bundle(work) and not holds_only_clinrag_files(work):
            problems.append("a killed first build left files that are not clinrag's")
    elif now["generation"] == new["generation"]:
        result["state"] = "new"
        if now["documents"] != new["documents"]:
            problems.append(f"committed generation holds {now['documents']}, expected {new['documents']}")
    else:
        problems.append(f"generation {now['generation']} is neither the old nor the new one")
    if is_bundle(work):
        report = verify_bundle(work)
        problems += report.problems
        hits = Searcher.load(work, embedder()).search("first-line treatment", k=3)
        if not hits:
            problems.append("the surviving bundle answers nothing")
    if result.get("state") == "old":
        if _operation(op, root, work)() != 0:  # the interrupted operation, run again, must complete
            problems.append("re-running the operation after the kill reported failures")
        after = _snapshot(work)
        if after["documents"] != new["documents"]:
            problems.append(f"re-run after the kill holds {after['documents']}, expected {new['documents']}")
        problems += verify_bundle(work).problems
        generation = read_manifest(work)["generation"]
        stale = [
            p.name
            for p in work.iterdir()
            if p.name.startswith(".manifest.") or (".g" in p.name and f".g{generation}." not in p.name)
        ]
        if stale:
            problems.append(f"stale files after the re-run: {stale}")
    out.write_text(json.dumps(result), encoding="utf-8")
    return 0 if not problems else 1


def _prepare(op: str, root: Path) -> dict[str, Any]:
    """The bundle before the operation, a full run's duration and write steps, and the bundle after it."""
    template = root / f"{op}-before"
    _make_corpus(root, op)
    if op == "first-build":
        template.mkdir()
    else:

        def build_old() -> int:
            from indexer import build_index
            from tests.reliability.helpers import embedder, index_settings

            sources = _corpus(root, op)[:OLD_SOURCES]
            settings = index_settings(root / f"{op}-before-cache")
            return build_index(sources, template, settings, embedder=embedder()).exit_code

        assert _wait(_fork(build_old)) == ("exited", 0), "building the starting bundle failed"
    if op == "build":
        _change_a_source(root, op)
    info_path = root / f"{op}-info.json"

    def full_run() -> int:
        old = _snapshot(template)
        work = root / f"{op}-full"
        shutil.copytree(template, work)
        steps: list[str] = []
        _install_step_counter(None, steps)
        started = time.perf_counter()
        code = _operation(op, root, work)()
        seconds = time.perf_counter() - started
        info = {"old": old, "new": _snapshot(work), "seconds": seconds, "steps": steps}
        info_path.write_text(json.dumps(info), encoding="utf-8")
        return code

    assert _wait(_fork(full_run)) == ("exited", 0), f"a full {op} run failed"
    info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8"))
    # The kill delay is drawn over what the driver's timer sees for an uninstrumented run, fork included.
    walls = []
    for n in range(3):
        work = root / f"{op}-timed-{n}"
        shutil.copytree(template, work)
        started = time.perf_counter()
        assert _wait(_fork(_operation(op, root, work))) == ("exited", 0), f"a timed {op} run failed"
        walls.append(time.perf_counter() - started)
    info["wall_seconds"] = sorted(walls)[1]
    return info


def _trial(op: str, root: Path, info: dict[str, Any], mode: str, rng: random.Random, name: str) -> dict[str, Any]:
    work = root / f"{op}-work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(work.with_name(work.name + ".cache"), ignore_errors=True)
    shutil.copytree(root / f"{op}-before", work)
    record: dict[str, Any] = {"mode": mode}
    if mode == "time":
        delay = rng.uniform(0.0, 1.1 * info["wall_seconds"])
        record["delay_s"] = round(delay, 4)
        pid = _fork(_operation(op, root, work))
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)  # a child that already finished is a zombie: no error
    else:
        step = rng.randint(1, len(info["steps"]))
        record["step"] = f"{step}/{len(info['steps'])}: {info['steps'][step - 1]}"

        def killed_at_step() -> int:
            _install_step_counter(step, [])
            return _operation(op, root, work)()

        pid = _fork(killed_at_step)
    how, code = _wait(pid)
    record["process"] = "killed" if how == "killed" and code == signal.SIGKILL else f"{how} {code}"
    out = root / f"{op}-check-{name}.json"
    check_how, check_code = _wait(_fork(lambda: _check(op, root, work, info["old"], info["new"], out)))
    record.update(json.loads(out.read_text(encoding="utf-8")) if out.exists() else {"problems": []})
    record["ok"] = (check_how, check_code) == ("exited", 0) and record["process"] in ("killed", "exited 0")
    if not record["ok"] and not record["problems"]:
        record["problems"] = [f"checker {check_how} {check_code}; process {record['process']}"]
    return record


def run(config: dict[str, Any]) -> dict[str, Any]:
    root = Path(config["root"])
    rng = random.Random(config.get("seed", 0))
    results: dict[str, Any] = {}
    for op in config["operations"]:
        info = _prepare(op, root)
        modes = [mode for mode in ("time", "step") for _ in range(config["trials"])]
        trials = [_trial(op, root, info, mode, rng, f"{mode}-{n}") for n, mode in enumerate(modes)]
        results[op] = {"seconds": round(info["wall_seconds"], 3), "steps": len(info["steps"]), "trials": trials}
    return results


def main() -> None:
    config = json.loads(sys.argv[1])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # Imported once here so that a forked child starts working at once: a random kill time must fall in the
    # operation, not in its imports. Importing starts no FAISS or OpenMP threads.
    import faiss  # noqa: F401

    import indexer  # noqa: F401
    import rag.retrieval.search  # noqa: F401
    import tests.reliability.helpers  # noqa: F401

    print(json.dumps(run(config)))


if __name__ == "__main__":
    main()
