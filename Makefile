# The two commands of README.md: `make demo` and `make test`. Both set up what they need first.
.PHONY: setup demo test

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/edgeconf demo

test: setup
	bash scripts/test.sh
