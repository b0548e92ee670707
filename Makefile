# The two commands a new user needs: `make run` and `make test`. Both bootstrap themselves.
.PHONY: run test lint bench bootstrap clean

bootstrap:
	./scripts/bootstrap.sh

run: bootstrap
	.venv/bin/vigil demo

lint:
	./scripts/bootstrap.sh --test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

test: lint
	.venv/bin/python -m pytest

bench:
	./scripts/bootstrap.sh --bench
	.venv/bin/python benchmarks/probe_bench.py
	.venv/bin/python benchmarks/aggregator_bench.py
	.venv/bin/python benchmarks/alerting_bench.py

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache test-output *.egg-info
