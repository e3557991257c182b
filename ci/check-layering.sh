#!/usr/bin/env bash
# Checks the layering the README's Layout section promises, by reading the source:
#   - src/domain/ is pure: it names no database, gRPC or HTTP crate (sea_orm, sea_query, sqlx,
#     tonic, prost, axum, hyper, http and their helper crates such as tonic_types or
#     http_body_util), and nothing of the layers above it (crate::store, service, grpc, rest);
#   - src/grpc/, src/rest/ and src/service/ name neither SeaORM (sea_orm, sea_query, sqlx) nor the
#     store's entities (store::entities): they reach the database only through store/'s functions.
# "Name" means in a `use` statement (grouped and multi-line ones included), an `extern crate`, or a
# path anywhere in the code (`sea_orm::DbErr`, `crate::store::entities::customer::Model`). Comments
# and string literals are ignored. Every violation is printed as file:line: text; the exit status is
# 1 when there is any.
set -euo pipefail
cd "$(dirname "$0")/.."

# check LABEL FORBIDDEN_CRATES_ERE FORBIDDEN_PATHS_ERE DIR...
#   FORBIDDEN_CRATES_ERE: an ERE matching a whole crate name (anchored by the caller's patterns).
#   FORBIDDEN_PATHS_ERE:  an ERE matching a path prefix such as store::entities, or "" for none.
check() {
  local label="$1" crates="$2" paths="$3"
  shift 3
  local files
  files="$(find "$@" -name '*.rs' -type f 2>/dev/null | LC_ALL=C sort)"
  [[ -n "$files" ]] || return 0
  # shellcheck disable=SC2086 # one file name per line, none with spaces
  awk -v label="$label" -v crates="$crates" -v paths="$paths" '
    function report(line, text) {
      sub(/^[ \t]+/, "", text)
      printf "%s:%d: %s: %s\n", FILENAME, line, label, text
      found = 1
    }
    # Collapses whitespace so that a multi-line, grouped `use` reads as one line.
    function normalize(s) {
      gsub(/[ \t]+/, " ", s)
      gsub(/ *:: */, "::", s); gsub(/ *[{] */, "{", s); gsub(/ *[}] */, "}", s)
      gsub(/ *, */, ",", s); gsub(/ *; */, ";", s)
      return s
    }
    function check_use(line, stmt, raw,    s) {
      s = normalize(stmt)
      # A forbidden crate at the root of the statement (`use sea_orm::X`, `use ::sea_orm`), or in a
      # root group (`use {std::fmt, sea_orm}`); `use std::{sqlx}` is std::sqlx, not the crate.
      if (s ~ ("^ ?use ?(::)?([{]([^{}]*,)?)?(" crates ")(::|;|,|}| as )")) { report(line, raw); return }
      # A forbidden path, directly or through a group (`store::{self, entities::x}`).
      if (paths != "" && s ~ ("(" paths ")(::|;|,|}| as )")) { report(line, raw); return }
      if (paths != "" && s ~ ("(" paths_group ")(::|;|,|}| as )")) { report(line, raw); return }
    }
    BEGIN {
      # store::entities also matches store::{self, entities::x}: the parent, a group, then the leaf.
      n = split(paths, alts, "|")
      paths_group = ""
      for (i = 1; i <= n; i++) {
        k = split(alts[i], parts, "::")
        leaf = parts[k]; parent = alts[i]
        sub("::" leaf "$", "", parent)
        paths_group = paths_group (i > 1 ? "|" : "") parent "::[{][^;]*[{,]" leaf
      }
    }
    FNR == 1 { in_block_comment = 0; in_use = 0 }
    {
      raw = $0; code = $0
      # Block comments (rare here), then line comments and string literals.
      if (in_block_comment) {
        if (code ~ /\*\//) { sub(/^.*\*\//, "", code); in_block_comment = 0 } else next
      }
      gsub(/\/\*([^*]|\*[^\/])*\*\//, "", code)
      if (code ~ /\/\*/) { sub(/\/\*.*$/, "", code); in_block_comment = 1 }
      gsub(/"([^"\\]|\\.)*"/, "\"\"", code)
      sub(/\/\/.*$/, "", code)
      if (code ~ /^[ \t]*$/ && !in_use) next

      if (!in_use && code ~ /^[ \t]*(pub(\([^)]*\))? +)?use[ \t]/) {
        in_use = 1; use_line = FNR; use_raw = raw; stmt = ""
        sub(/^[ \t]*(pub(\([^)]*\))? +)?/, "", code)
      }
      if (in_use) {
        stmt = stmt " " code
        if (code ~ /;/) { in_use = 0; check_use(use_line, stmt, use_raw) }
        next
      }
      if (code ~ ("extern +crate +(" crates ")([ ;]|$)")) { report(FNR, raw); next }
      # A path outside a `use`: the crate not preceded by another path segment, then `::`.
      if (code ~ ("(^|[^A-Za-z0-9_:])(::)?(" crates ")::")) { report(FNR, raw); next }
      if (paths != "" && code ~ ("(" paths ")::")) { report(FNR, raw); next }
    }
    END { exit found ? 1 : 0 }
  ' $files
}

status=0
check "domain must stay pure" \
  "sea_orm[A-Za-z0-9_]*|sea_query[A-Za-z0-9_]*|sqlx[A-Za-z0-9_]*|tonic[A-Za-z0-9_]*|prost[A-Za-z0-9_]*|axum[A-Za-z0-9_]*|hyper[A-Za-z0-9_]*|http|http_[A-Za-z0-9_]*" \
  "crate::store|crate::service|crate::grpc|crate::rest" \
  src/domain || status=1
check "only store/ may use SeaORM and its entities" \
  "sea_orm[A-Za-z0-9_]*|sea_query[A-Za-z0-9_]*|sqlx[A-Za-z0-9_]*" \
  "store::entities" \
  src/grpc src/rest src/service || status=1

if [[ $status -eq 0 ]]; then
  echo "layering: ok"
else
  echo "layering: violations above (see ci/check-layering.sh for the rules)" >&2
fi
exit "$status"
