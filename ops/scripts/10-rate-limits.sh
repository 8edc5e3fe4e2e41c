#!/usr/bin/env bash
# Lab 10: rate limits. Each client may make so many requests that do work
# per second, with a burst allowance; past it, 429 Too Many Requests with
# Retry-After. Every answer carries the IETF RateLimit-Policy (the quota)
# and RateLimit (what is left, r, and seconds until it is whole, t). The
# count is kept in Valkey, so all nodes share one budget per client. A
# second client (curl from the address 127.0.0.2) has its own budget. In
# front of the nodes, nginx guards against floods per address too: its 429s
# carry Retry-After but no RateLimit (they never reach a node).
#
#   ops/scripts/10-rate-limits.sh           (make lab: 5/s, bursts of 15)
#
# Needs curl 7.84 or newer (for -w '%header{...}'; Debian 12 has 7.88).
set -euo pipefail
# shellcheck source=common.bash
source "$(dirname "$0")/common.bash"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
SECOND_CLIENT="${SECOND_CLIENT:-127.0.0.2}"
headers="$(mktemp)"
trap 'rm -f "${headers}"' EXIT

# post [CURL OPTIONS]: POST a task; prints "<status>|<RateLimit>|<Retry-After>".
post() {
  local code
  code="$(curl -sS -o /dev/null -D "${headers}" -w '%{http_code}' "$@" -X POST \
    "${BASE_URL}/task?a=1&b=1")"
  echo "${code}|$(header RateLimit)|$(header Retry-After)"
}
header() { grep -i "^$1:" "${headers}" | head -n 1 | cut -d ' ' -f 2- | tr -d '\r' || true; }

post >/dev/null
policy="$(header RateLimit-Policy)"
[[ -n "${policy}" ]] || fail "no RateLimit-Policy header: are rate limits on (make lab)?"
quota="$(sed -n 's/.*;q=\([0-9]*\).*/\1/p' <<<"${policy}")"
echo "client 1 (this machine's 127.0.0.1): RateLimit-Policy: ${policy}"
echo "  a quota of ${quota} requests; sending $((quota + 10)) at once (one curl, one connection):"
# One curl process for the whole burst (a new process per request is too
# slow to outrun the refill on a busy machine); -w prints one line each.
burst=()
for _ in $(seq 1 $((quota + 10))); do burst+=(-o /dev/null "${BASE_URL}/task?a=1&b=1"); done
accepted=0
refused=0
retry_after=""
i=0
while IFS='|' read -r code limit wait; do
  i=$((i + 1))
  # A 429 without RateLimit comes from nginx's own flood guard (per address,
  # ops/nginx/wizard-limits.conf), before any node counts the request.
  from="${limit:+RateLimit: ${limit}}"
  echo "  request ${i}: ${code}  ${from:-(refused by the gateway)}${wait:+  Retry-After: ${wait}}"
  if [[ "${code}" == 202 ]]; then accepted=$((accepted + 1)); fi
  if [[ "${code}" == 429 ]]; then
    refused=$((refused + 1))
    [[ -n "${wait}" ]] || fail "a 429 came without Retry-After"
    retry_after="${wait}"
  fi
done < <(curl -sS -X POST -w '%{http_code}|%header{ratelimit}|%header{retry-after}\n' "${burst[@]}")
echo "  ${accepted} accepted (202), ${refused} refused (429, Retry-After: ${retry_after} s)"
((refused > 0)) || fail "no 429 after $((quota + 10)) requests at once"

echo "client 2 (curl --interface ${SECOND_CLIENT}), right now:"
IFS='|' read -r code limit _ <<<"$(post --interface "${SECOND_CLIENT}")"
echo "  ${code}  RateLimit: ${limit}"
[[ "${code}" == 202 ]] || fail "the second client was refused: budgets are not per client"

reset="$(sed -n 's/.*;t=\([0-9]*\).*/\1/p' <<<"$(post | cut -d '|' -f 2)")"
echo
echo "Client 2 was not slowed by client 1: each address has its own budget in"
echo "Valkey, shared by every node. Waiting ${reset:-0} s (t=) until client 1's is whole."
sleep "${reset:-0}"
