#!/usr/bin/env bash
# Lab 2: what a round trip costs. Needs the lab running without --ha (make
# lab): a relay in front of Valkey can hold every reply back.
#
# Times M POST /task one after another with no delay, then with DELAY_MS on
# every round trip to Valkey, then removes the delay. Each POST is one round
# trip (MULTI/EXEC in one pipeline); each task a worker runs is a few more
# (take, claim, finish), so the workers slow down more than the API does.
#
#   ops/scripts/lab/02-slow-valkey.sh      DELAY_MS=50 ops/scripts/lab/02-slow-valkey.sh
set -euo pipefail

BASE_URL="${BASE_URL:-http://198.18.42.2}"
M="${M:-20}"
DELAY_MS="${DELAY_MS:-20}"
# The project's Python (the one with wizard installed), e.g. PYTHON=.venv/bin/python.
PYTHON="${PYTHON:-python3}"
LAB=("${PYTHON}" -m wizard.netlab)

trap '"${LAB[@]}" delay 0 >/dev/null' EXIT

timed_posts() {
  local total=0 ms
  for i in $(seq 1 "${M}"); do
    ms="$(curl -sS -m 10 -o /dev/null -w '%{time_total}' -X POST "${BASE_URL}/task?a=${i}&b=1")"
    total="$(python3 -c "print(${total} + ${ms} * 1000)")"
  done
  python3 -c "print(f'{${total} / ${M}:.1f}')"
}

"${LAB[@]}" delay 0 >/dev/null
echo "mean POST /task, no delay:            $(timed_posts) ms"
echo "Valkey round trip: $(curl -sS -m 10 "${BASE_URL}/valkey_test" | grep -o '"round_trip_ms":[0-9.]*')"
"${LAB[@]}" delay "${DELAY_MS}" >/dev/null
echo "mean POST /task, ${DELAY_MS} ms per round trip: $(timed_posts) ms"
echo "Valkey round trip: $(curl -sS -m 10 "${BASE_URL}/valkey_test" | grep -o '"round_trip_ms":[0-9.]*')"
echo
echo "Watch the dashboard's tasks per second while the delay is on: each"
echo "worker waits a few round trips per task. The delay is removed on exit."
