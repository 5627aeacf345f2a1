# berqenas.platform: the two commands of the README, and the tiers behind them.
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections

.PHONY: install demo test lint sanity unit integration molecule bench build clean

install:            ## apt packages, .venv, collections (idempotent)
	bash scripts/install.sh

demo: install       ## the main job on the embedded default: local PostgreSQL + VPN/gateway, tenants acme + globex, isolation and VPN proofs
	bash scripts/demo.sh

test: install       ## the whole suite, tier by tier, with the time of each
	bash scripts/test.sh all

lint: install
	bash scripts/test.sh lint

sanity: install
	bash scripts/test.sh sanity

unit: install
	bash scripts/test.sh unit

integration: install
	bash scripts/test.sh integration

molecule: install
	bash scripts/test.sh molecule

bench: install      ## benchmarks: each prints its figure beside its baseline
	bash scripts/bench.sh

build: install      ## the collection tarball
	$(VENV)/bin/ansible-galaxy collection build --force --output-path build/

clean:
	rm -rf build .cache/sanity
