# Set-up and everyday targets. `make movie` and `make test` are the README's two commands.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-v1
PIP := $(BIN)/pip
CONSTRAINTS := -c requirements/constraints.txt
STORY ?= stories/toy/lost_kite.yaml
OUT ?= out/lost_kite

.PHONY: install movie test test-fast bench schema clean-venv

install: $(STAMP)

# torch first (a matched torch/torchvision pair), then deepspeed built against it without
# build isolation (so no other torch is pulled into a build environment), then the package.
$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet $(CONSTRAINTS) torch==2.14.1 torchvision==0.29.1
	DS_BUILD_OPS=0 $(PIP) install --quiet $(CONSTRAINTS) --no-build-isolation "deepspeed>=0.15"
	$(PIP) install --quiet $(CONSTRAINTS) -e '.[dev]'
	$(BIN)/python -c "import torch, torchvision, transformers, diffusers, open_clip, insightface, deepspeed; print('environment ready: torch', torch.__version__)"
	touch $(STAMP)

movie: $(STAMP)
	$(BIN)/moviedreamer generate-movie $(STORY) -o $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done

schema: $(STAMP)
	$(BIN)/moviedreamer schema

clean-venv:
	rm -rf $(VENV)
