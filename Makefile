# The local demo: the whole incident story on this machine, no AWS account.
# Installs the Python tools it needs (quietly), builds the functions with the one
# feature set the project uses everywhere, then plays the story for both backends.
# Records land in .demo/; every process started is stopped at the end, on Ctrl-C or failure.

PYTHON ?= python3
export CARGO_TARGET_DIR ?= $(HOME)/.cache/incident-pipeline/target

.PHONY: demo
demo:
	@$(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r local/requirements.txt
	cargo build --workspace --all-targets
	$(PYTHON) local/story.py $(STORY_ARGS)
