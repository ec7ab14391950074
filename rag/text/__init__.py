"""Text handling without models: the clinical BM25 tokenizer (`tokenize`), the quotable units of a passage (sentences,
list items, flattened lists; `units`) and the identifier scrubber (`privacy`).

May import: `rag.core`.
"""
