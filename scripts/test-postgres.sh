#!/usr/bin/env bash
# Private, throwaway PostgreSQL server for the Molecule test suite.
#
# Usage: scripts/test-postgres.sh start|stop|url|status
#
#   start   Install PostgreSQL if needed (Debian's `postgresql` package),
#           initialise a cluster in a data dir this script owns, start it
#           and wait until it accepts connections. Idempotent. Prints exactly
#           one line on stdout: the connection URL. Everything else goes to
#           stderr, so `url="$(scripts/test-postgres.sh start)"` works.
#   stop    Stop the server if it is running. Idempotent.
#   url     Print the connection URL.
#   status  Print whether the server is running; exit 0 if it is, 3 if not.
#
# Environment:
#   MOLECULE_TEST_PG_DIR            data dir (default /tmp/molecule-test-pg);
#                                   the unix socket goes in its parent dir
#   MOLECULE_TEST_PG_PORT           TCP port on 127.0.0.1 (default 55432)
#   MOLECULE_TEST_PG_START_TIMEOUT  seconds to wait for readiness (default 60)
#   MOLECULE_PG_BINDIR_GLOB         where to look for server binaries
#                                   (default /usr/lib/postgresql/*/bin)
#
# The server never depends on a system service: it is started with pg_ctl
# directly, as the `postgres` system user when run as root (initdb refuses
# to run as root), or as the calling user otherwise.
set -euo pipefail

PG_DIR="${MOLECULE_TEST_PG_DIR:-/tmp/molecule-test-pg}"
PG_PORT="${MOLECULE_TEST_PG_PORT:-55432}"
PG_HOST=127.0.0.1
PG_SUPERUSER=postgres
START_TIMEOUT="${MOLECULE_TEST_PG_START_TIMEOUT:-60}"
BINDIR_GLOB="${MOLECULE_PG_BINDIR_GLOB:-/usr/lib/postgresql/*/bin}"

# Name of the settings file this script (re)writes inside the data dir on
# every start. Its presence also marks a data dir as created by this script.
CONF_NAME=molecule-test.conf

log() { printf 'test-postgres: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    echo "usage: $0 start|stop|url|status" >&2
    exit 2
}

# ---------------------------------------------------------------------------
# Paths and validation

