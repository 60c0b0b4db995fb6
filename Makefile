# The two commands of README.md. Both install what is missing first.
.PHONY: demo test deps

deps:
	@scripts/install-deps.sh

# Build and run the built-in demonstration.
demo: deps
	cargo run --release --quiet -- demo

# The whole test suite: formatting, lints, and every test of the workspace.
test: deps
	scripts/check-pure-core.sh
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	scripts/run-tests.sh
