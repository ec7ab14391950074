"""From a question to a checked, cited answer: the `Engine` (`engine`), the `Answer` it returns (`answer`),
prompt templates (`prompts`), reading citations and sentence keys from a reply (`citations`, `selection`), quote
completion, the extractive answerer (`extractive`), closed-form (yes/no/maybe, multiple choice) scoring
(`closed_form`) and patient profiles with their safety flags (`patient`).

May import: `rag.core`, `rag.text`, `rag.index`, `rag.models`, `rag.retrieval`, `rag.checking`.
"""
