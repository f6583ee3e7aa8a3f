#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: initdb in a temp folder, a free local port, the
# unix socket in the same folder; exports ORCH_TEST_PG (a URL of an empty database on it), runs the
# given command (default: the README's test command), and stops the cluster (pg_ctl, by its data
# folder) and deletes the folder on the way out, whatever the command did.
#
#   scripts/pg-test.sh                              # the README's test command
#   scripts/pg-test.sh .venv/bin/python -m pytest -q -m pg tests/test_queue_contract.py
#
# The server's binaries: $PG_BIN, else pg_ctl on PATH, else the newest Debian install
# (/usr/lib/postgresql/<version>/bin). Run as root, the cluster belongs to the `postgres` user.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${PG_BIN:-}"
if [ -z "$bin" ] && command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
    bin="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"  # the install's bin folder, not a symlink's
fi
if [ -z "$bin" ]; then
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
fi
if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
    echo "pg-test: no PostgreSQL server found (set PG_BIN, or install Debian's postgresql package)" >&2
    exit 1
fi

as_owner=()
folder="$(mktemp -d)"
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$folder"
    as_owner=(runuser -u postgres --)
fi
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

stop() {
    "${as_owner[@]}" "$bin/pg_ctl" -D "$folder/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$folder"
}
trap stop EXIT

"${as_owner[@]}" "$bin/initdb" -D "$folder/data" -U orch --auth=trust --no-instructions -E UTF8 >"$folder/initdb.log" 2>&1 \
    || { cat "$folder/initdb.log" >&2; echo "pg-test: initdb failed" >&2; exit 1; }
if ! "${as_owner[@]}" "$bin/pg_ctl" -D "$folder/data" -l "$folder/server.log" -w -t 60 start \
        -o "-p $port -k $folder -c listen_addresses=127.0.0.1 -c max_connections=300" >/dev/null; then
    cat "$folder/server.log" >&2 || true
    echo "pg-test: the PostgreSQL server did not start" >&2
    exit 1
fi
"$bin/createdb" -h 127.0.0.1 -p "$port" -U orch orch_test

export ORCH_TEST_PG="postgresql://orch@127.0.0.1:$port/orch_test"
echo "pg-test: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $ORCH_TEST_PG (pid $(head -n 1 "$folder/data/postmaster.pid"))" >&2
status=0
if [ "$#" -gt 0 ]; then
    "$@" || status=$?
else
    .venv/bin/python -m pytest -q -n 2 || status=$?
fi
exit "$status"
