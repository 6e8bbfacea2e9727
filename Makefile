# One place for the commands README.md and .ci/run use.
# Every build uses one feature set (`--all-targets`: binaries and tests together), so
# the AWS SDK crates compile once and the tests drive the very binaries that ran.

export CARGO_TARGET_DIR ?= $(HOME)/.cache/incident-pipeline/target
CARGO_FLAGS := --workspace --all-targets --locked
PYTHON ?= python3
PIP_QUIET := --quiet --disable-pip-version-check --root-user-action=ignore

.PHONY: build test test-local local-tools bench-tools bench demo normalize fmt lint arm64 test-arm64

build:
	cargo build $(CARGO_FLAGS)

## All tests: Rust unit and integration tests, the template checks (cfn-lint,
## sam validate, wiring test), the local end-to-end story with the real binaries and
## the benchmark's own pieces (bench/test_*.py: latency proxy, critical path; seconds).
test: build local-tools
	cargo test --workspace --all-targets --locked
	bash tests/template/run_checks.sh
	$(PYTHON) -m pytest -q local/ bench/

## The local emulator, Slack sink, Runtime API, story harness and the end-to-end story
## with the real binaries (local/test_story.py).
test-local: build local-tools
	$(PYTHON) -m pytest -q local/

## Feed every sample event through the alarm normalizer and print what the pipeline sees,
## classified by the built-in rules. Your own: make normalize EVENTS=my-event.json RULES=rules.json
## (JSON: $(CARGO_TARGET_DIR)/debug/examples/normalize --json --rules rules.json FILE...).
EVENTS ?= events
RULES ?= -
normalize: build
	$(CARGO_TARGET_DIR)/debug/examples/normalize --rules $(RULES) $(EVENTS)

## Which build `make demo` runs: x86_64 (the debug build, native) or arm64 (what
## `sam build` ships, under qemu-user; `make demo ARCH=arm64`).
ARCH ?= x86_64
DEMO_BUILD := $(if $(filter arm64 aarch64,$(ARCH)),arm64,build)

## The whole incident story on this machine, no AWS account: moto, the project's AWS
## emulator, a local Slack and the real function binaries, both backends, first by the
## alarms alone, then with responders acting from Slack (slack-actions: buttons,
## /incident, escalation, post-incident summary); prints the transcript and the Slack
## conversation, leaves the records in .demo/, and stops every process it started (also
## on Ctrl-C or failure). STORY_ARGS="--backend OpsCenter --story respond --pace 0".
demo: $(DEMO_BUILD) local-tools
	STORY_ARCH=$(ARCH) $(PYTHON) local/story.py $(STORY_ARGS)

## What `sam deploy` ships: `sam build` of the four functions as arm64 bootstraps into
## .aws-sam/build/, after installing what it needs (SAM CLI, cargo-lambda, zig, the aarch64
## target or Debian's Rust, qemu-user: scripts/arm64-toolchain.sh; Debian packages need
## root); compiled dependencies stay in ~/.cache/incident-pipeline/arm64/target. Prints
## the sizes and glibc versions and fails if an artifact is wrong (tests/arm64/artifacts.py).
arm64: local-tools
	bash scripts/arm64-build.sh

## The arm64 artifacts tested: the artifact check (tests/arm64/) and the end-to-end
## stories (the alarm story and the responders' story, both backends) on the bootstraps
## under qemu-user; about 80 s after the build. ARM64_STORY_BACKENDS=OpsCenter for one.
ARM64_STORY_BACKENDS ?= OpsCenter,IncidentManager
test-arm64: arm64
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/arm64
	STORY_ARCH=arm64 STORY_BACKENDS=$(ARM64_STORY_BACKENDS) $(PYTHON) -m pytest -q local/test_story.py local/test_respond_story.py

## What the local story needs from PyPI (moto_server, boto3, PyYAML, pytest), quietly.
local-tools:
	@$(PYTHON) -m pip install $(PIP_QUIET) -r local/requirements.txt

## Benchmarks (issue 9): release build, criterion benches of the pure parts, then cold
## start, warm latency, peak RSS and size of each function next to the Python references
## (bench/reference/), through the local Runtime API and endpoints; then (issue 18) the
## time from an alarm to its first Slack message through both functions, cold and warm,
## both backends, with the latency profiles aws-us-east-1 and none, and its critical
## path (bench/time_to_slack.py), and notify-fanout against a minimal Rust function
## (bench/floor.py); writes bench/RESULTS.md.
## BENCH_ARGS="--cold-runs 20 --warm-events 1000 --no-build --no-criterion --only notify-fanout".
## BENCH_ARGS="--only time-to-slack --tts-profiles aws-us-east-1 --tts-cold-runs 10".
bench: local-tools bench-tools
	$(PYTHON) bench/run.py $(BENCH_ARGS)

## What the Python references need to run under a Lambda Runtime API (awslambdaric).
bench-tools:
	@$(PYTHON) -m pip install $(PIP_QUIET) -r bench/requirements.txt

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	cargo clippy $(CARGO_FLAGS) -- -D warnings
