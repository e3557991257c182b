#!/usr/bin/env bash
# Licenses, duplicate crates and sources of the dependency tree, as deny.toml allows them.
# Advisories are left out: their database is not reachable from this project's machines (see the
# top of deny.toml). Needs cargo-deny (`.ci/run` installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo deny --locked check licenses bans sources
