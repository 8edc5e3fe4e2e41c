#!/usr/bin/env bash
# Lab 6: scaling out. N tasks are queued in well under a second (each POST
# only writes to Valkey), then the workers of every node drain the queue.
# The tally shows the two halves spread independently: the gateway spreads
# the POSTs (accepted_by), the queue spreads the work (handled_by). The drain
# rate grows with the number of worker processes, up to the number of cores:
# run it, then restart with more workers or nodes and run it again:
#
#   ops/scripts/06-scaling.sh          N=30 ops/scripts/06-scaling.sh
#   make lab WORKERS=2                 make lab NODES=2 WORKERS=1
#
# Over the rate limit (make lab: 5/s, bursts of 15; N=30 gets there) it
# waits Retry-After and sends again. Needs curl 7.84 or newer.
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
N="${N:-12}"
# Give up waiting for the whole burst after this many seconds.
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-300}"

field() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d '"' -f 4; }

wait_queue_drained
workers="$(alive_workers | wc -l)"
echo "${workers} worker processes in the cluster."
echo "Submitting ${N} tasks to ${BASE_URL}/task ..."
started=${SECONDS}
status_urls=()
refused=0
answer="$(mktemp)"
trap 'rm -f "${answer}"' EXIT
for i in $(seq 1 "${N}"); do
  # A 429 (over the rate limit, lab 10) is not an error: wait Retry-After
  # seconds, as a polite client does, and send the same task again.
  while true; do
    code_wait="$(curl -sS -o "${answer}" -w '%{http_code} %header{retry-after}' -X POST \
      "${BASE_URL}/task?a=${i}&b=${i}&operation=add")"
    read -r code wait <<<"${code_wait}"
    [[ "${code}" == 429 ]] || break
    refused=$((refused + 1))
    sleep "${wait:-1}"
  done
  [[ "${code}" == 202 ]] || fail "POST /task answered ${code}: $(cat "${answer}")"
  status_urls+=("$(field status_url <"${answer}")")
done
echo "  all ${N} accepted (202) in about $((SECONDS - started)) s"
if ((refused > 0)); then
  echo "  (${refused} x 429 on the way: over the rate limit, so the script waited Retry-After)"
fi

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
drain_seconds=$((SECONDS - started))
echo "  all ${N} finished after about ${drain_seconds} s"

echo
echo "accepted by (the API that queued the task):"
for body in "${finished[@]}"; do field accepted_by <<<"${body}"; done | sort | uniq -c
echo "handled by (the worker that computed it):"
for body in "${finished[@]}"; do field handled_by <<<"${body}"; done | sort | uniq -c
echo
echo "Every node accepted about the same number (round robin), while the work"
echo "went to whichever worker was free: the burst takes about"
echo "N x WIZARD_WORK_SECONDS / workers while there are cores for every worker;"
echo "past the number of cores, more workers only take turns."
busy="$(for body in "${finished[@]}"; do field handled_by <<<"${body}"; done | sort -u | wc -l)"
echo "${busy} of ${workers} workers took part."
if ((N >= 2 * workers && busy < workers)); then
  fail "some workers took no task from a queue of ${N}"
fi
