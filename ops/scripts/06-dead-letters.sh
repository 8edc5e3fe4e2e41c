#!/usr/bin/env bash
# Lesson 6: the dead-letter queue. A task whose worker died on every attempt
# (WIZARD_MAX_ATTEMPTS) is not retried forever: it is parked in
# dead_letter_queue with the reason, for a person to look at. Retrying it is
# an admin action: the nodes must have WIZARD_ADMIN_TOKEN set, and the
# request must carry it as a bearer token.
#
#   ops/scripts/06-dead-letters.sh                       (list; show the refusal)
#   WIZARD_ADMIN_TOKEN=... ops/scripts/06-dead-letters.sh (list; retry the newest)
set -euo pipefail

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
TOKEN="${WIZARD_ADMIN_TOKEN:-}"

echo "GET ${BASE_URL}/dead_letters"
letters="$(curl -sS --fail-with-body "${BASE_URL}/dead_letters")"
python3 -m json.tool <<<"${letters}"

task_id="$(grep -o '"task_id":"[0-9a-f]*"' <<<"${letters}" | head -n 1 | cut -d '"' -f 4 || true)"
if [[ -z "${task_id}" ]]; then
  echo
  echo "No dead letters: every task so far finished (complete or failed)."
  echo "See ops/scripts/README.md for how to make one with the chaos operation."
  exit 0
fi

echo
echo "POST ${BASE_URL}/dead_letters/${task_id}/retry"
if [[ -z "${TOKEN}" ]]; then
  answer="$(curl -sS -w '\n%{http_code}' -X POST "${BASE_URL}/dead_letters/${task_id}/retry")"
  python3 -m json.tool <<<"$(head -n 1 <<<"${answer}")"
  echo "-> $(tail -n 1 <<<"${answer}"): without the admin token the retry is refused."
  echo "Run again with WIZARD_ADMIN_TOKEN=<the nodes' token> to retry it."
  exit 0
fi
answer="$(curl -sS --fail-with-body -w '\n%{http_code}' -X POST \
  -H "Authorization: Bearer ${TOKEN}" "${BASE_URL}/dead_letters/${task_id}/retry")"
python3 -m json.tool <<<"$(head -n 1 <<<"${answer}")"
echo "-> $(tail -n 1 <<<"${answer}"): task ${task_id} is back in the queue with its attempts reset."
echo "Follow it with: curl -s ${BASE_URL}/tasks/${task_id}/status"
