#!/usr/bin/env bash
# Lab 1: one address, several servers. nginx hands each request to the
# next node in turn (round robin), so six calls to /whoami through the
# gateway are answered by node A, B, C, A, B, C.
#
#   ops/scripts/01-whoami-round-robin.sh          (BASE_URL=http://127.0.0.1:8080)
#   BASE_URL=http://localhost ops/scripts/01-whoami-round-robin.sh   (docker compose)
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
CALLS="${CALLS:-6}"

# The value of a string field in the one-line JSON the API answers.
field() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d '"' -f 4; }

echo "GET ${BASE_URL}/whoami, ${CALLS} times:"
answered=()
for call in $(seq 1 "${CALLS}"); do
  body="$(curl -sS --fail-with-body "${BASE_URL}/whoami")"
  node="$(field node <<<"${body}")"
  pid="$(grep -o '"pid":[0-9]*' <<<"${body}" | cut -d : -f 2)"
  echo "  call ${call}: answered by ${node} (API process pid ${pid})"
  answered+=("${node}")
done
nodes="$(printf '%s\n' "${answered[@]}" | sort -u | wc -l)"
if ((CALLS >= 2 && nodes < 2)); then
  echo "LESSON NOT SHOWN: every call reached ${answered[0]}: is the gateway balancing?" >&2
  exit 1
fi
echo
echo "${nodes} different nodes answered: the gateway rotates over all of them."
# Other clients take turns in the same rotation: the dashboard polls every
# second, so with it open a node is now and then skipped or met twice.
for call in $(seq 1 $((${#answered[@]} - 1))); do
  if [[ "${answered[call]}" == "${answered[call - 1]}" ]]; then
    echo "(Calls ${call} and $((call + 1)) met the same node: another client, such as the open"
    echo " dashboard, took the turn in between.)"
    break
  fi
done
echo "Each node is a separate process (a container under docker compose)."
