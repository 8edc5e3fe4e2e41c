#!/usr/bin/env bash
# Lab 9: retry without a duplicate. A client whose POST timed out cannot
# know whether the task was made; if it simply sends again, it may get two.
# With an Idempotency-Key header, every retry with the same key answers with
# the task the first request made. The script loses the first answer on
# purpose (as a timeout would), retries twice, then shows what happens
# without a key, and with the same key on different numbers.
#
#   ops/scripts/09-idempotency.sh
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
KEY="${KEY:-lab9-$$-${RANDOM}}"

post_with_key() {
  curl -sS --fail-with-body -X POST -H "Idempotency-Key: ${KEY}" "${BASE_URL}/task?$1"
}

echo "POST /task?a=5&b=5 with Idempotency-Key: ${KEY}"
post_with_key 'a=5&b=5' >/dev/null
echo "  ... and the answer is lost (thrown away here, as a timeout would)."
first="$(post_with_key 'a=5&b=5' | json task_id)"
echo "retry 1, same key:  task ${first}"
second="$(post_with_key 'a=5&b=5' | json task_id)"
echo "retry 2, same key:  task ${second}"
[[ "${first}" == "${second}" ]] || fail "the same key made two tasks"
result="$(wait_done "/tasks/${first}/status" | json result)"
echo "  one task, computed once: result ${result}"

echo
echo "the same two POSTs without a key:"
one="$(submit 'a=5&b=5' | json task_id)"
two="$(submit 'a=5&b=5' | json task_id)"
echo "  task ${one}"
echo "  task ${two}"
[[ "${one}" != "${two}" ]] || fail "two POSTs without a key gave one task"
echo "  two tasks: the work is done twice."

echo
echo "the same key with other numbers (a client bug, not a retry):"
code="$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H "Idempotency-Key: ${KEY}" \
  "${BASE_URL}/task?a=6&b=6")"
echo "  -> ${code}: refused, the key already names a task with other input"
[[ "${code}" == 422 ]] || fail "a reused key with other input was not refused with 422"
echo
echo "Retrying is only safe when the server can tell a retry from a new request:"
echo "the key (kept in Valkey per client, so any node knows it) is how."
