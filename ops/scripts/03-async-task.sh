#!/usr/bin/env bash
# Lab 3: asynchronous work through the queue. POST /task answers 202 at
# once with a status URL; a worker on any node computes; any node can answer
# the status, because the state lives in Valkey, not in a node:
#   accepted_by  the node whose API queued the task (the producer)
#   handled_by   the worker that computed it (the consumer), <node>/w<n>
#   checked_by   the node that answered this status request
#
#   ops/scripts/03-async-task.sh       A=1 B=0 OP=divide ops/scripts/03-async-task.sh
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
A="${A:-6}"
B="${B:-7}"
OP="${OP:-multiply}"
# Give up after this many seconds (the task should take WIZARD_WORK_SECONDS).
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-60}"

field() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d '"' -f 4; }

echo "POST ${BASE_URL}/task?a=${A}&b=${B}&operation=${OP}"
output="$(curl -sS --fail-with-body -w '\n%{http_code}' -X POST "${BASE_URL}/task?a=${A}&b=${B}&operation=${OP}")"
submitted="$(head -n 1 <<<"${output}")"
echo "-> $(tail -n 1 <<<"${output}") (answered before any work was done)"
python3 -m json.tool <<<"${submitted}"
if [[ "$(tail -n 1 <<<"${output}")" != 202 ]]; then
  echo "LESSON NOT SHOWN: POST /task did not answer 202 Accepted" >&2
  exit 1
fi
status_url="$(field status_url <<<"${submitted}")"
echo "(handled_by in the 202 names the node that answered it: no worker has the task yet.)"

echo
echo "Polling ${status_url} until the task is complete or failed:"
deadline=$((SECONDS + TIMEOUT_SECONDS))
while true; do
  body="$(curl -sS --fail-with-body "${BASE_URL}${status_url}")"
  status="$(field status <<<"${body}")"
  echo "  status=${status}  checked_by=$(field checked_by <<<"${body}")"
  if [[ "${status}" == complete || "${status}" == failed ]]; then
    break
  fi
  if ((SECONDS >= deadline)); then
    echo "gave up after ${TIMEOUT_SECONDS} s: is any worker running?" >&2
    exit 1
  fi
  sleep 0.5
done

echo
python3 -m json.tool <<<"${body}"
echo
echo "accepted_by=$(field accepted_by <<<"${body}")   the API that queued it (producer)"
echo "handled_by=$(field handled_by <<<"${body}")   the worker that computed it (consumer)"
echo "checked_by=$(field checked_by <<<"${body}")   the node that answered the last poll"
