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
	# Lints link nothing, so they skip RocksDB's C++ build: ROCKSDB_LIB_DIR only tells
	# a linker where the library would be. The tests below compile it, once.
	ROCKSDB_LIB_DIR=$(CURDIR)/target/lint-links-nothing ROCKSDB_STATIC=1 \
		cargo clippy --workspace --all-targets --quiet -- -D warnings
	scripts/run-tests.sh
