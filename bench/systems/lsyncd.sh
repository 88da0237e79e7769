#!/usr/bin/env bash
# rsync-push comparison system: lsyncd one-way from SRC to DST with local rsync.
#
#   lsyncd.sh setup SRC DST DELAY   install (apt) lsyncd and rsync if needed, start
#                                   lsyncd (daemon) syncing SRC -> DST with
#                                   delay = DELAY seconds; returns once lsyncd's
#                                   initial full sync has finished
#   lsyncd.sh teardown [...]        stop lsyncd, remove the state dir; always exits 0
#   lsyncd.sh status
#
# The target is a local directory (default.rsync with target = DST, i.e. rsync
# with a local destination): the manager->worker push pattern on one machine,
# without ssh. Note that rsync copies whole files when both ends are local
# (--whole-file is its default there), so its bytes-moved figure is the whole file;
# RSYNC_EXTRA="--no-whole-file" makes it use the delta algorithm as it would over ssh.
#
# lsyncd's own defaults are kept (rsync archive mode, --delete, maxDelays 1000);
# DELAY is the knob: 15 is lsyncd's default, 0 or 1 a tuned setting.
# Environment: STATE (default /var/tmp/depfs-bench-systems/lsyncd),
# RSYNC_EXTRA (extra rsync options, space separated; default none).
set -euo pipefail

STATE=${STATE:-/var/tmp/depfs-bench-systems/lsyncd}
RSYNC_EXTRA=${RSYNC_EXTRA:-}
CONF=$STATE/lsyncd.conf.lua
PIDFILE=$STATE/lsyncd.pid
LOG=$STATE/lsyncd.log

log() { echo "lsyncd.sh: $*" >&2; }

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    log "installing $*"
    if ! apt-get install -y --no-install-recommends "$@" >"$STATE/apt.log" 2>&1; then
        apt-get update -qq >>"$STATE/apt.log" 2>&1 || true
        apt-get install -y --no-install-recommends "$@" >>"$STATE/apt.log" 2>&1 || {
            tail -20 "$STATE/apt.log" >&2
            log "apt-get install $* failed (log: $STATE/apt.log)"
            exit 1
        }
    fi
}

pid_is() {
    local pid=$1 name=$2
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

running() { [ -f "$PIDFILE" ] && pid_is "$(cat "$PIDFILE" 2>/dev/null)" lsyncd; }

lua_str() { # a Lua string literal
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

setup() {
    if [ $# -ne 3 ]; then
        echo "usage: $0 setup SRC DST DELAY" >&2
        exit 2
    fi
    local src=$1 dst=$2 delay=$3 t0=$SECONDS
    [[ $delay =~ ^[0-9]+([.][0-9]+)?$ ]] || { log "DELAY must be a number of seconds"; exit 2; }
    mkdir -p "$STATE" "$src" "$dst"
    src=$(cd "$src" && pwd -P)
    dst=$(cd "$dst" && pwd -P)
    [ "$src" != "$dst" ] || { log "SRC and DST are the same directory"; exit 2; }

    local want="$src $dst $delay $RSYNC_EXTRA"
    if running; then
        if [ "$(cat "$STATE/params" 2>/dev/null)" = "$want" ]; then
            log "already running (pid $(cat "$PIDFILE")): $src -> $dst delay $delay"
            return 0
        fi
        log "running with other parameters; restarting"
        teardown
        mkdir -p "$STATE"
    fi

    local need=()
    command -v lsyncd >/dev/null 2>&1 || need+=(lsyncd)
    command -v rsync >/dev/null 2>&1 || need+=(rsync)
    if [ ${#need[@]} -gt 0 ]; then
        apt_install "${need[@]}"
    fi

    local extra="" o
    for o in $RSYNC_EXTRA; do extra+="$(lua_str "$o"), "; done
    cat >"$CONF" <<EOF
-- Written by bench/systems/lsyncd.sh
settings {
    logfile = $(lua_str "$LOG"),
    statusFile = $(lua_str "$STATE/lsyncd.status"),
    pidfile = $(lua_str "$PIDFILE"),
    nodaemon = false,
}
sync {
    default.rsync,
    source = $(lua_str "$src/"),
    target = $(lua_str "$dst/"),
    delay = $delay,
    rsync = {
        binary = $(lua_str "$(command -v rsync)"),
        archive = true,
        _extra = { $extra },
    },
}
EOF
    echo "$want" >"$STATE/params"
    : >"$LOG"
    lsyncd "$CONF" >"$STATE/lsyncd.out" 2>&1 || {
        log "lsyncd failed to start:"
        cat "$STATE/lsyncd.out" "$LOG" >&2
        teardown
        exit 1
    }
    # wait for the initial (full) sync to finish: up to 120 s
    local i ok=0
    for i in $(seq 1200); do
        if grep -q 'Startup of .* finished' "$LOG" 2>/dev/null && running; then
            ok=1
            break
        fi
        if [ "$i" -gt 20 ] && ! running; then break; fi
        sleep 0.1
    done
    if [ $ok -ne 1 ]; then
        log "lsyncd did not finish its startup sync; log:"
        tail -20 "$LOG" "$STATE/lsyncd.out" >&2 || true
        teardown
        exit 1
    fi
    log "lsyncd $(lsyncd -version 2>/dev/null | awk '{print $2}') pid $(cat "$PIDFILE"): $src -> $dst, delay $delay s, rsync $(rsync --version | awk 'NR==1{print $3}') ${RSYNC_EXTRA:+($RSYNC_EXTRA) }ready in $((SECONDS - t0)) s"
}

teardown() {
    set +e
    if [ -f "$PIDFILE" ]; then
        local pid i
        pid=$(cat "$PIDFILE" 2>/dev/null)
        if pid_is "$pid" lsyncd; then
            kill -TERM "$pid" 2>/dev/null
            for i in $(seq 100); do pid_is "$pid" lsyncd || break; sleep 0.1; done
            pid_is "$pid" lsyncd && kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -rf "$STATE"
    rmdir "$(dirname "$STATE")" 2>/dev/null || true
    set -e
    return 0
}

case "${1:-}" in
setup) shift; setup "$@" ;;
teardown) teardown; log "torn down" ;;
status)
    if running; then echo "running pid $(cat "$PIDFILE"): $(cat "$STATE/params")"; else echo "not running"; exit 1; fi
    ;;
*) echo "usage: $0 setup SRC DST DELAY | teardown | status" >&2; exit 2 ;;
esac
