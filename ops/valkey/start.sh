#!/bin/sh
# Start Valkey locked down (docker compose and Kubernetes): write its ACL
# file and a small config from the password secrets into a private tmpfs,
# then replace this shell with valkey-server. The local cluster does the
# same in Python (wizard/acl.py, wizard/ha.py).
#
#   start.sh [valkey-server arguments]            a server (primary or replica)
#   start.sh sentinel [valkey-server arguments]   a sentinel beside them
#
# One Valkey needs only the first three settings:
#
#   VALKEY_PASSWORD_FILE  the nodes' password, one line, no spaces (a compose
#                         secret or a Kubernetes Secret mounted as a file)
#   VALKEY_ACL_DIR        a private, writable folder for the generated files:
#                         a tmpfs, so the root filesystem can stay read-only
#   VALKEY_CONFIG_DIR     where valkey.conf and wizard-user.acl are
#                         (default: this script's folder)
#
# With replicas and Sentinel (the compose `ha` profile, ops/k8s/ha), every
# server knows two more users, because any replica may be promoted:
#
#   VALKEY_REPLICATION_PASSWORD_FILE  user `replication` (PSYNC, REPLCONF,
#                         PING only): what a replica logs in to its primary as
#                         (masteruser/masterauth)
#   VALKEY_SENTINEL_PASSWORD_FILE     user `sentinel` (the commands Sentinel
#                         sends: INFO, ROLE, REPLICAOF, CONFIG REWRITE, ...,
#                         and its hello channel): what a sentinel logs in as
#                         (sentinel auth-user/auth-pass)
#   VALKEY_PORT           this server's or sentinel's port (6379 / 26379)
#   VALKEY_ANNOUNCE_HOST  the name the others reach this one by (its DNS
#                         name), announced to the sentinels
#   VALKEY_SENTINELS      host:port,host:port,...: asked at every start who
#                         the primary is (the truth after a failover); needs
#                         valkey-cli, which the image has
#   VALKEY_REPLICA_OF     "host port": the primary to follow when no sentinel
#                         answers (the first start); unset: start as primary
#   VALKEY_MIN_REPLICAS_TO_WRITE  replicas a primary needs in sync to take a
#                         write (min-replicas-max-lag 10 s): 1 when
#                         VALKEY_SENTINELS is set, so a primary cut off from
#                         its replicas refuses writes instead of splitting
#                         the brain; 0 otherwise
#   VALKEY_SENTINEL_MASTER  the name the primary is monitored under (wizard)
#   VALKEY_SENTINEL_QUORUM  sentinels that must agree it is down (2)
#   VALKEY_SENTINEL_DOWN_AFTER_MS  silence before a sentinel calls it down (5000)
#
# The ACL file holds only the passwords' SHA-256. A replica's masterauth and
# a sentinel's auth-pass must be sent in clear, so those two lines are in the
# generated config, mode 0600 in the tmpfs, never on a command line.
# ACL syntax and the users a replica and a sentinel need:
# https://valkey.io/topics/acl/ and https://valkey.io/topics/sentinel/
set -eu

config_dir=${VALKEY_CONFIG_DIR:-$(dirname "$0")}
acl_dir=${VALKEY_ACL_DIR:-/run/valkey}
master_name=${VALKEY_SENTINEL_MASTER:-wizard}

# The password in file $1, or stop with a line saying what to fix.
read_secret() {
    secret=$(tr -d '\r\n' < "$1")
    if [ -z "$secret" ]; then
        echo "start.sh: $1 is empty; put the Valkey password in it" >&2
        exit 1
    fi
    printf '%s' "$secret"
}

sha256() {
    printf '%s' "$1" | sha256sum | cut -d ' ' -f 1
}

