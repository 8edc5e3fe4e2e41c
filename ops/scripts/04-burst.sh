#!/usr/bin/env bash
# Lesson 4: a burst. N tasks are queued in well under a second (each POST
# only writes to Valkey), then the workers of every node drain the queue.
# The tally shows the two halves spread independently: the gateway spreads
# the POSTs (accepted_by), the queue spreads the work (handled_by).
#
#   ops/scripts/04-burst.sh          N=30 ops/scripts/04-burst.sh
set -euo pipefail

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
N="${N:-12}"
# Give up waiting for the whole burst after this many seconds.
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-300}"

field() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d '"' -f 4; }

echo "Submitting ${N} tasks to ${BASE_URL}/task ..."
started=${SECONDS}
status_urls=()
for i in $(seq 1 "${N}"); do
  submitted="$(curl -sS --fail-with-body -X POST "${BASE_URL}/task?a=${i}&b=${i}&operation=add")"
  status_urls+=("$(field status_url <<<"${submitted}")")
done
echo "  all ${N} accepted (202) in about $((SECONDS - started)) s"

echo "Waiting for every task to finish ..."
deadline=$((SECONDS + TIMEOUT_SECONDS))
finished=()
for url in "${status_urls[@]}"; do
  while true; do
    body="$(curl -sS --fail-with-body "${BASE_URL}${url}")"
    status="$(field status <<<"${body}")"
    if [[ "${status}" == complete || "${status}" == failed ]]; then
      finished+=("${body}")
      break
    fi
    if ((SECONDS >= deadline)); then
      echo "gave up after ${TIMEOUT_SECONDS} s with tasks still queued" >&2
      exit 1
    fi
    sleep 0.5
  done
done
echo "  all ${N} finished after about $((SECONDS - started)) s"

echo
echo "accepted by (the API that queued the task):"
for body in "${finished[@]}"; do field accepted_by <<<"${body}"; done | sort | uniq -c
echo "handled by (the worker that computed it):"
for body in "${finished[@]}"; do field handled_by <<<"${body}"; done | sort | uniq -c
echo
echo "Every node accepted about the same number (round robin), while the work"
echo "went to whichever worker was free: with WIZARD_WORK_SECONDS=2 the burst"
echo "takes about N x 2 s / (number of workers)."
