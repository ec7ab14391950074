"""Training the learned parts: LoRA fine-tuning of the generator (`finetune`), cross-encoder training
(`crossencoder`, `listwise`), the reranker's data mining (`reranker`), the support checker's data (`verifier`,
`claim_negation`) and fitting the calibrated checker (`calibration`).

May import: `rag.datasets` and everything below it. Nothing at query time imports this package.
"""