# "host port" of the primary as the first sentinel of VALKEY_SENTINELS that
# knows it says, or nothing (none answers, or no valkey-cli to ask with).
primary_from_sentinels() {
    command -v valkey-cli > /dev/null || return 0
    for address in $(printf '%s' "${VALKEY_SENTINELS:-}" | tr ',' ' '); do
        # No answer (not started yet, not resolvable): ask the next one.
        answer=$(valkey-cli -h "${address%:*}" -p "${address##*:}" --raw \
            sentinel get-master-addr-by-name "$master_name" 2> /dev/null | tr '\n' ' ') || true
        # shellcheck disable=SC2086  # split "host port" into two words
        set -- $answer
        if [ $# -eq 2 ]; then
            echo "$1 $2"
            return 0
        fi
    done
}

# The ACL file: `default` (no login) off, the nodes' user `wizard` with the
# rules of wizard-user.acl, and the replication and sentinel users when
# their password files are given.
write_acl_file() {
    rules=$(grep -v '^#' "$config_dir/wizard-user.acl" | tr '\n' ' ')
    {
        echo "user default off"
        echo "user wizard on #$(sha256 "$node_password") $rules"
        if [ -n "${VALKEY_REPLICATION_PASSWORD_FILE:-}" ]; then
            echo "user replication on #$(sha256 "$replication_password") resetkeys resetchannels -@all +psync +replconf +ping"
        fi
        if [ -n "${VALKEY_SENTINEL_PASSWORD_FILE:-}" ]; then
            echo "user sentinel on #$(sha256 "$sentinel_password") resetkeys allchannels -@all +multi +exec +ping +info +role +slaveof +replicaof +config|rewrite +client|setname +client|kill +script|kill +subscribe +publish"
        fi
    } > "$acl_dir/users.acl"
}

start_server() {
    port=${VALKEY_PORT:-6379}
    write_acl_file
    primary=$(primary_from_sentinels)
    self="${VALKEY_ANNOUNCE_HOST:-} $port"
    if [ -z "$primary" ]; then
        primary=${VALKEY_REPLICA_OF:-}
    fi
    {
        echo "include $config_dir/valkey.conf"
        echo "port $port"
        echo "aclfile $acl_dir/users.acl"
        if [ -n "${VALKEY_ANNOUNCE_HOST:-}" ]; then
            echo "replica-announce-ip $VALKEY_ANNOUNCE_HOST"
        fi
        if [ -n "${VALKEY_REPLICATION_PASSWORD_FILE:-}" ]; then
            echo "masteruser replication"
            echo "masterauth $replication_password"
        fi
        if [ -n "${VALKEY_SENTINELS:-}" ]; then
            min_replicas=1
        fi
        echo "min-replicas-to-write ${VALKEY_MIN_REPLICAS_TO_WRITE:-${min_replicas:-0}}"
        echo "min-replicas-max-lag 10"
        if [ -n "$primary" ] && [ "$primary" != "$self" ]; then
            echo "replicaof $primary"
        fi
    } > "$acl_dir/valkey.conf"
    exec valkey-server "$acl_dir/valkey.conf" "$@"
}

# Sentinel rewrites its file as it learns (replicas, other sentinels, the
# current primary): a fresh copy in the tmpfs at each start.
start_sentinel() {
    primary=$(primary_from_sentinels)
    primary=${primary:-${VALKEY_REPLICA_OF:?start.sh sentinel: set VALKEY_REPLICA_OF to the first primary, \"host port\"}}
    {
        echo "port ${VALKEY_PORT:-26379}"
        echo "dir $acl_dir"
        # The nodes ask the sentinels without a password (wizard/store.py):
        # only the network keeps strangers away (compose: the internal
        # backend network; Kubernetes: the NetworkPolicy).
        echo "protected-mode no"
        echo "sentinel resolve-hostnames yes"
        echo "sentinel announce-hostnames yes"
        if [ -n "${VALKEY_ANNOUNCE_HOST:-}" ]; then
            echo "sentinel announce-ip $VALKEY_ANNOUNCE_HOST"
        fi
        echo "sentinel monitor $master_name $primary ${VALKEY_SENTINEL_QUORUM:-2}"
        echo "sentinel down-after-milliseconds $master_name ${VALKEY_SENTINEL_DOWN_AFTER_MS:-5000}"
        echo "sentinel failover-timeout $master_name 30000"
        echo "sentinel parallel-syncs $master_name 1"
        echo "sentinel auth-user $master_name sentinel"
        echo "sentinel auth-pass $master_name $sentinel_password"
    } > "$acl_dir/sentinel.conf"
    exec valkey-server "$acl_dir/sentinel.conf" --sentinel "$@"
}

umask 077
mkdir -p "$acl_dir"
# Every password read first: an empty file stops here, nothing half-written.
if [ -n "${VALKEY_SENTINEL_PASSWORD_FILE:-}" ]; then
    sentinel_password=$(read_secret "$VALKEY_SENTINEL_PASSWORD_FILE")
fi
if [ "${1:-}" = sentinel ]; then
    shift
    : "${sentinel_password:?start.sh sentinel: set VALKEY_SENTINEL_PASSWORD_FILE}"
    start_sentinel "$@"
fi
node_password=$(read_secret "${VALKEY_PASSWORD_FILE:-/run/secrets/valkey_password}")
if [ -n "${VALKEY_REPLICATION_PASSWORD_FILE:-}" ]; then
    replication_password=$(read_secret "$VALKEY_REPLICATION_PASSWORD_FILE")
fi
start_server "$@"
