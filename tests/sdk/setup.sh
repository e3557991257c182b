#!/usr/bin/env bash
# Prints the path of a Python interpreter that has the official Stripe SDK (tests/sdk/
# requirements.txt), creating a virtualenv for it once in ${CREDITD_SDK_VENV:-/tmp/creditd-sdk-venv}.
# `.ci/run` exports the result as CREDITD_TEST_STRIPE_PYTHON for tests/stripe_sdk_webhooks.rs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${CREDITD_SDK_VENV:-${TMPDIR:-/tmp}/creditd-sdk-venv}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
if ! "$venv/bin/python" -c 'import stripe' 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q -r "$here/requirements.txt" >&2
fi
echo "$venv/bin/python"
