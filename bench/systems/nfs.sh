#!/usr/bin/env bash
# NFS comparison system: nfs-ganesha (VFS FSAL) exporting one directory on 127.0.0.1.
#
#   nfs.sh setup DIR      install (apt) if needed, start rpcbind (if none runs) and
#                         ganesha.nfsd exporting DIR; prints the export URL
#                         (nfs://127.0.0.1/DIR) on stdout
#   nfs.sh teardown [DIR] stop what setup started, remove the state dir; always exits 0
#   nfs.sh status         is it running?
#
# NFSv3 and NFSv4 are both served (Protocols = 3, 4), TCP only. Use v3 with libnfs:
# libnfs 4.0.0 (Debian 12) cannot send an NFSv4 WRITE bigger than ~3.8 KB. Ganesha
# exits at start if it cannot register NFSv3 with the portmapper, so rpcbind runs
# (the machine's own if one is running; else one started here and stopped by
# teardown). The export's pseudo path is DIR itself, so nfs://127.0.0.1/DIR works
# with v3 and v4. Root is not squashed. No grace period (Graceless), no NLM/RQUOTA.
#
# Everything lives in $STATE (default /var/tmp/depfs-bench-systems/nfs): config,
# pid, log, NFSv4 recovery dir. Nothing under /etc is written (the packages' own
# files aside). Environment: STATE, NFS_PORT (2049), NFS_MNT_PORT (20048).
set -euo pipefail

STATE=${STATE:-/var/tmp/depfs-bench-systems/nfs}
NFS_PORT=${NFS_PORT:-2049}
NFS_MNT_PORT=${NFS_MNT_PORT:-20048}
CONF=$STATE/ganesha.conf
PIDFILE=$STATE/ganesha.pid
LOG=$STATE/ganesha.log

log() { echo "nfs.sh: $*" >&2; }

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

