#!/bin/sh
# Start Valkey locked down (docker compose and Kubernetes): write its ACL
# file from the password secret, then replace this shell with valkey-server.
# The local cluster does the same in Python (wizard/acl.py).
#
#   VALKEY_PASSWORD_FILE  the nodes' password, one line, no spaces (a compose
#                         secret or a Kubernetes Secret mounted as a file)
#   VALKEY_ACL_DIR        a private, writable folder for users.acl: a tmpfs,
#                         so the root filesystem can stay read-only
#   VALKEY_CONFIG_DIR     where valkey.conf and wizard-user.acl are
#                         (default: this script's folder)
#
# Only the password's SHA-256 is written; Valkey never stores the password.
# Arguments are passed on to valkey-server (e.g. --port 6380).
set -eu

config_dir=${VALKEY_CONFIG_DIR:-$(dirname "$0")}
password_file=${VALKEY_PASSWORD_FILE:-/run/secrets/valkey_password}
acl_dir=${VALKEY_ACL_DIR:-/run/valkey}

password=$(tr -d '\r\n' < "$password_file")
if [ -z "$password" ]; then
    echo "start.sh: $password_file is empty; put the nodes' Valkey password in it" >&2
    exit 1
fi
hash=$(printf '%s' "$password" | sha256sum | cut -d ' ' -f 1)
# The nodes' rules: every line of wizard-user.acl that is not a comment.
rules=$(grep -v '^#' "$config_dir/wizard-user.acl" | tr '\n' ' ')

umask 077
mkdir -p "$acl_dir"
# `default` (no login) is off; `wizard` gets the rules with the password.
printf 'user default off\nuser wizard on #%s %s\n' "$hash" "$rules" > "$acl_dir/users.acl"
exec valkey-server "$config_dir/valkey.conf" --aclfile "$acl_dir/users.acl" "$@"
