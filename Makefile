# The two commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv/bin
PY_SOURCES := remediator tests bench

.PHONY: bootstrap demo test lint unit vm packages clean-vm-cache

bootstrap:
	@scripts/bootstrap

# The main job on the embedded defaults: check the shipped policies, show this
# machine's memory picture, and run the daemon once in dry-run (audit) mode.
demo: bootstrap
	$(VENV)/remediator --policies policies check
	@echo
	$(VENV)/remediator --policies policies status
	@echo
	$(VENV)/remediator --policies policies --config packaging/etc/remediator.yaml run --dry-run --once --log-target stderr

lint: bootstrap
	$(VENV)/ruff check remediator tests
	$(VENV)/ruff format --check remediator tests
	$(VENV)/mypy
	$(VENV)/vermin --no-tips --violations --eval-annotations -t=3.9- remediator

unit: bootstrap
	$(VENV)/pytest -q -m "not vm and not vmfull" tests

vm: bootstrap
	bash .ci/vm-deps.sh --full
	$(VENV)/pytest -q -m "vm or vmfull" tests

clean-vm-cache:
	rm -rf "$${REMEDIATOR_VM_CACHE:-$$HOME/.cache/remediator/vm}"

# Everything CI runs: lint, unit tests, the real-kernel VM tests.
test: lint
	bash .ci/vm-deps.sh --full
	$(VENV)/pytest -q tests

# .deb (Debian 12/13, Ubuntu 24.04) and .rpm (RHEL 9) into packaging/out/ (see packaging/README-install.md).
packages:
	packaging/build
