#!/usr/bin/env bash
# Lab 5: threads or processes? The work is CPU-bound Python, and a Python
# process runs Python code in one thread at a time (the interpreter lock,
# the GIL). So N synchronous /add calls on ONE node's request threads share
# one core and each takes about N times as long as one alone, while N tasks
# on N worker processes run side by side, one core each. That is why the
# workers are processes (the seed's central lesson).
#
#   ops/scripts/05-threads-vs-processes.sh        N=3 ops/scripts/05-threads-vs-processes.sh
#
# Needs N idle workers (make lab starts 3) and, for the processes to show
# their speed, N free cores: N=2 on a 2-core laptop. A node runs at most
# WIZARD_SYNC_SLOTS (2) synchronous /add at once and refuses more with a 503:
# for N=3, start the lab with WIZARD_SYNC_SLOTS=3 make lab.
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
N="${N:-2}"
# Two nodes' own addresses (make lab writes them to var/cluster.json): N
# calls land on one process, and one call on another process at the same
# moment is the yardstick "alone" (the gateway would spread them).
NODE_URL="${NODE_URL:-$(json nodes node-1 <"${VAR_DIR}/cluster.json" 2>/dev/null || true)}"
OTHER_URL="${OTHER_URL:-$(json nodes node-2 <"${VAR_DIR}/cluster.json" 2>/dev/null || true)}"
[[ -n "${NODE_URL}" && -n "${OTHER_URL}" ]] ||
  fail "no node addresses: start the cluster with make lab, or set NODE_URL and OTHER_URL"
scratch="$(mktemp -d)"
trap 'rm -rf "${scratch}"' EXIT

ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$@"; }
mean() { python3 -c "import sys; v = [float(x) for x in sys.argv[1:]]; print(sum(v) / len(v))" "$@"; }

# round: N /add at once on node-1's threads and, at the same moment, one on
# node-2 alone; prints "<mean ms of the N> <ms of the one alone>". Measured
# side by side, both see the same machine: whatever else runs on it slows
# both alike.
round() {
  for i in $(seq 1 "${N}"); do
    curl -sS --fail-with-body "${NODE_URL}/add?a=${i}&b=1" >"${scratch}/thread-${i}" &
  done
  curl -sS --fail-with-body "${OTHER_URL}/add?a=0&b=1" >"${scratch}/alone" &
  wait
  local each=()
  for i in $(seq 1 "${N}"); do each+=("$(json elapsed_ms <"${scratch}/thread-${i}")"); done
  echo "$(mean "${each[@]}") $(json elapsed_ms <"${scratch}/alone")"
}

echo "${N} /add at once on one node's threads (${NODE_URL}), and one alone on another"
echo "node (${OTHER_URL}) at the same moment, 3 rounds:"
rounds=()
for round_number in 1 2 3; do
  read -r many one < <(round)
  rounds+=("$(ratio "${many}" "${one}")")
  echo "  round ${round_number}: alone $(ratio "${one}" 1000) s, ${N} threads $(ratio "${many}" 1000) s each = ${rounds[-1]} x"
done
threads_x="$(python3 -c "import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))" "${rounds[@]}")"
alone_ms="${one}"
threads_ms="${many}"

echo "${N} tasks at once through the queue (${N} worker processes) ..."
for i in $(seq 1 "${N}"); do submit "a=${i}&b=1" >"${scratch}/task-${i}" & done
wait
for i in $(seq 1 "${N}"); do
  wait_done "$(json status_url <"${scratch}/task-${i}")" >"${scratch}/done-${i}"
done
# Each task's own work time (started_at to finished_at, on the worker), its
# worker, and whether they all ran at the same time (every start before
# every finish).
read -r processes_ms workers overlapped < <(python3 - "${scratch}"/done-* <<'PY'
import json, sys
tasks = [json.load(open(path)) for path in sys.argv[1:]]
spans = [(t["started_at"], t["finished_at"]) for t in tasks]
mean_ms = sum(end - start for start, end in spans) / len(spans) * 1000
overlapped = max(s for s, _ in spans) < min(e for _, e in spans)
print(mean_ms, len({t["handled_by"] for t in tasks}), "yes" if overlapped else "no")
PY
)

processes_x="$(ratio "${processes_ms}" "${alone_ms}")"
echo
echo "one alone:                    $(ratio "${alone_ms}" 1000) s"
echo "${N} threads of one process:    $(ratio "${threads_ms}" 1000) s each = ${threads_x} x alone (median round)"
echo "${N} worker processes:          $(ratio "${processes_ms}" 1000) s each = ${processes_x} x alone" \
  "(${workers} different workers, at the same time: ${overlapped})"
echo
python3 -c "import sys; sys.exit(float(sys.argv[1]) < 0.7 * int(sys.argv[2]))" "${threads_x}" "${N}" ||
  fail "${N} threads did not take about ${N} x as long: is the work CPU-bound Python?"
((workers == N)) || fail "the ${N} tasks went to ${workers} worker(s): are ${N} workers idle?"
[[ "${overlapped}" == yes ]] || fail "the ${N} workers did not run at the same time"
echo "Threads: the calls ran at the same time but took turns holding the one"
echo "interpreter lock, so each took about ${N} x as long. Processes: each has"
echo "its own interpreter and lock; with ${N} free cores they take about 1 x."
