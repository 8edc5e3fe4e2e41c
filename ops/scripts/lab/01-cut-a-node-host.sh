#!/usr/bin/env bash
# Lab 1: cut a node host off in the middle of a burst. Needs the lab running
# in another terminal (as root: make netlab) and the dashboard open at BASE_URL.
#
# N tasks are submitted through the gateway; after a third of them, node-2's
# cable is pulled (its bridge port goes down; its processes keep running).
# Watch the dashboard: node-2's worker goes grey, the gateway sends every
# request to node-1 and node-3, and the task node-2 held is redone elsewhere
# once its lease expires. After CUT_SECONDS the cable goes back in: if node-2
# was holding a task, its late result now reaches Valkey and is refused
# (wizard_tasks_fenced_writes_total in node-2's /metrics).
# The tally at the end must show every accepted task complete, once.
#
#   ops/scripts/lab/01-cut-a-node-host.sh      N=90 CUT_SECONDS=15 ops/scripts/lab/01-cut-a-node-host.sh
set -euo pipefail

BASE_URL="${BASE_URL:-http://198.18.42.2}"
N="${N:-60}"
HOST="${HOST:-node-2}"
CUT_SECONDS="${CUT_SECONDS:-10}"
# Give up waiting for the burst after this many seconds.
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-300}"
# The project's Python (the one with wizard installed), e.g. PYTHON=.venv/bin/python.
PYTHON="${PYTHON:-python3}"
LAB=("${PYTHON}" -m wizard.netlab)

field() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d '"' -f 4; }

healed=0
heal() {
  if ((healed == 0)); then
    "${LAB[@]}" heal "${HOST}" >/dev/null
    healed=1
  fi
}
trap heal EXIT

echo "Submitting ${N} tasks to ${BASE_URL}/task; ${HOST} is cut off after $((N / 3)) ..."
status_urls=()
refused=0
for i in $(seq 1 "${N}"); do
  if ((i == N / 3)); then
    "${LAB[@]}" cut "${HOST}" >/dev/null
    cut_at=${SECONDS}
    echo "  cut ${HOST} off (its bridge port is down)"
  fi
  # A request in flight to the cut host gets no answer: no 202, no promise.
  if submitted="$(curl -sS -m 5 --fail-with-body -X POST "${BASE_URL}/task?a=${i}&b=${i}" 2>/dev/null)"; then
    status_urls+=("$(field status_url <<<"${submitted}")")
  else
    refused=$((refused + 1))
  fi
done
echo "  ${#status_urls[@]} accepted (202), ${refused} got no answer in time"

while ((SECONDS - cut_at < CUT_SECONDS)); do sleep 0.5; done
heal
echo "  healed ${HOST} after about ${CUT_SECONDS} s"

echo "Waiting for every accepted task to finish ..."
deadline=$((SECONDS + TIMEOUT_SECONDS))
finished=()
for url in "${status_urls[@]}"; do
  while true; do
    body="$(curl -sS -m 5 --fail-with-body "${BASE_URL}${url}")"
    status="$(field status <<<"${body}")"
    if [[ "${status}" == complete || "${status}" == failed ]]; then
      finished+=("${body}")
      break
    fi
    if ((SECONDS >= deadline)); then
      echo "gave up after ${TIMEOUT_SECONDS} s: a task accepted with 202 did not finish" >&2
      exit 1
    fi
    sleep 0.5
  done
done

echo
echo "accepted by:"
for body in "${finished[@]}"; do field accepted_by <<<"${body}"; done | sort | uniq -c
echo "handled by:"
for body in "${finished[@]}"; do field handled_by <<<"${body}"; done | sort | uniq -c
echo
echo "accepted ${#status_urls[@]}, finished ${#finished[@]}, lost $((${#status_urls[@]} - ${#finished[@]}))"
# The lab gives node-N the address .2N, port 8000; ask it directly.
subnet="${BASE_URL#http://}"
subnet="${subnet%.*}"
echo "late results of ${HOST} refused (fenced) since it started:"
curl -sS -m 5 "http://${subnet}.2${HOST#node-}:8000/metrics" | grep '^wizard_tasks_fenced_writes_total'
