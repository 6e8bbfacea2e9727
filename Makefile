# One place for the commands README.md and .ci/run use.
# Every build uses one feature set (`--all-targets`: binaries and tests together), so
# the AWS SDK crates compile once and the tests drive the very binaries that ran.

export CARGO_TARGET_DIR ?= $(HOME)/.cache/incident-pipeline/target
CARGO_FLAGS := --workspace --all-targets --locked

.PHONY: build test demo normalize fmt lint

build:
	cargo build $(CARGO_FLAGS)

## All tests: unit, integration and end-to-end.
test: build
	cargo test --workspace --locked

## Feed every sample event through the alarm normalizer and print what the pipeline sees.
normalize: build
	$(CARGO_TARGET_DIR)/debug/examples/normalize events

demo: normalize

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	cargo clippy $(CARGO_FLAGS) -- -D warnings
