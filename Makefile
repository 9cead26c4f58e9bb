# The two commands a newcomer needs:
#   make demo   local Pebble + Docker + nginx: tlsbridge issues, publishes, nginx serves it
#   make test   installs what is missing, then runs lint, types and the whole test suite
# Both run as root on Debian 12 (they install apt packages and start dockerd if needed).

PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup test unit integration lint demo bench bench-scale clean

setup:
	@scripts/setup.sh

lint: setup
	.venv/bin/ruff check tlsbridge tests bench
	.venv/bin/mypy

unit: setup
	TLSBRIDGE_RETRY_SCALE=0 $(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

integration: setup
	TLSBRIDGE_RETRY_SCALE=0 $(PY) -m pytest tests/integration -q $(PYTEST_ARGS)

test: setup lint
	TLSBRIDGE_HOSTCHECK=1 TLSBRIDGE_RETRY_SCALE=0 $(PY) -m pytest tests -q $(PYTEST_ARGS)

demo: setup
	@scripts/demo.sh

bench: setup
	$(PY) bench/renew_nothing_due.py

bench-scale: setup  # 200, 1,000 and 2,000 sites; rewrites the table in bench/README.md and bench/scale.png
	.venv/bin/pip install -q -e '.[bench]'
	$(PY) bench/scale.py

clean:
	rm -rf demo bench/out .pytest_cache .mypy_cache .ruff_cache
