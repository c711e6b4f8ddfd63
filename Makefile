# Two commands: `make demo` runs the main job, `make test` runs the tests.
# Each target is idempotent and enough on its own on a fresh Debian machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
MB     := $(VENV)/bin/mobilenet
STAMP  := $(VENV)/.installed
FASHION := /usr/share/datasets/fashion-mnist

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@# Fashion-MNIST from Debian when we can (root with apt-get); otherwise torchvision downloads it.
	@if [ ! -d $(FASHION) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } || \
		echo "note: could not install dataset-fashion-mnist; training will try to download Fashion-MNIST"; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

# The main job: a short training run (6 epochs, ~5 minutes on 2 CPU cores), then
# evaluate it and predict a few test images. The full 50-epoch run is `mobilenet train`.
demo: install
	rm -rf runs/demo
	$(MB) train --epochs 6 --out runs/demo
	$(MB) evaluate --model runs/demo
	$(MB) samples --out runs/demo/samples --count 4
	$(MB) predict --model runs/demo --top-k 3 runs/demo/samples/*.png

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
