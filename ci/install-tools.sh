#!/usr/bin/env bash
# Installs the tools the checks need when they are missing, from the registries this project's
# machines reach (crates.io, npm): cargo-deny (ci/check-deny.sh) and buf (ci/check-proto.sh).
# The versions are pinned so a new release cannot change what passes; an installed copy of another
# version is used as it is.
set -euo pipefail

CARGO_DENY_VERSION=0.20.2
BUF_VERSION=1.75.0

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if ! command -v cargo-deny >/dev/null; then
  echo "installing cargo-deny ${CARGO_DENY_VERSION} (compiles for a few minutes)"
  cargo install --locked "cargo-deny@${CARGO_DENY_VERSION}"
fi

if ! command -v buf >/dev/null; then
  echo "installing buf ${BUF_VERSION} (npm package @bufbuild/buf)"
  npm install --global --no-fund --no-audit "@bufbuild/buf@${BUF_VERSION}"
fi

echo "tools: $(cargo deny --version), buf $(buf --version)"
