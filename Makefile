# The README's two commands: `make demo` and `make test`. Both set up a fresh machine first.
PYTHON ?= python3
DEMO_DIR ?= demo-out

.PHONY: setup demo test bench lint

setup:
	bash .ci/setup

demo: setup
	bash docs/demo.sh $(DEMO_DIR)

test: setup
	$(PYTHON) -m pytest -q -p no:cacheprovider tests

bench: setup
	$(PYTHON) -m bench

lint:
	ruff check formats imager fixtures tests bench
