# Helpers shared by the lab scripts (sourced, never run). Only bash, curl
# and python3 (for JSON: no jq needed).
#
#   ROOT     the checkout (found from this file)
#   VAR_DIR  the local cluster's folder (default var/): cluster.json, logs/,
#            secrets/admin-token, written by `make run` / `make lab`
#   PYTHON   the project's Python, for `python -m wizard inspect` and node
#   BASE_URL the gateway; when unset, the one of the local cluster in
#            VAR_DIR (its cluster.json), so the labs talk to the cluster
#            whose PIDs they read and kill even when it runs on another
#            port (make lab PORT=8081); each script falls back to :8080

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VAR_DIR="${VAR_DIR:-${ROOT}/var}"
PYTHON="${PYTHON:-${ROOT}/.venv/bin/python}"
if [[ -z "${BASE_URL:-}" && -r "${VAR_DIR}/cluster.json" ]]; then
  BASE_URL="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["gateway_url"])' \
    "${VAR_DIR}/cluster.json")"
fi

# json KEY [KEY...]: the value at that path in the JSON on stdin ('' if none).
json() {
  python3 -c '
import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1:]:
    value = value[int(key)] if isinstance(value, list) else value.get(key)
    if value is None:
        break
print("" if value is None else (json.dumps(value) if isinstance(value, (dict, list)) else value))
' "$@"
}

# field KEY: the value of the first KEY in the JSON on stdin, a string or a
# number ('' if none). grep, not Python: no interpreter start per document,
# for scripts that poll many (the network lab's).
field() { grep -o "\"$1\":\"\?[^\",}]*" | head -n 1 | cut -d : -f 2- | tr -d '"'; }

# fail MESSAGE: the system did not behave as the lesson says.
fail() {
  echo "LESSON NOT SHOWN: $*" >&2
  exit 1
}

# admin_token: WIZARD_ADMIN_TOKEN, else the lab's var/secrets/admin-token.
admin_token() {
  if [[ -n "${WIZARD_ADMIN_TOKEN:-}" ]]; then
    echo "${WIZARD_ADMIN_TOKEN}"
  elif [[ -r "${VAR_DIR}/secrets/admin-token" ]]; then
    tr -d '[:space:]' <"${VAR_DIR}/secrets/admin-token"
  fi
}

# processes: "name pid" for every process /cluster lists.
processes() {
  curl -sS --fail-with-body "${BASE_URL}/cluster" | python3 -c '
import json, sys
for p in json.load(sys.stdin).get("processes", []):
    print(p["name"], p["pid"])
'
}

# pid_of NAME: the pid /cluster gives for process NAME (nginx, node-1/w1...).
pid_of() {
  processes | while read -r name pid; do
    if [[ "${name}" == "$1" ]]; then echo "${pid}"; fi
  done
}

# wait_done STATUS_URL [SECONDS]: poll until the task is complete or failed;
# prints the last status document. Fails after SECONDS (default 60).
wait_done() {
  local url="$1" deadline=$((SECONDS + ${2:-60})) body status
  while ((SECONDS < deadline)); do
    # Not --fail: while a part restarts the gateway may answer 502/503.
    body="$(curl -sS "${BASE_URL}${url}" || true)"
    status="$(field status <<<"${body}" || true)"
    if [[ "${status}" == complete || "${status}" == failed ]]; then
      echo "${body}"
      return 0
    fi
    sleep 0.3
  done
  fail "task ${url} not finished after ${2:-60} s"
}

# submit QUERY: POST /task?QUERY; prints the 202 document.
submit() {
  curl -sS --fail-with-body -X POST "${BASE_URL}/task?$1"
}

# alive_workers: the ids of the workers /cluster shows alive, one a line.
alive_workers() {
  curl -sS --fail-with-body "${BASE_URL}/cluster" | python3 -c '
import json, sys
for node in json.load(sys.stdin)["nodes"]:
    for worker in node["workers"]:
        if worker["alive"]:
            print(worker["worker"])
'
}

# wait_queue_drained [SECONDS]: until no task waits in the queue or in its
# delayed retries. Tasks an earlier lab left there (lab 10 queues about
# twenty) would be taken first, and `wizard inspect` prints only the oldest
# ten ids of a list. Fails after SECONDS (default 240).
wait_queue_drained() {
  local deadline=$((SECONDS + ${1:-240})) waiting told=""
  while ((SECONDS < deadline)); do
    waiting="$(curl -sS --fail-with-body "${BASE_URL}/cluster" | python3 -c '
import json, sys
queue = json.load(sys.stdin)["queue"]
print(queue["pending"] + queue["delayed"])
')"
    if [[ "${waiting}" == 0 ]]; then
      return 0
    fi
    if [[ -z "${told}" ]]; then
      echo "${waiting} task(s) of earlier labs still wait in the queue; letting the workers finish them first ..."
      told=yes
    fi
    sleep 0.5
  done
  fail "the queue still holds ${waiting} task(s) after ${1:-240} s; wait for the workers, or start afresh with make clean"
}
