#!/usr/bin/env bash
# Lab 2: synchronous work blocks. GET /add computes inside the request: you
# (the caller) wait the whole time, and one of the node's request threads is
# busy with nothing else meanwhile. The script times one call and checks you
# waited at least as long as the node computed (elapsed_ms).
#
#   ops/scripts/02-sync-add.sh          A=40 B=2 ops/scripts/02-sync-add.sh
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
A="${A:-2}"
B="${B:-3}"

echo "GET ${BASE_URL}/add?a=${A}&b=${B}   (synchronous: you wait for the answer)"
# -w appends curl's own clock on a last line, after the body.
output="$(curl -sS --fail-with-body -w '\n%{time_total}' "${BASE_URL}/add?a=${A}&b=${B}")"
body="$(head -n 1 <<<"${output}")"
waited="$(tail -n 1 <<<"${output}")"
python3 -m json.tool <<<"${body}"
computed_ms="$(json elapsed_ms <<<"${body}")"
echo
echo "you waited ${waited} s; node $(json handled_by <<<"${body}") computed for ${computed_ms} ms of it"
python3 -c "import sys; sys.exit(float(sys.argv[1]) * 1000 < float(sys.argv[2]))" \
  "${waited}" "${computed_ms}" || fail "the answer came before the work was done"
echo "The connection stayed open the whole time and a request thread was held:"
echo "ten callers at once hold ten threads. Lab 3 hands the work to a queue;"
echo "lab 5 shows what threads of one process do when they compute at once."
