#!/usr/bin/env bash
# Lab 1: cut a node host off in the middle of a burst. Needs the lab running
# in another terminal (as root: make netlab) and the dashboard open at BASE_URL.
#
# N tasks are submitted through the gateway; after a third of them, node-2's
# cable is pulled (its bridge port goes down; its processes keep running).
# Watch the dashboard: node-2's worker goes grey, the gateway sends every
# request to node-1 and node-3, and the task node-2 held is redone elsewhere
# once its lease expires (make netlab: 3 s). After CUT_SECONDS the cable
# goes back in: node-2's late result now reaches Valkey and is refused
# (fenced: wizard_tasks_fenced_writes_total in node-2's /metrics).
#
# It exits 0 only if the lesson showed: no 202 from node-2 while it was cut
# off, every accepted task complete, node-2's task redone elsewhere and its
# late result refused, and the workers counted no more completions than
# tasks were stored (no outcome written twice). Send no other tasks meanwhile.
#
#   ops/scripts/lab/01-cut-a-node-host.sh      N=90 CUT_SECONDS=15 ops/scripts/lab/01-cut-a-node-host.sh
set -euo pipefail
# shellcheck source=../common.bash
source "$(dirname "$0")/../common.bash"

BASE_URL="${BASE_URL:-http://198.18.42.2}"
N="${N:-60}"
HOST="${HOST:-node-2}"
CUT_SECONDS="${CUT_SECONDS:-10}"
# Give up waiting for any one step after this many seconds.
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-120}"
# The lab's command line, on the lab that `make netlab` started (its state
# is in VAR_DIR/lab/).
LAB=("${PYTHON}" -m wizard.netlab --var-dir "${VAR_DIR}")

# counter NAME NODE: NAME summed over its labels in NODE's /metrics (the
# gateway's route to that node alone).
counter() {
  curl -sS -m 5 --fail-with-body "${BASE_URL}/nodes/$2/metrics" |
    awk -v name="$1" 'index($1, name "{") == 1 || $1 == name { total += $2 } END { print total + 0 }'
}

# completions: tasks the workers of every node recorded as ended (each
# worker counts an outcome only when the fenced write accepted it).
completions() {
  local total=0 node
  for node in $(curl -sS -m 5 --fail-with-body "${BASE_URL}/cluster" |
    grep -o '"node":"[^"]*"' | cut -d '"' -f 4 | sort -u); do
    total=$((total + $(counter wizard_tasks_finished_total "${node}")))
  done
  echo "${total}"
}

healed=0
heal() {
  if ((healed == 0)); then
    "${LAB[@]}" heal "${HOST}" >/dev/null
    healed=1
  fi
}
trap heal EXIT

fenced_before="$(counter wizard_tasks_fenced_writes_total "${HOST}")"
completed_before="$(completions)"

echo "Submitting ${N} tasks to ${BASE_URL}/task; ${HOST} is cut off after $((N / 3)) ..."
status_urls=()
unanswered=0
from_cut_host=0
cut_at=""
for i in $(seq 1 "${N}"); do
  if ((i == N / 3)); then
    "${LAB[@]}" cut "${HOST}" >/dev/null
    cut_at=${SECONDS}
    echo "  cut ${HOST} off (its bridge port is down)"
  fi
  # A request in flight to the cut host gets no answer: no 202, no promise.
  if accepted="$(curl -sS -m 5 --fail-with-body -X POST "${BASE_URL}/task?a=${i}&b=${i}" 2>/dev/null)"; then
    status_urls+=("$(field status_url <<<"${accepted}")")
    if [[ -n "${cut_at}" && "$(field accepted_by <<<"${accepted}")" == "${HOST}" ]]; then
      from_cut_host=$((from_cut_host + 1))
    fi
  else
    unanswered=$((unanswered + 1))
  fi
done
echo "  ${#status_urls[@]} accepted (202), ${unanswered} got no answer in time"
((from_cut_host == 0)) || fail "${from_cut_host} tasks were accepted by ${HOST} while it was cut off"
echo "  none accepted by ${HOST} after the cut: the gateway routed around it"

while ((SECONDS - cut_at < CUT_SECONDS)); do sleep 0.5; done
heal
echo "  healed ${HOST} after about ${CUT_SECONDS} s"

echo "Waiting for every accepted task to finish ..."
finished=()
for url in "${status_urls[@]}"; do
  finished+=("$(wait_done "${url}" "${TIMEOUT_SECONDS}")")
done

echo
echo "accepted by:"
for body in "${finished[@]}"; do field accepted_by <<<"${body}"; done | sort | uniq -c
echo "handled by:"
for body in "${finished[@]}"; do field handled_by <<<"${body}"; done | sort | uniq -c
complete=0
redone=0
for body in "${finished[@]}"; do
  if [[ "$(field status <<<"${body}")" == complete ]]; then complete=$((complete + 1)); fi
  if (($(field attempts <<<"${body}") > 1)); then redone=$((redone + 1)); fi
done
echo
echo "accepted ${#status_urls[@]}, complete ${complete}, lost $((${#status_urls[@]} - complete))"
((complete == ${#status_urls[@]})) || fail "an accepted task did not complete"
((redone > 0)) || fail "no task needed a second attempt: ${HOST} held none when cut; run again"
echo "${redone} task(s) redone after a lease expired (attempts: 2)"

# TCP kept the result node-2's worker sent while cut off and delivers it now.
deadline=$((SECONDS + TIMEOUT_SECONDS))
until (($(counter wizard_tasks_fenced_writes_total "${HOST}") > fenced_before)); do
  ((SECONDS < deadline)) || fail "no late result of ${HOST} was refused after ${TIMEOUT_SECONDS} s"
  sleep 0.5
done
echo "late results of ${HOST} refused (fenced): $(($(counter wizard_tasks_fenced_writes_total "${HOST}") - fenced_before))"

# Workers add their counts to Valkey about once a second.
deadline=$((SECONDS + TIMEOUT_SECONDS))
until (($(completions) - completed_before >= ${#status_urls[@]})); do
  ((SECONDS < deadline)) || fail "the workers counted fewer completions than tasks accepted"
  sleep 0.5
done
counted=$(($(completions) - completed_before))
echo "outcomes recorded by the workers: ${counted} for ${#status_urls[@]} accepted" \
  "(+ up to ${unanswered} stored without a 202 reaching you)"
((counted <= ${#status_urls[@]} + unanswered)) || fail "an outcome was written twice"
echo "Nothing lost, no outcome written twice."
