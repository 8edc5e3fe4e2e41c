#!/usr/bin/env bash
# Lab 2: what a round trip costs. Needs the lab running without HA (as
# root: make netlab): a relay in front of Valkey can hold every reply back.
#
# Times M POST /task one after another with no delay, then with DELAY_MS on
# every round trip to Valkey, then removes the delay. Each POST is one round
# trip (MULTI/EXEC in one pipeline); each task a worker runs is a few more
# (take, claim, finish), so the workers slow down more than the API does.
# It exits 0 only if the delay showed: with it on, every POST and every
# /valkey_test took at least DELAY_MS longer than a round trip can be short.
#
#   ops/scripts/lab/02-slow-valkey.sh      DELAY_MS=50 ops/scripts/lab/02-slow-valkey.sh
set -euo pipefail
# shellcheck source=../common.bash
source "$(dirname "$0")/../common.bash"

BASE_URL="${BASE_URL:-http://198.18.42.2}"
M="${M:-20}"
DELAY_MS="${DELAY_MS:-20}"
# The lab's command line, on the lab that `make netlab` started.
LAB=("${PYTHON}" -m wizard.netlab --var-dir "${VAR_DIR}")

trap '"${LAB[@]}" delay 0 >/dev/null' EXIT

# timed_posts: M POST /task one after another; prints "mean fastest" in ms.
timed_posts() {
  local times=() i
  for i in $(seq 1 "${M}"); do
    times+=("$(curl -sS -m 10 --fail-with-body -o /dev/null -w '%{time_total}' \
      -X POST "${BASE_URL}/task?a=${i}&b=1")")
  done
  python3 -c 'import sys; t = [float(x) * 1000 for x in sys.argv[1:]]; print(f"{sum(t) / len(t):.1f} {min(t):.1f}")' "${times[@]}"
}

# round_trip: the round trip /valkey_test measured (a write and a read), ms.
round_trip() {
  curl -sS -m 10 --fail-with-body "${BASE_URL}/valkey_test" | json round_trip_ms
}

"${LAB[@]}" delay 0 >/dev/null
read -r mean fastest <<<"$(timed_posts)"
echo "POST /task, no delay:              mean ${mean} ms, fastest ${fastest} ms"
echo "Valkey round trip (/valkey_test):  $(round_trip) ms"
"${LAB[@]}" delay "${DELAY_MS}" >/dev/null
read -r mean fastest <<<"$(timed_posts)"
echo "POST /task, ${DELAY_MS} ms per round trip:  mean ${mean} ms, fastest ${fastest} ms"
slow_trip="$(round_trip)"
echo "Valkey round trip (/valkey_test):  ${slow_trip} ms"
python3 -c "import sys; sys.exit(0 if ${fastest} >= ${DELAY_MS} else 1)" ||
  fail "a POST took ${fastest} ms, less than the ${DELAY_MS} ms its round trip must wait"
python3 -c "import sys; sys.exit(0 if ${slow_trip} >= ${DELAY_MS} else 1)" ||
  fail "/valkey_test measured ${slow_trip} ms, less than the delay of ${DELAY_MS} ms"
echo
echo "Watch the dashboard's tasks per second while the delay is on: each"
echo "worker waits a few round trips per task. The delay is removed on exit."
