#!/usr/bin/env bash
# Lab 13 (extra): errors are part of the contract. Every bad request gets a 4xx
# answer as an RFC 9457 problem document (application/problem+json: type,
# title, status, detail, handled_by), never a stack trace or an HTML page.
# The script checks each status and exits 1 if one differs.
#
#   ops/scripts/13-bad-input.sh
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
body_file="$(mktemp)"
trap 'rm -f "${body_file}"' EXIT

# field NAME: a top-level string of the JSON on stdin ('' if it is not JSON).
field() {
  python3 -c '
import json, sys
try:
    print(json.load(sys.stdin).get(sys.argv[1], ""))
except ValueError:  # not JSON: the contract is broken, and try() says so
    print("")
' "$1"
}
failures=0

# try EXPECTED_STATUS DESCRIPTION CURL_ARGUMENTS...
try() {
  local expected="$1" what="$2"
  shift 2
  local got
  got="$(curl -sS -o "${body_file}" -w '%{http_code} %{content_type}' "$@")"
  echo "${what}"
  echo "  -> ${got}: $(field title <"${body_file}") - $(field detail <"${body_file}")"
  if [[ "${got}" != "${expected} application/problem+json"* ]]; then
    echo "  expected ${expected} application/problem+json" >&2
    failures=$((failures + 1))
  fi
}

try 400 "a missing operand:      GET /add?a=1" \
  "${BASE_URL}/add?a=1"
try 400 "an operand that is not a number:  POST /task?a=1&b=abc" \
  -X POST "${BASE_URL}/task?a=1&b=abc"
try 400 "an operand that is not finite:    POST /task?a=1&b=inf" \
  -X POST "${BASE_URL}/task?a=1&b=inf"
try 400 "an unknown operation:   POST /task?a=1&b=2&operation=power" \
  -X POST "${BASE_URL}/task?a=1&b=2&operation=power"
try 400 "an argument the route does not use:  GET /add?a=1&b=2&operation=multiply" \
  "${BASE_URL}/add?a=1&b=2&operation=multiply"
try 400 "a number sent as a JSON string:    POST /task with {\"a\": \"1\", \"b\": 2}" \
  -X POST -H 'Content-Type: application/json' --data '{"a": "1", "b": 2}' "${BASE_URL}/task"
try 404 "an unknown task:        GET /tasks/<32 zeros>/status" \
  "${BASE_URL}/tasks/00000000000000000000000000000000/status"
try 404 "an unknown route:       GET /nowhere" \
  "${BASE_URL}/nowhere"
try 405 "the wrong method:       DELETE /task (the answer has an Allow header)" \
  -X DELETE "${BASE_URL}/task"
try 415 "an unsupported body:    POST /task with Content-Type: text/plain" \
  -X POST -H 'Content-Type: text/plain' --data 'a=1&b=2' "${BASE_URL}/task"
try 413 "a body over 16 KiB:     POST /task with 20000 bytes of JSON" \
  -X POST -H 'Content-Type: application/json' \
  --data-binary "{\"a\": 1, \"b\": 2, \"pad\": \"$(head -c 20000 /dev/zero | tr '\0' x)\"}" \
  "${BASE_URL}/task"

echo
if ((failures > 0)); then
  echo "${failures} answer(s) differed from the contract" >&2
  exit 1
fi
echo "Each answer said what was wrong, in the same JSON shape, with a 4xx status."
echo "(Division by zero is not bad input: it is a task that ends 'failed',"
echo " try A=1 B=0 OP=divide ops/scripts/03-async-task.sh.)"
