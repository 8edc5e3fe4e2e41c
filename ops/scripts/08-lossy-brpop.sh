#!/usr/bin/env bash
# Lab 8: the lossy consumer. The seed's workers took a task with BRPOP: the
# id leaves the queue and, until the result is written, exists only in the
# worker's memory. This script starts one extra node, "lossy", whose worker
# takes tasks that way (WIZARD_FETCH=brpop), kills that worker with kill -9
# while it holds a task, KILLS times, and counts what comes back: nothing.
# The reliable consumer (BLMOVE into a processing list, lab 7) got its task
# back; these stay "running" forever, in no list the reaper reads.
#
#   ops/scripts/08-lossy-brpop.sh          KILLS=3 ops/scripts/08-lossy-brpop.sh
#
# Local cluster only (make lab): it starts a node next to it and kills by PID.
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
KILLS="${KILLS:-2}"
# The cluster's lease (make lab: 3 s); the reaper acts once a lease expired.
LEASE_SECONDS="${LEASE_SECONDS:-3}"
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-60}"

cluster="${VAR_DIR}/cluster.json"
[[ -r "${cluster}" ]] || fail "no ${cluster}: start the local cluster with make lab"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
echo "starting node 'lossy' (1 worker, WIZARD_FETCH=brpop), log in ${VAR_DIR}/logs/lossy.log"
env VALKEY_URL="$(json valkey_url <"${cluster}")" \
  VALKEY_PASSWORD_FILE="$(json valkey_password_file <"${cluster}")" \
  WIZARD_NODE_ID=lossy WIZARD_HOST=127.0.0.1 WIZARD_PORT="${port}" WIZARD_WORKERS=1 \
  WIZARD_FETCH=brpop WIZARD_WORK_SECONDS=20 WIZARD_LEASE_SECONDS="${LEASE_SECONDS}" \
  WIZARD_BLOCK_SECONDS=0.5 \
  "${PYTHON}" -m wizard node >>"${VAR_DIR}/logs/lossy.log" 2>&1 &
lossy_node=$!
trap 'kill -TERM "${lossy_node}" 2>/dev/null; wait "${lossy_node}" 2>/dev/null || true' EXIT

deadline=$((SECONDS + TIMEOUT_SECONDS))
# grep reads every line (no -q): quitting at the first match would close the
# pipe while alive_workers' python still writes, a BrokenPipeError traceback.
until alive_workers | grep -x 'lossy/w1' >/dev/null; do
  ((SECONDS < deadline)) || fail "node lossy did not start; see ${VAR_DIR}/logs/lossy.log"
  sleep 0.3
done

lost=()
pid=""
for kill_number in $(seq 1 "${KILLS}"); do
  # Wait for the (re)started worker's own pid, then feed the queue one task
  # at a time until the lossy worker is the one running one.
  until [[ -n "$(pid_of lossy/w1)" && "$(pid_of lossy/w1)" != "${pid}" ]]; do
    ((SECONDS < deadline + 60)) || fail "lossy/w1 did not come back"
    sleep 0.3
  done
  pid="$(pid_of lossy/w1)"
  task=""
  for _ in $(seq 1 30); do
    url="$(submit 'a=7&b=6&operation=multiply' | json status_url)"
    taken_by=$((SECONDS + TIMEOUT_SECONDS))
    until body="$(curl -sS --fail-with-body "${BASE_URL}${url}")" &&
      [[ "$(json status <<<"${body}")" != pending ]]; do
      ((SECONDS < taken_by)) || fail "no worker took task ${url}"
      sleep 0.1
    done
    if [[ "$(json handled_by <<<"${body}")" == lossy/w1 ]]; then
      task="$(json task_id <<<"${body}")"
      break
    fi
  done
  [[ -n "${task}" ]] || fail "the lossy worker took none of 30 tasks"
  kill -9 "${pid}"
  echo "kill ${kill_number}: killed lossy/w1 (pid ${pid}) holding task ${task}"
  lost+=("${task}")
done

wait_seconds=$((2 * LEASE_SECONDS + 2))
echo "waiting ${wait_seconds} s (two leases: the reaper would have acted by now) ..."
sleep "${wait_seconds}"
snapshot="$("${PYTHON}" -m wizard inspect --var-dir "${VAR_DIR}")"
lists="$(grep -E '^(task_queue|  task_queue:processing|dead_letter_queue)' <<<"${snapshot}")"
still_lost=0
for task in "${lost[@]}"; do
  body="$(curl -sS --fail-with-body "${BASE_URL}/tasks/${task}/status")"
  in_lists="$(grep -c "${task}" <<<"${lists}" || true)"
  echo "  ${task}: status=$(json status <<<"${body}") attempts=$(json attempts <<<"${body}") in queue or any list: ${in_lists}"
  if [[ "$(json status <<<"${body}")" == running && "${in_lists}" == 0 ]]; then
    still_lost=$((still_lost + 1))
  fi
done
echo
echo "lost: ${still_lost} of ${#lost[@]} tasks whose worker was killed"
((still_lost == ${#lost[@]})) || fail "a task of a killed BRPOP worker came back"
echo "Each says 'running' and will say so forever: its id was only in the dead"
echo "process's memory. BLMOVE keeps a copy in the worker's processing list,"
echo "which is what lets the reaper hand a task back (lab 7). Stopping lossy now;"
echo "the dashboard shows it greyed out until it is forgotten."