# pid alive and its command name is $2
pid_is() {
    local pid=$1 name=$2
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

portmapper_up() { rpcinfo -p 127.0.0.1 >/dev/null 2>&1; }

ganesha_running() {
    [ -f "$PIDFILE" ] && pid_is "$(cat "$PIDFILE" 2>/dev/null)" ganesha.nfsd
}

stop_pid() { # pid name: TERM, wait up to 10 s, then KILL
    local pid=$1 name=$2 i
    pid_is "$pid" "$name" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do
        pid_is "$pid" "$name" || return 0
        sleep 0.1
    done
    log "$name ($pid) did not stop on TERM; killing"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
}

setup() {
    local dir=${1:?usage: nfs.sh setup DIR}
    local t0=$SECONDS
    mkdir -p "$STATE" "$dir"
    dir=$(cd "$dir" && pwd -P)

    if ganesha_running; then
        if [ "$(cat "$STATE/export" 2>/dev/null)" = "$dir" ]; then
            log "already running (pid $(cat "$PIDFILE")), exporting $dir"
            echo "nfs://127.0.0.1$dir"
            return 0
        fi
        log "running with another export; restarting"
        teardown
        mkdir -p "$STATE"
    fi

    local need=()
    command -v ganesha.nfsd >/dev/null 2>&1 || need+=(nfs-ganesha)
    dpkg -s nfs-ganesha-vfs >/dev/null 2>&1 || need+=(nfs-ganesha-vfs)
    { command -v rpcbind || [ -x /sbin/rpcbind ]; } >/dev/null 2>&1 &&
        command -v rpcinfo >/dev/null 2>&1 || need+=(rpcbind)
    if [ ${#need[@]} -gt 0 ]; then
        apt_install "${need[@]}"
    fi
    local fsal
    fsal=$(dpkg -L nfs-ganesha-vfs | grep '/libfsalvfs\.so$' | head -1)
    [ -n "$fsal" ] || { log "libfsalvfs.so not found in nfs-ganesha-vfs"; exit 1; }

    if port_open "$NFS_PORT"; then
        log "port $NFS_PORT is already in use by another process; set NFS_PORT"
        exit 1
    fi

    # rpcbind: ganesha registers NFSv3/MOUNT with it and exits if it cannot.
    # (rpcbind -h 127.0.0.1 aborts with "double free" in Debian 12's 1.2.6, so
    # it is started without -h; only loopback clients are used.)
    if ! portmapper_up; then
        local rb
        rb=$(command -v rpcbind || echo /sbin/rpcbind)
        "$rb" || { log "rpcbind failed to start"; exit 1; }
        local i
        for i in $(seq 50); do portmapper_up && break; sleep 0.1; done
        portmapper_up || { log "rpcbind started but does not answer"; exit 1; }
        pgrep -x rpcbind | head -1 >"$STATE/rpcbind.pid"
        log "started rpcbind (pid $(cat "$STATE/rpcbind.pid"))"
    fi

    mkdir -p "$STATE/recovery"
    cat >"$CONF" <<EOF
# Written by bench/systems/nfs.sh; exports $dir on 127.0.0.1.
NFS_CORE_PARAM {
    Bind_addr = 127.0.0.1;
    NFS_Port = $NFS_PORT;
    MNT_Port = $NFS_MNT_PORT;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
    Protocols = 3, 4;
    mount_path_pseudo = true;
    Plugins_Dir = "$(dirname "$fsal")";
}
NFSv4 {
    Graceless = true;
    RecoveryRoot = "$STATE/recovery";
    Only_Numeric_Owners = true;
}
NFS_KRB5 {
    Active_krb5 = false;
}
EXPORT {
    Export_Id = 1;
    Path = "$dir";
    Pseudo = "$dir";
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Protocols = 3, 4;
    Transports = TCP;
    FSAL {
        Name = VFS;
    }
}
LOG {
    Default_Log_Level = EVENT;
}
EOF
    echo "$dir" >"$STATE/export"
    : >"$LOG"
    ganesha.nfsd -f "$CONF" -L "$LOG" -p "$PIDFILE" -N NIV_EVENT
    local i ok=0
    for i in $(seq 150); do
        if ganesha_running && port_open "$NFS_PORT" &&
            rpcinfo -p 127.0.0.1 2>/dev/null | grep -q " $NFS_MNT_PORT  mountd"; then
            ok=1
            break
        fi
        sleep 0.1
    done
    if [ $ok -ne 1 ]; then
        log "ganesha.nfsd did not come up; last log lines:"
        tail -20 "$LOG" >&2 || true
        teardown
        exit 1
    fi
    log "ganesha.nfsd $(ganesha.nfsd -v 2>/dev/null | grep -o 'V[0-9.]*' | head -1) pid $(cat "$PIDFILE") exporting $dir (NFSv3+v4, TCP $NFS_PORT, mountd $NFS_MNT_PORT) in $((SECONDS - t0)) s"
    echo "nfs://127.0.0.1$dir"
}

teardown() {
    set +e
    if [ -f "$PIDFILE" ]; then
        stop_pid "$(cat "$PIDFILE" 2>/dev/null)" ganesha.nfsd
    fi
    if [ -f "$STATE/rpcbind.pid" ]; then
        stop_pid "$(cat "$STATE/rpcbind.pid" 2>/dev/null)" rpcbind
        log "stopped rpcbind"
    elif command -v rpcinfo >/dev/null 2>&1 && portmapper_up; then
        # someone else's rpcbind: drop ganesha's registrations from it
        local p v
        for p in 100003 100005; do
            for v in 1 3 4; do rpcinfo -d "$p" "$v" >/dev/null 2>&1; done
        done
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
    if ganesha_running; then
        echo "running pid $(cat "$PIDFILE") export $(cat "$STATE/export")"
    else
        echo "not running"; exit 1
    fi
    ;;
*) echo "usage: $0 setup DIR | teardown [DIR] | status" >&2; exit 2 ;;
esac
