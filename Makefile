# Two commands: `make demo` runs the main job, `make test` runs the tests.
# Each target is idempotent and enough on its own on a fresh Debian machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
MB     := $(VENV)/bin/mobilenet
STAMP  := $(VENV)/.installed
TESTED := $(VENV)/.installed-test
FASHION := /usr/share/datasets/fashion-mnist

.PHONY: install install-test test mutants demo clean

# What the demo needs: the package and its own dependencies (torch, ONNX, ONNX Runtime, ...).
install: $(STAMP)

# What the tests need on top: the test extra (every runtime and converter, timm, Chromium's
# driver), into the same venv, so `make test` after `make demo` adds to what is there.
install-test: $(TESTED)

$(STAMP): pyproject.toml
	@# Fashion-MNIST from Debian when we can (root with apt-get); otherwise torchvision downloads it.
	@if [ ! -d $(FASHION) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } || \
		echo "note: could not install dataset-fashion-mnist; training will try to download Fashion-MNIST"; fi
	$(MAKE) --no-print-directory EXTRA= pip-install
	touch $(STAMP)

$(TESTED): $(STAMP)
	@# Debian's Chromium for the report's browser test (playwright drives it; it downloads no browser).
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
		echo "note: could not install chromium; the report's browser tests will be skipped"; fi
	@# Debian's OpenSSH server: the device of the `bench --on` and `sweep --on` tests, on loopback.
	@if [ ! -x /usr/sbin/sshd ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q openssh-server >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q openssh-server >/dev/null 2>&1; } || \
		echo "note: could not install openssh-server; the device tests will be skipped"; fi
	$(MAKE) --no-print-directory EXTRA='[test]' pip-install
	touch $(TESTED)

# The package with $(EXTRA) into the venv, through uv: the one on PATH, or else one pip installs
# into the venv first (a PyPI package; both steps together faster than pip: docs/results.md).
# Pip where uv cannot be had or fails (uv reads pip's configured constraint, not its indexes).
# Bytecode compiled as pip does: with PYTHONDONTWRITEBYTECODE set, each process would compile torch anew.
.PHONY: pip-install
pip-install:
	@{ [ -x $(PY) ] || $(PYTHON) -m venv $(VENV); } && \
	uv="$$(command -v uv || echo $(VENV)/bin/uv)"; \
	[ -x "$$uv" ] || $(PY) -m pip install --quiet uv >/dev/null 2>&1 || uv=; \
	if [ -n "$$uv" ] && echo "installing .$(EXTRA) with uv" && \
		UV_CONSTRAINT="$$($(PY) -m pip config list 2>/dev/null | sed -n "s/^[a-z:.]*constraint='\(.*\)'$$/\1/p" | head -1)" \
			VIRTUAL_ENV=$(VENV) "$$uv" pip install --quiet --compile-bytecode -e '.$(EXTRA)'; then :; \
	else \
		echo "installing .$(EXTRA) with pip"; \
		$(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -e '.$(EXTRA)'; \
	fi

# Two workers: much of the suite waits on child processes, so two cores share it well. worksteal:
# a worker that runs out takes tests queued for the other, so the run does not end on one queue.
test: install-test
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=10

# Planted bugs, one at a time, against the tests that claim to catch them (benchmarks/mutants.py):
# about 10 minutes on 2 cores, so not part of `make test`.
mutants: install-test
	$(PY) benchmarks/mutants.py

# The main job, short: α = 0.5, 5 epochs at 32×32 without augmentation (a short run learns
# faster without it; chosen by benchmarks/demo_recipe.py: docs/results.md, the demo),
# then evaluate and predict a few test images. The full run is plain `mobilenet train`
# (α = 1, 50 epochs, 64×64, flips and shifts, random erasing, EMA, weight decay 5e-4).
demo: install
	rm -rf runs/demo
	$(MB) train --width 0.5 --batch-size 256 --epochs 5 --resolution 32 --augment none --random-erasing 0 --ema 0 --out runs/demo
	$(MB) evaluate --model runs/demo
	$(MB) samples --out runs/demo/samples --count 4
	$(MB) predict --model runs/demo --top-k 3 runs/demo/samples/*.png

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
