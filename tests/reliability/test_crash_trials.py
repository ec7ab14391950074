"""SIGKILL at random moments of `build`, `add`, `remove` and a first build: the previous bundle always survives.

tests/reliability/crash_driver.py does the killing (see its docstring for the two ways it picks a moment and what it
checks after each kill). CLINRAG_CRASH_TRIALS sets the trials per operation, half at random times and half at random
write steps (default 10; the report's figures used 200).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.crash_driver import OPERATIONS
from tests.reliability.helpers import trials

PROJECT = Path(__file__).resolve().parents[2]
TRIALS = trials("CLINRAG_CRASH_TRIALS", 10)
SEED = int(os.environ.get("CLINRAG_CRASH_SEED", "7"))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    config = {
        "root": str(tmp_path_factory.mktemp("crash")),
        "operations": list(OPERATIONS),
        "trials": max(1, TRIALS // 2),
        "seed": SEED,
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.reliability.crash_driver", json.dumps(config)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    parsed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


@pytest.mark.parametrize("op", OPERATIONS)
def test_killed_operation_leaves_a_loadable_verified_bundle(results: dict[str, Any], op: str) -> None:
    outcome = results[op]
    failed = [t for t in outcome["trials"] if not t["ok"]]
    assert not failed, json.dumps(failed[:5], indent=1)
    assert len(outcome["trials"]) == 2 * max(1, TRIALS // 2)
    step_trials = [t for t in outcome["trials"] if t["mode"] == "step"]
    assert step_trials and all(t["process"] == "killed" for t in step_trials)  # every step kill did kill
    # The surviving bundle is the old one when the kill came before the manifest rename: it must occur.
    assert any(t["state"] == "old" for t in step_trials)
    summary = collections.Counter(f"{t['mode']}: {t['process']} -> {t['state']} bundle" for t in outcome["trials"])
    steps_hit = len({t["step"].split(":")[0] for t in step_trials})
    print(
        f"crash {op}: {len(outcome['trials'])} trials, full run {outcome['seconds']} s, "
        f"{steps_hit} of {outcome['steps']} write steps hit, {dict(summary)}"
    )
