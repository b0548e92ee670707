# The two commands a new user needs: `make run` and `make test`. Both bootstrap themselves.
.PHONY: run test test-images lint bench bootstrap clean

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
	$(MAKE) test-images

# The image built from the Dockerfile and the compose stack from deploy/, run for real
# (tests/containers): Docker when its daemon answers, else podman with private settings;
# a Debian base and stand-ins for the third-party images are built when no registry answers.
test-images:
	./scripts/bootstrap.sh --test
	.venv/bin/python -m pytest -m containers tests/containers

bench:
	./scripts/bootstrap.sh --bench
	.venv/bin/python benchmarks/probe_bench.py
	.venv/bin/python benchmarks/aggregator_bench.py
	.venv/bin/python benchmarks/catchup_bench.py
	.venv/bin/python benchmarks/scrape_bench.py
	.venv/bin/python benchmarks/operator_bench.py
	.venv/bin/python benchmarks/alerting_bench.py
	.venv/bin/python benchmarks/bomb_bench.py
	.venv/bin/python benchmarks/image_bench.py
	# Last: sized from the figures the runs above just wrote (docs/figures.json).
	.venv/bin/python benchmarks/shard_sim.py

# Pin every dependency, with hashes, into requirements/: test-lock.txt (what make test
# installs) and lock.txt (what the image ships), the second taken from the first so both
# hold the same versions. Run after editing the dependencies in pyproject.toml; kept pins
# stay unless asked: make lock LOCK_ARGS=--upgrade (or --upgrade-package aiohttp).
# uv only resolves here; installing from the locks needs nothing but pip.
LOCK_FLAGS = --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock'
.PHONY: lock
lock:
	test -x .venv/lock-tools/bin/uv || { python3 -m venv .venv/lock-tools && .venv/lock-tools/bin/pip install -q 'uv==0.13.9'; }
	.venv/lock-tools/bin/uv pip compile -q pyproject.toml --extra test $(LOCK_FLAGS) $(LOCK_ARGS) -o requirements/test-lock.txt
	.venv/lock-tools/bin/uv pip compile -q pyproject.toml --extra fast -c requirements/test-lock.txt $(LOCK_FLAGS) -o requirements/lock.txt

# Mutation testing (docs/mutation.md): mutmut 3 mutates wire/ and aggregator/core/, runs
# tests/unit and tests/component against each mutant ([tool.mutmut] in pyproject.toml) and
# prints how many survived. It starts from an empty mutants/ every time: mutmut keeps a
# verdict until the mutated function changes, so a strengthened test would not re-judge an
# old survivor. One test process at a time unless asked: make mutate MUTATE_CHILDREN=2.
# Then: .venv/bin/mutmut results lists the survivors, .venv/bin/mutmut show NAME the diff.
MUTATE_CHILDREN = 1
.PHONY: mutate
mutate:
	./scripts/bootstrap.sh --test
	rm -rf mutants
	.venv/bin/mutmut run --max-children $(MUTATE_CHILDREN)
	.venv/bin/mutmut export-cicd-stats
	.venv/bin/python -c 'import json; s = json.load(open("mutants/mutmut-cicd-stats.json")); print("mutate: %(survived)d surviving mutants of %(total)d (killed %(killed)d, timeout %(timeout)d, no tests %(no_tests)d, suspicious %(suspicious)d)" % s)'

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache test-output *.egg-info
