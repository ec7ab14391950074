"""Scoring the engine on judged data: ranking metrics (`metrics`), retrieval (`retrieval`), answers (`answers`),
the support checker (`support`) and the few-shot prompt evaluation harness (`qa`).

May import: `rag.training` (a harness may score a trained artefact or reuse its example builders), `rag.datasets`
and everything below them. Never the CLI.
"""
