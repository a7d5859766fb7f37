# The two commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv/bin
PY_SOURCES := remediator tests bench

.PHONY: bootstrap demo test lint unit vm packages clean-vm-cache bench-cost bench-efficacy reliability

bootstrap:
	@scripts/bootstrap

# The main job on the embedded defaults: check the shipped policies, show this
# machine's memory picture, run the daemon once in dry-run (audit) mode, and replay
# the committed real-kernel trace with the shipped policies (README, "Record and replay").
demo: bootstrap
	$(VENV)/remediator --policies policies check
	@echo
	$(VENV)/remediator --policies policies status
	@echo
	$(VENV)/remediator --policies policies --config packaging/etc/remediator.yaml run --dry-run --once --log-target stderr
	@echo
	$(VENV)/remediator --policies policies replay tests/fixtures/traces/seed-dry-run.trace.gz

lint: bootstrap
	$(VENV)/ruff check $(PY_SOURCES)
	$(VENV)/ruff format --check $(PY_SOURCES)
	$(VENV)/mypy
	$(VENV)/vermin --no-tips --violations --eval-annotations -t=3.9- remediator

unit: bootstrap
	$(VENV)/pytest -q -m "not vm and not vmfull"

vm: bootstrap
	bash .ci/vm-deps.sh --full
	$(VENV)/pytest -q -m "vm or vmfull"

clean-vm-cache:
	rm -rf "$${REMEDIATOR_VM_CACHE:-$$HOME/.cache/remediator/vm}"

# Everything CI runs: lint, unit tests, the real-kernel VM tests (tests/ and the efficacy
# benchmark's own tests: pyproject's testpaths).
test: lint
	bash .ci/vm-deps.sh --full
	$(VENV)/pytest -q

# .deb (Debian 12/13, Ubuntu 24.04) and .rpm (RHEL 9) into packaging/out/ (see "Install on a node" in README.md).
packages:
	packaging/build

# The cost and reaction benchmark (issue 7): light VMs for N = 10..2000 cgroups and the
# reaction series, against a 1 s polling baseline; writes bench/results/cost-<date>.{json,md,png}.
# About an hour under TCG. QUICK=1 runs the CI smoke shape (N = 10, 5 events).
bench-cost: bootstrap
	$(VENV)/python -m bench.cost.run $(if $(QUICK),--quick,)

# The efficacy benchmark (issue 6, bench/efficacy/README.md): the seed, tmpfs-heavy and
# beyond-the-limit scenarios x none/static/remediator/dry-run, 3 runs each, in light VMs
# (under 30 min); writes bench/results/efficacy-*.{json,md,png}. QUICK=1: one 30 s run per
# series, into build/efficacy-quick/ (`make test` runs it too: tests/vm/test_vm_efficacy_quick.py).
# EFFICACY_ARGS passes more options.
bench-efficacy: bootstrap
	@$(VENV)/python -c 'import matplotlib' 2>/dev/null || $(VENV)/pip install -q --disable-pip-version-check -e '.[dev,bench]'
	$(VENV)/python -m bench.efficacy $(if $(QUICK),--quick,) $(EFFICACY_ARGS)

# The reliability campaign (issue 8, bench/reliability/README.md): Hypothesis and atheris fuzzing
# of every parser (10,000 / 50,000 inputs each), churn on the fake tree, and faults + churn on a
# real kernel (light VMs); writes bench/results/reliability-<date>.{json,md}. About an hour under
# TCG. QUICK=1: every part at small sizes, into build/reliability-quick/.
reliability: bootstrap
	$(VENV)/python -m bench.reliability.run $(if $(QUICK),--quick,)
