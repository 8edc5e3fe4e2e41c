#!/usr/bin/env bash
# Lab 12: inside Valkey. Everything the cluster knows is a handful of keys:
# the queue (a list), each worker's processing list, the delayed retries (a
# sorted set), the dead letters (a list), the heartbeats (strings that
# expire), the process registry (a hash) and one hash per task. The script
# queues a few more tasks than there are workers and takes one snapshot with
# `python -m wizard inspect` (read only): every task is in exactly one place.
#
#   ops/scripts/12-inside-valkey.sh         .venv/bin/python -m wizard inspect --help
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"

wait_queue_drained
count=$(($(alive_workers | wc -l) + 2))
# All from one curl (one connection), so they arrive faster than the workers
# take them; each 202's Location header is /tasks/<id>/status.
posts=()
for i in $(seq 1 "${count}"); do posts+=(-o /dev/null "${BASE_URL}/task?a=${i}&b=${i}"); done
mapfile -t ids < <(curl -sS --fail-with-body -X POST -w '%header{location}\n' "${posts[@]}" |
  tr -d '\r' | cut -d / -f 3)
((${#ids[@]} == count)) || fail "not every task was accepted"
echo "queued ${count} tasks (2 more than there are workers); the snapshot:"
echo
snapshot="$("${PYTHON}" -m wizard inspect --var-dir "${VAR_DIR}" --task "${ids[0]}")"
while IFS= read -r line; do echo "  ${line}"; done <<<"${snapshot}"
echo
lists="$(grep -E '^(task_queue|  task_queue:processing|dead_letter_queue)' <<<"${snapshot}")"
for id in "${ids[@]}"; do
  places="$(grep -c "${id}" <<<"${lists}" || true)"
  status="$(curl -sS --fail-with-body "${BASE_URL}/tasks/${id}/status" | json status)"
  where="finished"
  # The list's name: the line's first word, without its colon.
  if [[ "${places}" == 1 ]]; then where="$(grep "${id}" <<<"${lists}" | sed -E 's/^ *//; s/( \(|: ).*//')"; fi
  echo "  ${id}: in ${places} list(s): ${where}"
  ((places <= 1)) || fail "task ${id} is in two places at once"
  if [[ "${places}" == 0 && "${status}" == pending ]]; then
    fail "task ${id} is pending but in no list"
  fi
done
[[ "${snapshot}" == *"heartbeats"*"worker:"*"expires in"* ]] || fail "no heartbeat in the snapshot"
echo
echo "Each task was waiting in task_queue, held in one worker's processing list,"
echo "or finished (only its hash left, which expires after WIZARD_RESULT_TTL)."
echo "The heartbeats count down and are renewed; a dead worker's key expires."
echo "Look again any time:  ${PYTHON} -m wizard inspect --task <id>"
