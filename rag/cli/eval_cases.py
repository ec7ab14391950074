"""`clinrag eval answers --cases FILE --index DIR`: patient cases, each asked with its patient (issue 35)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rag.cli.answer_runs import described, warm_engine, warn_errors, window, write_records


def run_cases(args: argparse.Namespace, settings: Any) -> int:
    from rag.datasets.patient_cases import read_patient_cases
    from rag.evaluation.patient_cases import evaluate_patient_cases, summarize_patient_cases

    cases = window(read_patient_cases(args.cases), args, args.cases, "case")
    engine, index = warm_engine(args, settings, cases[0].text, cases[0].patient)
    records = evaluate_patient_cases(cases, engine.ask, progress=args.progress)
    report = summarize_patient_cases(records)
    write_records(args.records, [r.to_json() for r in records])
    if args.json:
        head = {"cases_file": str(args.cases), "index": str(index)}
        print(json.dumps(described(engine, settings, head, report.to_json()), indent=2))
        return 0
    print(
        f"{report.cases} cases ({report.ruled_out_cases} where the patient rules an option out) from {args.cases}, "
        f"generator {engine.generator_name}, template {engine.template.label}\n"
        f"right first suggestion {report.right_first_rate:.3f} (ruled out {report.right_first_rate_ruled_out:.3f}, "
        f"controls {report.right_first_rate_controls:.3f})  excluded option first {report.excluded_first_rate:.3f}  "
        f"excluded later and unflagged {report.excluded_unflagged_rate:.3f}\n"
        f"hit {report.hit_rate:.3f}  abstained {report.abstention_rate:.3f}  fallback {report.fallback_rate:.3f}  "
        f"errors {report.errors}  seconds p50 {report.seconds_p50:.2f} p95 {report.seconds_p95:.2f}"
    )
    warn_errors(report.errors, "case")
    return 0
