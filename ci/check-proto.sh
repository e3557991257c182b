#!/usr/bin/env bash
# Lints proto/ (rules and exceptions in proto/buf.yaml) and checks it for changes that would break
# existing gRPC clients, against the previous version of proto/:
#   - PROTO_BREAKING_AGAINST=<git rev>, when set;
#   - otherwise, on a branch other than main: where it forked from main (its merge base), so all of
#     the branch's commits are checked together;
#   - otherwise (main, as in CI on a fresh clone of main): HEAD when proto/ has uncommitted
#     changes, else HEAD~1, the commit before the one being checked.
# The old tree is taken with `git archive`, so this works in worktrees too. With no such commit (a
# single-commit or shallow clone) or no proto/ in it, the breaking check is skipped, and says so.
# Needs `buf` (npm package @bufbuild/buf; `.ci/run` installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

buf lint proto
echo "buf lint: ok"

against="${PROTO_BREAKING_AGAINST:-}"
label="$against"
if [[ -z "$against" ]]; then
  branch="$(git symbolic-ref --quiet --short HEAD || true)"
  if [[ -n "$branch" && "$branch" != main ]] && git rev-parse --verify --quiet main >/dev/null; then
    against="$(git merge-base HEAD main)"
    label="main (where ${branch} forked from it)"
  elif ! git diff --quiet HEAD -- proto; then
    against=HEAD
  else
    against=HEAD~1
  fi
  label="${label:-$against}"
fi

if ! commit="$(git rev-parse --verify --quiet "${against}^{commit}")"; then
  if [[ -n "${PROTO_BREAKING_AGAINST:-}" ]]; then
    echo "buf breaking: PROTO_BREAKING_AGAINST=${PROTO_BREAKING_AGAINST} is not a commit" >&2
    exit 2
  fi
  echo "buf breaking: skipped: no commit ${label} to compare with (single-commit or shallow clone)"
  exit 0
fi
if ! git cat-file -e "${commit}:proto" 2>/dev/null; then
  echo "buf breaking: skipped: ${label} has no proto/"
  exit 0
fi

old="$(mktemp -d)"
trap 'rm -rf "$old"' EXIT
git archive "$commit" proto | tar -x -C "$old"
# The old tree may predate proto/buf.yaml; judge it by today's breaking rules either way.
cp proto/buf.yaml "$old/proto/buf.yaml"
buf breaking proto --against "$old/proto"
echo "buf breaking: ok against ${label} ($(git rev-parse --short "$commit"))"
