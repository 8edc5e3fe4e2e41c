#!/usr/bin/env bash
# Lab 7: break it. With a batch of tasks in flight, kill -9 (no goodbye) a
# worker in the middle of a task, a whole node, the gateway, and Valkey
# itself. The launcher (make lab) restarts what died, as compose's restart
# policy would; the scheduler's reaper hands the killed worker's task back
# once its lease expires. At the end every task is complete: nothing lost,
# and the interrupted one says attempts: 2.
#
#   ops/scripts/07-break-it.sh          BATCH=15 ops/scripts/07-break-it.sh
#
# Local cluster only (make lab or make run): it kills processes by PID.
# Needs curl 7.84 or newer (-w '%header{...}').
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
# Tasks queued at once; more than the workers, so all of them are busy.
BATCH="${BATCH:-9}"
# Longest wait for any one recovery, seconds.
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-90}"

urls=()
# queue_batch N: POST N tasks from one curl (one connection, so they arrive
# faster than the workers take them); adds their status URLs (the Location
# header of each 202) to urls.
queue_batch() {
  local posts=() before=${#urls[@]} url
  for i in $(seq 1 "$1"); do posts+=(-o /dev/null "${BASE_URL}/task?a=${i}&b=100"); done
  mapfile -t -O "${before}" urls < <(curl -sS -X POST -w '%header{location}\n' "${posts[@]}" |
    tr -d '\r')
  for url in "${urls[@]:${before}}"; do
    [[ "${url}" == /tasks/* ]] || fail "a task of the batch was not accepted (rate limit?)"
  done
  ((${#urls[@]} == before + $1)) || fail "the batch was not accepted"
}

# wait_new_pid NAME OLD: until /cluster lists NAME with a pid other than OLD.
wait_new_pid() {
  local deadline=$((SECONDS + TIMEOUT_SECONDS)) pid=""
  while ((SECONDS < deadline)); do
    pid="$(pid_of "$1" 2>/dev/null || true)"
    if [[ -n "${pid}" && "${pid}" != "$2" ]]; then
      echo "${pid}"
      return 0
    fi
    sleep 0.3
  done
  fail "$1 was not back after ${TIMEOUT_SECONDS} s (is the launcher running?)"
}

echo "1. kill -9 a worker in the middle of a task"
worker="node-1/w1"
victim_task=""
for try in 1 2 3; do
  # More tasks than workers: while some still wait in the queue, every
  # worker is busy with one, node-1/w1 too.
  first=${#urls[@]}
  queue_batch "${BATCH}"
  pid="$(pid_of "${worker}")"
  kill -9 "${pid}"
  echo "   killed ${worker} (pid ${pid}) with ${BATCH} tasks just queued"
  for url in "${urls[@]:${first}}"; do
    body="$(wait_done "${url}" "${TIMEOUT_SECONDS}")"
    if [[ "$(json attempts <<<"${body}")" == 2 ]]; then
      victim_task="$(json task_id <<<"${body}")"
      done_body="${body}"
    fi
  done
  if [[ -n "${victim_task}" ]]; then break; fi
  echo "   (it was idle: the batch was done already; trying again, ${try} of 3)"
  pid="$(wait_new_pid "${worker}" "${pid}")"
done
[[ -n "${victim_task}" ]] || fail "the killed worker's task never needed a second attempt"
echo "   its task ${victim_task}: $(json status <<<"${done_body}"), attempts: $(json attempts <<<"${done_body}"), handled_by $(json handled_by <<<"${done_body}")"
reaped="$(grep -h "${victim_task}" "${VAR_DIR}"/logs/node-*.log | grep -m 1 'reaped' || true)"
[[ -n "${reaped}" ]] || fail "no reaper line for ${victim_task} in ${VAR_DIR}/logs/"
echo "   the reaper's log line: ${reaped}"
echo "   the worker is back: pid $(wait_new_pid "${worker}" "${pid}") (its supervisor restarted it)"

echo "2. kill -9 a whole node (its supervisor; the launcher takes its children down and restarts it)"
old="$(pid_of node-2/supervisor)"
kill -9 "${old}"
echo "   killed node-2's supervisor (pid ${old}); node-2 back as pid $(wait_new_pid node-2/supervisor "${old}")"

echo "3. kill -9 the gateway (nginx)"
old="$(pid_of nginx)"
kill -9 "${old}"
echo "   killed nginx (pid ${old}); back as pid $(wait_new_pid nginx "${old}")"

echo "4. kill -9 Valkey, with tasks accepted two seconds ago"
queue_batch 2
# Valkey forces its append-only file to disk once a second (appendfsync
# everysec): after two seconds these tasks are on disk. A kill -9 within that
# second could lose them (WIZARD_DURABLE_ACK=1 closes that window).
sleep 2
old="$(pid_of valkey)"
kill -9 "${old}"
echo "   killed valkey (pid ${old}); back as pid $(wait_new_pid valkey "${old}") (its append-only file replayed)"

echo "5. every task of the lab, after all that:"
complete=0
for url in "${urls[@]}"; do
  body="$(wait_done "${url}" "${TIMEOUT_SECONDS}")"
  if [[ "$(json status <<<"${body}")" == complete ]]; then complete=$((complete + 1)); fi
done
echo "   ${complete} of ${#urls[@]} complete"
((complete == ${#urls[@]})) || fail "$((${#urls[@]} - complete)) task(s) did not complete"
echo
echo "Nothing lost: the worker's task came back through the reaper (attempts: 2),"
echo "the node and the gateway came back by themselves, and Valkey's append-only"
echo "file kept every accepted task across a kill -9."
