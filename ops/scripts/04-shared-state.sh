#!/usr/bin/env bash
# Lab 4: shared state. A node keeps nothing of its own: the task lives in
# Valkey, so every node can answer for it. The script queues one task, waits
# for it, then reads its status READS times through the gateway; round robin
# sends the reads to every node in turn, and they all give the same answer.
#
#   ops/scripts/04-shared-state.sh          READS=9 ops/scripts/04-shared-state.sh
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
READS="${READS:-6}"

submitted="$(submit 'a=20&b=22&operation=add')"
url="$(json status_url <<<"${submitted}")"
echo "queued by $(json accepted_by <<<"${submitted}"): ${url}"
wait_done "${url}" >/dev/null

echo "GET ${url}, ${READS} times:"
answers=()
readers=()
for read in $(seq 1 "${READS}"); do
  # One python3 per read: the reader, then the answer it gave.
  read -r reader answer < <(curl -sS --fail-with-body "${BASE_URL}${url}" | python3 -c '
import json, sys
t = json.load(sys.stdin)
print(t["checked_by"], t["status"], "result=%s handled_by=%s" % (t["result"], t["handled_by"]))')
  echo "  read ${read}: checked_by=${reader}  ${answer}"
  readers+=("${reader}")
  answers+=("${answer}")
done

nodes="$(printf '%s\n' "${readers[@]}" | sort -u | wc -l)"
different="$(printf '%s\n' "${answers[@]}" | sort -u | wc -l)"
echo
echo "${nodes} different nodes answered; ${different} different answer(s)."
((different == 1)) || fail "the nodes disagree about one task"
((nodes >= 2)) || fail "only one node answered: is the gateway balancing?"
echo "Every node gave the same answer because none of them holds it: Valkey"
echo "does (lab 12 looks inside). Kill any node and the others still answer."
