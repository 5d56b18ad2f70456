# Two commands do all set-up: `make demo` and `make test` (each creates .venv if missing).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DEBS    := libllvm19 chromium chromium-driver  # Mitsuba's LLVM; the page's browser test

.PHONY: setup demo test test-slow bench lint clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  dpkg -s $(DEBS) >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq $(DEBS)) \
	  || echo "warning: could not install $(DEBS); Mitsuba falls back to scalar_rgb, the browser test is skipped"; \
	else \
	  dpkg -s $(DEBS) >/dev/null 2>&1 || echo "note: install Debian's $(DEBS) (sudo apt-get install $(DEBS)) for Mitsuba's llvm_ad_rgb and the browser test"; \
	fi
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel
	$(VPY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/stylerelight demo --out demo_out

test: $(STAMP)
	$(VPY) -m pytest -q

test-slow: $(STAMP)
	$(VPY) -m pytest -q -m slow

bench: $(STAMP)
	$(VPY) benchmarks/bench_generator.py
	$(VPY) benchmarks/bench_ops.py
	$(VPY) benchmarks/bench_lightstage.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) demo_out .pytest_cache
