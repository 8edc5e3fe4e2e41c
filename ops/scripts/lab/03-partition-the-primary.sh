#!/usr/bin/env bash
# Lab 3: partition the Valkey primary away. Needs the lab running with
# replicas and Sentinel (make netlab HA=1), and WIZARD_DURABLE_ACK=replica in
# the lab's environment to see "nothing acknowledged is lost".
#
# Finds the primary in /cluster, pulls its host's cable (the sentinel beside
# it is cut off too: a minority of one), and waits until /cluster names a
# new primary: the other two sentinels agreed and promoted a replica. Then
# it asks the old primary, from inside its own host, to take a write: it
# refuses (NOREPLICAS: min-replicas-to-write 1), so nothing written there
# during the partition could be acknowledged. Healing makes it a replica.
#
#   ops/scripts/lab/03-partition-the-primary.sh
set -euo pipefail

BASE_URL="${BASE_URL:-http://198.18.42.2}"
# Give up waiting for the failover after this many seconds.
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-60}"
# The project's Python (the one with wizard installed), e.g. PYTHON=.venv/bin/python.
PYTHON="${PYTHON:-python3}"
LAB=("${PYTHON}" -m wizard.netlab)
# The lab Valkey's admin password (make netlab writes it, mode 0600).
ADMIN_PASSWORD_FILE="${ADMIN_PASSWORD_FILE:-var/lab/secrets/valkey-admin-password}"

primary() { curl -sS -m 5 "${BASE_URL}/cluster" | grep -o '"primary":"[^"]*"' | cut -d '"' -f 4; }

old="$(primary)"
# The lab gives valkey-N the address .1N: the last octet names the host.
octet="${old%%:*}"
octet="${octet##*.}"
host="valkey-$((octet - 10))"
echo "primary: ${old} on ${host}; cutting ${host} off ..."
"${LAB[@]}" cut "${host}" >/dev/null
trap '"${LAB[@]}" heal "${host}" >/dev/null' EXIT

deadline=$((SECONDS + TIMEOUT_SECONDS))
while true; do
  now="$(primary 2>/dev/null || true)"
  if [[ -n "${now}" && "${now}" != "${old}" ]]; then
    break
  fi
  if ((SECONDS >= deadline)); then
    echo "no failover after ${TIMEOUT_SECONDS} s" >&2
    exit 1
  fi
  sleep 0.5
done
echo "new primary: ${now} (after about $((SECONDS + TIMEOUT_SECONDS - deadline)) s)"

echo "asking the old primary for a write, from inside ${host}:"
ip netns exec "wzl${LAB_ID:-42}-${host}" "${PYTHON}" -c "
import valkey
password = open('${ADMIN_PASSWORD_FILE}').read().strip()
client = valkey.Valkey(host='${old%%:*}', port=${old##*:}, username='admin', password=password, socket_timeout=2)
try:
    client.set('lab:probe', 1, px=1000)
    print('  it took the write (its replicas still looked in reach; try again)')
except valkey.ResponseError as error:
    print('  refused:', error)
"
echo "POST /task still works through the new primary:"
curl -sS -m 10 -X POST "${BASE_URL}/task?a=1&b=2" | python3 -m json.tool
echo "healing ${host}: the sentinels make it a replica of ${now}."