normalise_paths() {
    if ! [[ "$PG_PORT" =~ ^[0-9]+$ ]] || ((PG_PORT < 1 || PG_PORT > 65535)); then
        die "MOLECULE_TEST_PG_PORT must be a TCP port number, got '$PG_PORT'"
    fi
    [[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] ||
        die "MOLECULE_TEST_PG_START_TIMEOUT must be a number of seconds, got '$START_TIMEOUT'"
    [[ -n "$PG_DIR" ]] || die "MOLECULE_TEST_PG_DIR is empty"
    # Absolute path without trailing slashes; the postmaster's cwd is compared
    # against it, and pg_ctl is run from / so a relative path would break.
    [[ "$PG_DIR" == /* ]] || PG_DIR="$PWD/$PG_DIR"
    while [[ "$PG_DIR" == */ && "$PG_DIR" != / ]]; do PG_DIR="${PG_DIR%/}"; done
    [[ "$PG_DIR" != / ]] || die "MOLECULE_TEST_PG_DIR must not be /"
    SOCKET_DIR="$(dirname -- "$PG_DIR")"
    LOG_FILE="$PG_DIR/server.log"
    PID_FILE="$PG_DIR/postmaster.pid"
    LOCK_FILE="$PG_DIR.lock"
    INIT_TMP="$PG_DIR.initdb-tmp"
    # Unix socket paths are limited to 107 bytes.
    ((${#SOCKET_DIR} + ${#PG_PORT} + 12 <= 107)) ||
        die "socket dir '$SOCKET_DIR' is too long for a unix socket path; use a shorter MOLECULE_TEST_PG_DIR"
}

url() { printf 'postgres://%s@%s:%s/postgres\n' "$PG_SUPERUSER" "$PG_HOST" "$PG_PORT"; }

# ---------------------------------------------------------------------------
# Running things as the database OS user

if ((EUID == 0)); then
    PG_OS_USER=postgres
else
    PG_OS_USER="$(id -un)"
fi

# Run a command as the database OS user, from / (its cwd may be unreadable
# to that user otherwise), with every file descriptor above 2 closed so that
# a started postmaster never holds on to a caller's pipe (e.g. make's) or to
# our own lock.
as_pg() {
    (
        local fd
        for fd in /proc/self/fd/*; do
            fd="${fd##*/}"
            if ((fd > 2)); then
                # Best effort: the fd used by the glob itself is already gone.
                eval "exec ${fd}>&-" 2>/dev/null || true
            fi
        done
        cd /
        if ((EUID != 0)); then
            exec "$@"
        elif command -v runuser >/dev/null 2>&1; then
            exec runuser -u "$PG_OS_USER" -- "$@"
        else
            exec su -s /bin/bash "$PG_OS_USER" -c "$(printf '%q ' "$@")"
        fi
    )
}

ensure_os_user() {
    ((EUID == 0)) || return 0
    if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
        log "creating system user '$PG_OS_USER'"
        command -v useradd >/dev/null 2>&1 || die "no '$PG_OS_USER' user and no useradd to create it"
        useradd --system --user-group --no-create-home \
            --home-dir /var/lib/postgresql --shell /bin/sh "$PG_OS_USER" >&2
    fi
}

# ---------------------------------------------------------------------------
# Finding (and if need be installing) the server binaries

# Prints the newest directory matching BINDIR_GLOB that holds working
# initdb, pg_ctl and postgres binaries; falls back to binaries on PATH
# (e.g. /usr/local/bin symlinks) only if they resolve to such a directory
# and actually run.
find_bindir() {
    local dir
    local -a found=()
    local nullglob_was
    nullglob_was="$(shopt -p nullglob || true)"
    shopt -s nullglob
    # shellcheck disable=SC2206  # the glob is meant to expand here
    local -a candidates=($BINDIR_GLOB)
    eval "$nullglob_was"
    for dir in "${candidates[@]}"; do
        bindir_ok "$dir" && found+=("$dir")
    done
    if ((${#found[@]} > 0)); then
        printf '%s\n' "${found[@]}" | sort -V -r | head -n 1
        return 0
    fi
    local exe
    if exe="$(command -v pg_ctl 2>/dev/null)" && exe="$(readlink -f -- "$exe")"; then
        dir="$(dirname -- "$exe")"
        if bindir_ok "$dir"; then
            log "using server binaries from PATH: $dir"
            printf '%s\n' "$dir"
            return 0
        fi
    fi
    return 1
}

bindir_ok() {
    local dir="$1" b
    for b in initdb pg_ctl postgres pg_isready; do
        [[ -f "$dir/$b" && -x "$dir/$b" ]] || return 1
    done
    "$dir/postgres" --version >/dev/null 2>&1 || return 1
    "$dir/pg_ctl" --version >/dev/null 2>&1 || return 1
}

install_postgres() {
    ((EUID == 0)) || die "no PostgreSQL server binaries found (looked in $BINDIR_GLOB) and not root: install Debian's 'postgresql' package"
    command -v apt-get >/dev/null 2>&1 || die "no PostgreSQL server binaries found (looked in $BINDIR_GLOB) and no apt-get to install them"
    log "no PostgreSQL server binaries found; installing Debian's 'postgresql' package"

    # Keep the package from starting its own system cluster: a temporary
    # policy-rc.d that denies every service start (only if the machine has
    # none already; Docker images usually ship one that does the same).
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# temporary, from molecule scripts/test-postgres.sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        made_policy=1
        # shellcheck disable=SC2064  # expand $policy now
        trap "rm -f '$policy'" EXIT
    fi
    local rc=0
    {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update &&
            apt-get install -y --no-install-recommends \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                postgresql
    } </dev/null >&2 || rc=$?
    if ((made_policy == 1)); then
        rm -f "$policy"
        trap - EXIT
    fi
    ((rc == 0)) || die "installing PostgreSQL with apt-get failed (exit $rc)"

    stop_system_clusters
}

# Stop any cluster the Debian packaging started (we only get here when there
# were no server binaries before, so any running cluster is the package's).
# Our server does not need it and must not depend on it.
stop_system_clusters() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    local ver name port status _rest
    while read -r ver name port status _rest; do
        [[ "$status" == online* ]] || continue
        log "stopping the system cluster $ver/$name (port $port) started by the package install"
        pg_ctlcluster "$ver" "$name" stop </dev/null >&2 || log "warning: could not stop system cluster $ver/$name"
    done < <(pg_lsclusters --no-header 2>/dev/null || true)
}

# ---------------------------------------------------------------------------
# Server state

# Echoes the postmaster pid and succeeds if a postmaster is running on our
# data dir. A postmaster.pid whose pid is dead, or belongs to some other
# process (pids get reused, e.g. after a container restart), is stale.
running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid cwd
    pid="$(head -n 1 "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -d "/proc/$pid" ]] || return 1
    # The postmaster chdir()s into its data directory.
    cwd="$(readlink -- "/proc/$pid/cwd" 2>/dev/null || true)"
    [[ -n "$cwd" && "$cwd" == "$(readlink -f -- "$PG_DIR")" ]] || return 1
    printf '%s\n' "$pid"
}

# Is PID a live (not zombie) postgres process? A killed postmaster can stay
# a zombie for a while when PID 1 is slow to reap (as on this kind of VM),
# and postgres itself counts a zombie as alive.
live_postgres() {
    local pid="$1" stat
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    # Fields: pid (comm) state ...; comm may contain spaces and parens.
    [[ "${stat#*) }" != Z* ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == postgres ]]
}

# Remove a stale postmaster.pid and socket lock file; postgres would
# otherwise refuse to start if their pid has been reused by a process the
# postgres user may signal.
clear_stale_files() {
    if [[ -f "$PID_FILE" ]]; then
        log "removing stale $PID_FILE (pid $(head -n 1 "$PID_FILE" 2>/dev/null || echo '?') is not our postmaster)"
        rm -f "$PID_FILE"
    fi
    local sock_lock="$SOCKET_DIR/.s.PGSQL.$PG_PORT.lock" pid
    if [[ -f "$sock_lock" ]]; then
        pid="$(head -n 1 "$sock_lock" 2>/dev/null || true)"
        if ! live_postgres "$pid"; then
            log "removing stale $sock_lock"
            rm -f "$sock_lock" "$SOCKET_DIR/.s.PGSQL.$PG_PORT"
        fi
    fi
}

is_ready() {
    "$BINDIR/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres -t 2 </dev/null
}

log_tail() {
    if [[ -f "$LOG_FILE" ]]; then
        log "last lines of $LOG_FILE:"
        tail -n 30 "$LOG_FILE" | sed 's/^/    /' >&2
    else
        log "(no server log at $LOG_FILE)"
    fi
}

# ---------------------------------------------------------------------------
# Cluster setup

# Make sure the database OS user can reach and write what it needs.
check_access() {
    ((EUID == 0)) || return 0
    as_pg test -x "$SOCKET_DIR" -a -w "$SOCKET_DIR" ||
        die "user '$PG_OS_USER' cannot reach or write to '$SOCKET_DIR' (parent of MOLECULE_TEST_PG_DIR, where the unix socket goes); choose another MOLECULE_TEST_PG_DIR, e.g. under /tmp"
}

major_version() { "$BINDIR/postgres" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)?.*/\1/'; }

ensure_cluster() {
    local want_version
    want_version="$(major_version)"
    if [[ -f "$PG_DIR/PG_VERSION" ]]; then
        local have_version
        have_version="$(cat "$PG_DIR/PG_VERSION")"
        if [[ "$have_version" == "$want_version" ]]; then
            return 0
        fi
        [[ -f "$PG_DIR/$CONF_NAME" ]] ||
            die "$PG_DIR holds a PostgreSQL $have_version cluster not created by this script; the binaries are version $want_version"
        log "$PG_DIR holds a PostgreSQL $have_version cluster but the binaries are version $want_version; re-creating it (test data only)"
        rm -rf -- "$PG_DIR"
    elif [[ -e "$PG_DIR" ]]; then
        [[ -d "$PG_DIR" ]] || die "$PG_DIR exists and is not a directory"
        [[ -z "$(ls -A -- "$PG_DIR")" ]] ||
            die "$PG_DIR exists, is not empty and is not a PostgreSQL data dir; remove it or set MOLECULE_TEST_PG_DIR"
        rmdir -- "$PG_DIR"
    fi

    log "initialising a PostgreSQL $want_version cluster in $PG_DIR"
    # initdb into a temporary sibling, then rename: an interrupted initdb
    # never leaves a half-made data dir behind under the real name.
    rm -rf -- "$INIT_TMP"
    mkdir -m 0700 -- "$INIT_TMP"
    ((EUID != 0)) || chown "$PG_OS_USER:" "$INIT_TMP"
    local locale=C.UTF-8
    locale -a 2>/dev/null | grep -qix 'c\.utf-\?8' || locale=C
    local out
    if ! out="$(as_pg "$BINDIR/initdb" -D "$INIT_TMP" -U "$PG_SUPERUSER" --auth=trust \
        --encoding=UTF8 --locale="$locale" --no-sync --no-instructions </dev/null 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "initdb failed"
    fi
    printf "\n# Settings for the Molecule test server, rewritten on every start.\ninclude '%s'\n" \
        "$CONF_NAME" >>"$INIT_TMP/postgresql.conf"
    : >"$INIT_TMP/$CONF_NAME"
    ((EUID != 0)) || chown "$PG_OS_USER:" "$INIT_TMP/$CONF_NAME"
    mv -T -- "$INIT_TMP" "$PG_DIR"
}

# (Re)write settings and access rules; picked up at the next server start.
write_config() {
    cat >"$PG_DIR/$CONF_NAME" <<EOF
# Written by scripts/test-postgres.sh on every start; edits are lost.
# A throwaway server for many small test databases: durability is off.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$SOCKET_DIR'
max_connections = 400
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
max_wal_size = 1GB
checkpoint_timeout = 30min
max_parallel_workers_per_gather = 0
timezone = 'UTC'
log_timezone = 'UTC'
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    cat >"$PG_DIR/pg_hba.conf" <<'EOF'
# Written by scripts/test-postgres.sh on every start; edits are lost.
# TYPE  DATABASE     USER  ADDRESS        METHOD
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
local   replication  all                  trust
host    replication  all   127.0.0.1/32   trust
EOF
    if ((EUID == 0)); then
        chown "$PG_OS_USER:" "$PG_DIR/$CONF_NAME" "$PG_DIR/pg_hba.conf"
        # A data dir left behind by another owner would make postgres refuse.
        [[ "$(stat -c %U -- "$PG_DIR")" == "$PG_OS_USER" ]] || chown -R "$PG_OS_USER:" "$PG_DIR"
    fi
    chmod 0700 "$PG_DIR"
}

# ---------------------------------------------------------------------------
# Subcommands

# Field N (1-based) of postmaster.pid: 4 is the port, 8 the server status
# ("starting", "ready", "stopping", ...).
pid_file_field() { sed -n "${1}p" "$PID_FILE" 2>/dev/null | tr -d '[:space:]'; }

# Wait until *our* postmaster (not some other server on the same port) says
# it is ready and pg_isready gets an answer.
wait_ready() {
    local deadline=$((SECONDS + START_TIMEOUT)) grace=$((SECONDS + 10)) seen_pid=0
    while :; do
        if running_pid >/dev/null; then
            seen_pid=1
            if [[ "$(pid_file_field 8)" == ready ]] && is_ready; then
                return 0
            fi
        elif ((seen_pid == 1 || SECONDS >= grace)) ||
            grep -qE 'FATAL|PANIC|database system is shut down' "$LOG_FILE" 2>/dev/null; then
            # Gone after starting, never wrote its pid file, or logged why not.
            log_tail
            die "PostgreSQL exited during startup (log: $LOG_FILE)"
        fi
        if ((SECONDS >= deadline)); then
            log_tail
            die "PostgreSQL did not accept connections on $PG_HOST:$PG_PORT within ${START_TIMEOUT}s (log: $LOG_FILE)"
        fi
        sleep 0.1
    done
}

stop_server() {
    local pid="$1"
    log "stopping PostgreSQL (pid $pid)"
    if [[ -n "${BINDIR:-}" ]] &&
        as_pg "$BINDIR/pg_ctl" stop -D "$PG_DIR" -m fast -w -t 60 </dev/null >&2; then
        return 0
    fi
    # No binaries any more, or pg_ctl failed: signal the postmaster directly
    # (SIGQUIT = immediate shutdown; fine for a throwaway server).
    log "pg_ctl stop did not work; sending SIGQUIT to $pid"
    kill -QUIT "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while running_pid >/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    ! running_pid >/dev/null || die "PostgreSQL (pid $pid) did not stop"
}

lock() {
    exec 9>>"$LOCK_FILE"
    flock -w "$((START_TIMEOUT + 90))" 9 || die "timed out waiting for the lock $LOCK_FILE"
}

cmd_start() {
    local made_parent=0
    if [[ ! -d "$SOCKET_DIR" ]]; then
        mkdir -p -- "$SOCKET_DIR"
        made_parent=1
    fi
    # Serialise concurrent starts/stops (e.g. `make -j test bench`), the
    # package install included.
    lock
    if ! BINDIR="$(find_bindir)"; then
        install_postgres
        BINDIR="$(find_bindir)" || die "PostgreSQL was installed but no server binaries were found in $BINDIR_GLOB"
    fi
    ensure_os_user
    # A parent dir we made may as well belong to the server's user.
    if ((made_parent == 1 && EUID == 0)); then
        chown "$PG_OS_USER:" "$SOCKET_DIR"
    fi
    check_access

    local pid
    if pid="$(running_pid)"; then
        local port
        port="$(pid_file_field 4)"
        if [[ "$port" == "$PG_PORT" ]]; then
            log "already running (pid $pid, $BINDIR)"
            wait_ready
            url
            return 0
        fi
        log "running on port $port, but port $PG_PORT is wanted: restarting"
        stop_server "$pid"
    fi

    ensure_cluster
    clear_stale_files
    write_config
    if [[ -f "$LOG_FILE" ]]; then
        mv -f -- "$LOG_FILE" "$LOG_FILE.1"
    fi
    log "starting PostgreSQL $(major_version) on $PG_HOST:$PG_PORT (data $PG_DIR, log $LOG_FILE)"
    # -W: don't wait in pg_ctl; wait_ready checks readiness with a deadline.
    if ! as_pg "$BINDIR/pg_ctl" start -W -D "$PG_DIR" -l "$LOG_FILE" </dev/null >&2; then
        log_tail
        die "pg_ctl start failed"
    fi
    wait_ready
    log "ready: $(url)"
    url
}

cmd_stop() {
    local pid
    BINDIR="$(find_bindir 2>/dev/null)" || BINDIR=""
    if [[ -e "$LOCK_FILE" || -d "$PG_DIR" ]]; then
        lock
    fi
    if pid="$(running_pid)"; then
        stop_server "$pid"
    else
        log "not running"
    fi
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        echo "running (pid $pid): $(url)"
    else
        echo "stopped"
        return 3
    fi
}

main() {
    (($# == 1)) || usage
    normalise_paths
    case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    url) url ;;
    status) cmd_status ;;
    -h | --help | help) usage ;;
    *) usage ;;
    esac
}

main "$@"
