#!/usr/bin/env bash
# Lab 3: partition the Valkey primary away. Needs the lab running with
# replicas and Sentinel and the replica ack (as root:
# make netlab HA=1 DURABLE_ACK=replica).
#
# Finds the primary in /cluster, pulls its host's cable (the sentinel beside
# it is cut off too: a minority of one), and keeps submitting tasks one
# after another until /cluster names a new primary: the other two sentinels
# agreed and promoted a replica, and the nodes followed it without a
# restart. Meanwhile some POSTs get a 503 (no primary in reach: retry
# later), never a 202 that is then lost. Then it asks the old primary, from
# inside its own host, to take a write: it refuses (NOREPLICAS:
# min-replicas-to-write 1), so nothing written there during the partition
# could be acknowledged. Healing makes it a replica of the new primary.
# It exits 0 only if all of that showed and every 202 ends complete.
#
#   ops/scripts/lab/03-partition-the-primary.sh
set -euo pipefail
# shellcheck source=../common.bash
source "$(dirname "$0")/../common.bash"

BASE_URL="${BASE_URL:-http://198.18.42.2}"
# Tasks submitted after the new primary took over, to see it take writes.
AFTER="${AFTER:-10}"
# Give up waiting for any one step after this many seconds.
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-60}"
# The lab's command line and state, on the lab that `make netlab HA=1` started.
LAB=("${PYTHON}" -m wizard.netlab --var-dir "${VAR_DIR}")
LAB_STATE="${VAR_DIR}/lab/lab.json"
# The lab Valkey's admin password (make netlab writes it, mode 0600).
ADMIN_PASSWORD_FILE="${VAR_DIR}/lab/secrets/valkey-admin-password"

# valkey_field KEY: a field of /cluster's "valkey" part (primary: the server
# the nodes write to; via: how they found it); '' while no node answers.
valkey_field() {
  curl -sS -m 5 "${BASE_URL}/cluster" 2>/dev/null | grep -o '"valkey":{.*' | field "$1" || true
}

# replicas: /cluster's list of the primary's replicas, as JSON.
replicas() {
  curl -sS -m 5 "${BASE_URL}/cluster" 2>/dev/null | grep -o '"replicas":\[[^]]*\]' || true
}

[[ -r "${LAB_STATE}" ]] || fail "no ${LAB_STATE}: start the lab first (make netlab HA=1)"
[[ "$(valkey_field via)" == sentinel ]] || fail "the nodes do not use Sentinel: start the lab with make netlab HA=1"
old="$(valkey_field primary)"
# The lab gives valkey-N the address .1N: the last octet names the host.
octet="${old%%:*}"
octet="${octet##*.}"
host="valkey-$((octet - 10))"
namespace="wzl$(json lab_id <"${LAB_STATE}")-${host}"

status_urls=()
answered_503=0
# submit_one N: POST one task; keep its status URL if accepted, count a 503.
submit_one() {
  local answer code
  answer="$(curl -sS -m 5 -w '\n%{http_code}' -X POST "${BASE_URL}/task?a=$1&b=1" 2>/dev/null || true)"
  code="${answer##*$'\n'}"
  if [[ "${code}" == 202 ]]; then
    status_urls+=("$(field status_url <<<"${answer%$'\n'*}")")
  elif [[ "${code}" == 503 ]]; then
    answered_503=$((answered_503 + 1))
  fi
}

for i in 1 2 3 4 5; do submit_one "${i}"; done
echo "primary: ${old} on ${host}; cutting ${host} off ..."
"${LAB[@]}" cut "${host}" >/dev/null
trap '"${LAB[@]}" heal "${host}" >/dev/null' EXIT
cut_at=${SECONDS}

n=5
while true; do
  n=$((n + 1))
  submit_one "${n}"
  now="$(valkey_field primary)"
  if [[ -n "${now}" && "${now}" != "${old}" ]]; then
    break
  fi
  ((SECONDS - cut_at < TIMEOUT_SECONDS)) || fail "no failover after ${TIMEOUT_SECONDS} s"
done
echo "new primary: ${now} (after about $((SECONDS - cut_at)) s, ${n} tasks sent so far," \
  "${answered_503} answered 503 while there was no primary)"
for i in $(seq 1 "${AFTER}"); do submit_one "$((n + i))"; done

echo "asking the old primary for a write, from inside ${host}:"
refusal="$(ip netns exec "${namespace}" "${PYTHON}" -c "
import sys, time, valkey
password = open('${ADMIN_PASSWORD_FILE}').read().strip()
client = valkey.Valkey(host='${old%%:*}', port=${old##*:}, username='admin', password=password, socket_timeout=2)
# It takes writes until its replicas have been silent for min-replicas-max-lag.
deadline = time.monotonic() + ${TIMEOUT_SECONDS}
while time.monotonic() < deadline:
    try:
        client.set('lab:probe', 1, px=1000)
    except valkey.ResponseError as error:
        print(error)
        sys.exit(0)
    time.sleep(0.5)
")"
[[ -n "${refusal}" ]] || fail "the isolated old primary still takes writes after ${TIMEOUT_SECONDS} s"
echo "  refused: ${refusal}"

echo "healing ${host}: the sentinels make it a replica of ${now} ..."
"${LAB[@]}" heal "${host}" >/dev/null
trap - EXIT
deadline=$((SECONDS + TIMEOUT_SECONDS))
until [[ "$(replicas)" == *"\"${old}\""* ]]; do
  ((SECONDS < deadline)) || fail "${old} did not rejoin as a replica within ${TIMEOUT_SECONDS} s"
  sleep 0.5
done
echo "  /cluster lists ${old} among the replicas of ${now}"

echo "Waiting for every accepted task to finish ..."
complete=0
for url in "${status_urls[@]}"; do
  body="$(wait_done "${url}" "${TIMEOUT_SECONDS}")"
  if [[ "$(field status <<<"${body}")" == complete ]]; then complete=$((complete + 1)); fi
done
echo "accepted ${#status_urls[@]}, complete ${complete}, lost $((${#status_urls[@]} - complete))"
((complete == ${#status_urls[@]})) || fail "a task accepted with 202 did not complete"
echo "Nothing acknowledged was lost."
