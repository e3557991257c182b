#!/usr/bin/env bash
# Runs the Helm chart test (tests/helm/test_chart.py) in its own virtualenv.
#
#   tests/helm/run.sh [pytest args…]
#
# The virtualenv lives in ${CREDITD_HELM_VENV:-${TMPDIR:-/tmp}/creditd-helm-venv} and is reused
# while requirements.txt is unchanged. Where `python3 -m venv` is unavailable (Debian without
# python3-venv), the requirements go to the user site with `pip install --user` instead.
# The exit code is pytest's.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
venv="${CREDITD_HELM_VENV:-${TMPDIR:-/tmp}/creditd-helm-venv}"
requirements="$here/requirements.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1

if ! command -v "$python" >/dev/null; then
  echo "tests/helm/run.sh: $python not found" >&2
  exit 2
fi

stamp_of() { # the requirements' hash plus the interpreter's version
  { cat "$requirements"; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}
want="$(stamp_of)"

runner=""
if [[ -x "$venv/bin/python" && -f "$venv/.requirements.sha256" && "$(cat "$venv/.requirements.sha256")" == "$want" ]] \
   && "$venv/bin/python" -c 'import helm_python, kubernetes_validate, pytest, yaml' 2>/dev/null; then
  runner="$venv/bin/python"
elif rm -rf "$venv" && "$python" -m venv "$venv" >/dev/null 2>&1 && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "tests/helm/run.sh: installing the chart test's requirements into $venv" >&2
  "$venv/bin/python" -m pip install --quiet -r "$requirements"
  echo "$want" >"$venv/.requirements.sha256"
  runner="$venv/bin/python"
else
  rm -rf "$venv"
  echo "tests/helm/run.sh: '$python -m venv' is unavailable; installing with pip --user" >&2
  if ! "$python" -m pip install --quiet --user -r "$requirements" 2>/dev/null; then
    # Debian's Python is "externally managed" (PEP 668): --user needs the explicit override.
    "$python" -m pip install --quiet --user --break-system-packages -r "$requirements"
  fi
  runner="$python"
fi

cd "$here/../.."
set +e
"$runner" -m pytest -p no:cacheprovider -rfEs "$here" "$@"
status=$?
set -e
exit "$status"
