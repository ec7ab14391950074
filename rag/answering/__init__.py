"""From a question to a checked, cited answer: the `Engine` (`engine`; its parts loaded by `engine_parts`), the
`Answer` it returns (`answer`, assembled by `answer_assembly`), which passages an answer may use
(`evidence_policy`), prompt templates (`prompts`), reading citations and sentence keys from a reply (`citations`,
`selection`, `replies`, with the extractive fallback), quote completion, the check stage that judges each
suggestion against the passages it cites (`suggestion_check`), the extractive answerer (`extractive`), closed-form
(yes/no/maybe, multiple choice) scoring (`closed_form`) and patient profiles with their safety flags (`patient`).

May import: `rag.core`, `rag.text`, `rag.index`, `rag.models`, `rag.retrieval`, `rag.checking`.
"""
