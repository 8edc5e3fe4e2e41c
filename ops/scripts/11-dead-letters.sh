#!/usr/bin/env bash
# Lab 11: dead letters. A poison task (operation=crash: it kills the worker
# that runs it; a chaos operation, on in make lab only) would kill workers
# forever if it were retried forever. After WIZARD_MAX_ATTEMPTS it is parked
# in dead_letter_queue with the reason, for a person to look at. Retrying or
# discarding it is an admin action: without the admin token, 401 with a
# WWW-Authenticate challenge; with it (make lab prints it and keeps it in
# var/secrets/admin-token), 202. Poison stays poison: it dies again.
#
#   ops/scripts/11-dead-letters.sh       WIZARD_ADMIN_TOKEN=... ops/scripts/11-dead-letters.sh
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-90}"
TOKEN="$(admin_token)"
[[ -n "${TOKEN}" ]] || fail "no admin token: set WIZARD_ADMIN_TOKEN or start the cluster with make lab"

# wait_dead TASK: until TASK is in GET /dead_letters; prints its letter.
wait_dead() {
  local deadline=$((SECONDS + TIMEOUT_SECONDS)) letter
  while ((SECONDS < deadline)); do
    letter="$(curl -sS --fail-with-body "${BASE_URL}/dead_letters" | python3 -c '
import json, sys
for letter in json.load(sys.stdin)["dead_letters"]:
    if letter["task_id"] == sys.argv[1]:
        print(json.dumps(letter))
' "$1")"
    if [[ -n "${letter}" ]]; then
      echo "${letter}"
      return 0
    fi
    sleep 0.5
  done
  fail "task $1 was not dead-lettered after ${TIMEOUT_SECONDS} s (chaos operations on?)"
}

wait_queue_drained
task="$(submit 'a=1&b=2&operation=crash' | json task_id)"
echo "queued a poison task ${task} (operation=crash); waiting for it to be dead-lettered ..."
letter="$(wait_dead "${task}")"
echo "GET /dead_letters shows it:"
python3 -m json.tool <<<"${letter}"
echo "  after $(json attempts <<<"${letter}") attempts, reason: $(json reason <<<"${letter}")"

echo
echo "POST /dead_letters/${task}/retry without the token:"
answer="$(curl -sS -D - -o /dev/null -X POST "${BASE_URL}/dead_letters/${task}/retry" | tr -d '\r')"
code="$(head -n 1 <<<"${answer}" | cut -d ' ' -f 2)"
challenge="$(grep -i '^WWW-Authenticate:' <<<"${answer}" | cut -d ' ' -f 2- || true)"
echo "  -> ${code}  WWW-Authenticate: ${challenge}"
[[ "${code}" == 401 && -n "${challenge}" ]] || fail "the retry without a token was not a 401 challenge"

echo "POST /dead_letters/${task}/retry with Authorization: Bearer <admin token>:"
code="$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer ${TOKEN}" \
  "${BASE_URL}/dead_letters/${task}/retry")"
echo "  -> ${code}: back in the queue with its attempts reset"
[[ "${code}" == 202 ]] || fail "the retry with the token was not accepted"
letter="$(wait_dead "${task}")"
echo "  ... and dead again after $(json attempts <<<"${letter}") more attempts: it is poison."

echo "DELETE /dead_letters/${task} with the token:"
code="$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer ${TOKEN}" \
  "${BASE_URL}/dead_letters/${task}")"
echo "  -> ${code}: discarded for good"
[[ "${code}" == 200 ]] || fail "discarding the dead letter failed"
echo
echo "The queue protected its workers: a task that kills them is stopped after a"
echo "few attempts, kept with its reason, and only an admin decides what next."
