#!/usr/bin/env bash
# Lab 5: threads or processes? The work is CPU-bound Python, and a Python
# process runs Python code in one thread at a time (the interpreter lock,
# the GIL). So N synchronous /add calls on ONE node's request threads take
# turns and each takes about N times as long as one, while N tasks on N
# worker processes run side by side. That is why the workers are processes
# (the seed's central lesson).
#
#   ops/scripts/05-threads-vs-processes.sh        N=3 ops/scripts/05-threads-vs-processes.sh
#
# The yardstick is measured in the same run, beside the calls it is compared
# with: a single thread on another node, computing one call after another
# for the same span. Whatever else runs on the machine slows the yardstick
# and the calls alike, so the ratios hold on a busy laptop too; the seconds
# do not (the README's `make bench-gil` measures them on a quiet machine).
# Needs N idle workers (make lab starts 3; the script waits for the queue to
# drain first). A node runs at most WIZARD_SYNC_SLOTS (2) synchronous /add at
# once and refuses more with a 503: for N=3, WIZARD_SYNC_SLOTS=3 make lab.
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
N="${N:-2}"
ROUNDS="${ROUNDS:-3}"
# Two nodes' own addresses (make lab writes them to var/cluster.json): the N
# calls land on one process, the yardstick on another (the gateway would
# spread them).
NODE_URL="${NODE_URL:-$(json nodes node-1 <"${VAR_DIR}/cluster.json" 2>/dev/null || true)}"
OTHER_URL="${OTHER_URL:-$(json nodes node-2 <"${VAR_DIR}/cluster.json" 2>/dev/null || true)}"
[[ -n "${NODE_URL}" && -n "${OTHER_URL}" ]] ||
  fail "no node addresses: start the cluster with make lab, or set NODE_URL and OTHER_URL"
scratch="$(mktemp -d)"
trap 'rm -rf "${scratch}"' EXIT

seconds() { python3 -c "import sys; print(f'{float(sys.argv[1]) / 1000:.2f}')" "$1"; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$@"; }
mean() { python3 -c "import sys; v = [float(x) for x in sys.argv[1:]]; print(sum(v) / len(v))" "$@"; }
median() { python3 -c "import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))" "$@"; }
# elapsed FILE...: the mean elapsed_ms of the /add answers in FILEs.
elapsed() {
  local each=() file
  for file in "$@"; do each+=("$(json elapsed_ms <"${file}")"); done
  mean "${each[@]}"
}

# yardstick CALLS: CALLS /add one after another on OTHER_URL (one thread,
# never waiting for a lock); their answers go to scratch/yardstick-<i>.
yardstick() {
  for i in $(seq 1 "$1"); do
    curl -sS --fail-with-body "${OTHER_URL}/add?a=0&b=${i}" >"${scratch}/yardstick-${i}"
  done
}

# threads_round: N /add at once on node-1's threads while the yardstick makes
# N calls in a row (the same amount of work as the N calls, so both spans
# end together); prints "<mean ms of the N calls> <mean ms of a yardstick call>".
threads_round() {
  rm -f "${scratch}"/thread-* "${scratch}"/yardstick-*
  for i in $(seq 1 "${N}"); do
    curl -sS --fail-with-body "${NODE_URL}/add?a=${i}&b=1" >"${scratch}/thread-${i}" &
  done
  yardstick "${N}" &
  wait
  echo "$(elapsed "${scratch}"/thread-*) $(elapsed "${scratch}"/yardstick-*)"
}

# processes_round: N tasks through the queue (N worker processes) while the
# yardstick makes one call; prints "<mean ms of a task's work> <ms of the
# yardstick call> <workers> <overlapped: yes/no>". A task's work is its
# started_at to finished_at on the worker; the tasks overlapped if every one
# started before any finished.
processes_round() {
  rm -f "${scratch}"/task-* "${scratch}"/done-* "${scratch}"/yardstick-*
  for i in $(seq 1 "${N}"); do submit "a=${i}&b=1" >"${scratch}/task-${i}" & done
  yardstick 1 &
  wait
  for i in $(seq 1 "${N}"); do
    wait_done "$(json status_url <"${scratch}/task-${i}")" >"${scratch}/done-${i}"
  done
  python3 - "$(elapsed "${scratch}"/yardstick-*)" "${scratch}"/done-* <<'PY'
import json, sys
tasks = [json.load(open(path)) for path in sys.argv[2:]]
spans = [(t["started_at"], t["finished_at"]) for t in tasks]
mean_ms = sum(end - start for start, end in spans) / len(spans) * 1000
overlapped = max(s for s, _ in spans) < min(e for _, e in spans)
print(mean_ms, sys.argv[1], len({t["handled_by"] for t in tasks}), "yes" if overlapped else "no")
PY
}

wait_queue_drained
echo "${N} /add at once on one node's threads (${NODE_URL}); beside them, the"
echo "yardstick: one thread on another node (${OTHER_URL}) making ${N} calls in a row."
threads_x=()
for round_number in $(seq 1 "${ROUNDS}"); do
  read -r many one < <(threads_round)
  threads_x+=("$(ratio "${many}" "${one}")")
  echo "  round ${round_number}: ${N} threads $(seconds "${many}") s each," \
    "yardstick $(seconds "${one}") s a call = ${threads_x[-1]} x"
done

echo "${N} tasks at once through the queue (${N} worker processes); beside them,"
echo "the yardstick making one call."
processes_x=()
for round_number in $(seq 1 "${ROUNDS}"); do
  read -r work one workers overlapped < <(processes_round)
  processes_x+=("$(ratio "${work}" "${one}")")
  echo "  round ${round_number}: ${N} processes $(seconds "${work}") s each," \
    "yardstick $(seconds "${one}") s = ${processes_x[-1]} x" \
    "(${workers} different workers, at the same time: ${overlapped})"
  ((workers == N)) || fail "the ${N} tasks went to ${workers} worker(s): are ${N} workers idle?"
  [[ "${overlapped}" == yes ]] || fail "the ${N} workers did not run at the same time"
done

threads_median="$(median "${threads_x[@]}")"
processes_median="$(median "${processes_x[@]}")"
echo
echo "median of ${ROUNDS} rounds, each call against the single thread beside it:"
echo "${N} threads of one process:   ${threads_median} x as long"
echo "${N} worker processes:         ${processes_median} x as long"
echo
python3 -c "import sys; sys.exit(float(sys.argv[1]) < 0.7 * int(sys.argv[2]))" "${threads_median}" "${N}" ||
  fail "${N} threads did not take about ${N} x as long: is the work CPU-bound Python?"
python3 -c "import sys; sys.exit(float(sys.argv[1]) >= (1 + int(sys.argv[2])) / 2)" \
  "${processes_median}" "${N}" ||
  fail "${N} worker processes were slowed down like threads: do they share one interpreter?"
echo "Threads: the calls ran at the same time but took turns holding the one"
echo "interpreter lock, so each took about ${N} x as long as a single thread."
echo "Processes: each has its own interpreter and lock, so each went as fast as"
echo "the single thread beside it. On an idle machine with ${N} free cores that"
echo "is as fast as one task alone; on a busy one, every process slows alike."
