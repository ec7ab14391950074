"""Judging whether evidence supports a claim: verdicts and the judge protocol (`verdict`), the model-free and
calibrated support checkers (`support`, `calibration`), the trained NLI cross-encoder (`verifier`) and the check that
a suggestion's words come from its evidence (`grounding`).

May import: `rag.core`, `rag.text`, `rag.models`. Never retrieval, answering, training or evaluation.
"""
