#!/usr/bin/env bash
# Lesson 2: synchronous work. GET /add computes in the request itself: the
# caller (and one of the node's request threads) waits the whole time. With
# WIZARD_WORK_SECONDS=2, as in the original demo, every call takes about 2 s.
#
#   ops/scripts/02-sync-add.sh          A=40 B=2 ops/scripts/02-sync-add.sh
set -euo pipefail

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
A="${A:-2}"
B="${B:-3}"

echo "GET ${BASE_URL}/add?a=${A}&b=${B}   (synchronous: you wait for the answer)"
# -w appends curl's own clock on a last line, after the body.
output="$(curl -sS --fail-with-body -w '\n%{time_total}' "${BASE_URL}/add?a=${A}&b=${B}")"
body="$(head -n 1 <<<"${output}")"
seconds="$(tail -n 1 <<<"${output}")"
python3 -m json.tool <<<"${body}"
echo
echo "The request took ${seconds} s end to end; the node spent elapsed_ms of it"
echo "computing while the connection stayed open. Ten such calls at once keep"
echo "ten request threads busy: that is what the queue (lesson 3) avoids."
