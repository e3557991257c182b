# creditd's development commands (https://just.systems; `npm install -g rust-just` or
# `cargo install just`). `just verify` runs exactly what CI runs: `.ci/run` is the one source of
# truth, and it needs no `just`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list --unsorted

# Format every crate of the workspace in place.
fmt:
    cargo fmt --all

# The guardrails (layering, buf lint and breaking, cargo deny), then clippy with warnings as errors.
lint: tools layering proto deny
    cargo clippy --workspace --all-targets --locked -- -D warnings

# domain/ names no database/gRPC/HTTP crate; grpc/, rest/, service/ name no SeaORM or entities.
layering:
    bash ci/check-layering.sh

# buf lint of proto/, and buf breaking against main (on a branch) or the previous commit.
proto:
    bash ci/check-proto.sh

# cargo deny: licenses, duplicate crate versions, sources (deny.toml).
deny:
    bash ci/check-deny.sh

# Install cargo-deny and buf when missing.
tools:
    bash ci/install-tools.sh

# The whole test suite (PostgreSQL too when CREDITD_TEST_POSTGRES_URL is set).
test:
    cargo test --workspace --locked

# Build release binaries and run the load generator, e.g. `just bench --scenario hot --duration 5s`.
bench *args:
    cargo build --release --bins
    target/release/creditd-bench {{args}}

# Exactly what CI runs: format check, guardrails, clippy, tests (SQLite and PostgreSQL), Helm.
verify:
    bash .ci/run
