#!/usr/bin/env bash
# GlusterFS comparison system: a replica-2 volume with both bricks on this machine,
# mounted twice through the GlusterFS FUSE client (mount 1 = "node A", mount 2 =
# "node B"), for visibility.py (write on mount 1, poll mount 2) and local-ops runs.
#
#   gluster.sh setup      install (apt) if needed, start glusterd, create and start
#                         the volume, mount it twice; prints "MOUNT1 MOUNT2" on stdout
#   gluster.sh teardown   unmount, stop and delete the volume, stop glusterd and the
#                         brick/self-heal daemons, remove the state dir; always exits 0
#   gluster.sh status
#
# No systemd here (PID 1 is not an init system), so glusterd is started directly
# with its own volfile (working-directory in the state dir, not /var/lib/glusterd).
# The gluster CLI refuses 127.0.0.1 and "localhost" as brick hosts, so the bricks
# are on 127.0.0.2 (another loopback address; glusterd treats all of 127/8 as
# local). glusterd and the brick daemons listen on all addresses (0.0.0.0): the
# self-heal daemon fetches its volfile from "localhost", so glusterd cannot be bound
# to one loopback address; all traffic stays on loopback.
# Paths gluster hard-codes are cleaned by teardown: /run/gluster/{vols,shd}/VOL,
# the brick/control sockets, /var/log/glusterfs/bricks/<our bricks>.log; the
# shared /var/log/glusterfs/{glustershd,cli,cmd_history}.log are left.
#
# Environment: STATE (default /var/tmp/depfs-bench-systems/gluster), VOL
# (default depfsbench), BRICK_HOST (default 127.0.0.2), GLUSTER_MOUNT_OPTS (extra
# mount -o options, e.g. attribute-timeout=0,entry-timeout=0; default none),
# GLUSTER_VOLUME_OPTS (space-separated KEY=VALUE pairs for "gluster volume set"
# before the volume starts, e.g. performance.stat-prefetch=off; default none:
# GlusterFS's defaults).
set -euo pipefail

STATE=${STATE:-/var/tmp/depfs-bench-systems/gluster}
VOL=${VOL:-depfsbench}
BRICK_HOST=${BRICK_HOST:-127.0.0.2}
GLUSTER_MOUNT_OPTS=${GLUSTER_MOUNT_OPTS:-}
GLUSTER_VOLUME_OPTS=${GLUSTER_VOLUME_OPTS:-}
PIDFILE=$STATE/glusterd.pid
M1=$STATE/mnt1
M2=$STATE/mnt2

log() { echo "gluster.sh: $*" >&2; }

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

glusterd_running() { [ -f "$PIDFILE" ] && pid_is "$(cat "$PIDFILE" 2>/dev/null)" glusterd; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cli() { timeout 60 gluster --mode=script "$@"; }

is_mounted() { findmnt -n --mountpoint "$1" >/dev/null 2>&1; }

# pids of the brick and self-heal daemons of our volume (matched on the
# volume's own volfile ids, which carry the brick paths under $STATE)
volume_pids() {
    local pid cmd
    for pid in $(pgrep -x glusterfsd 2>/dev/null; pgrep -x glusterfs 2>/dev/null); do
        cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
        case "$cmd" in
        *"--volfile-id $VOL.$BRICK_HOST."*"--brick-name $STATE/bricks/"*) echo "$pid" ;;
        *"--volfile-id shd/$VOL "*) echo "$pid" ;;
        *"--volfile-id=/$VOL "*" $STATE/mnt"[12]*) echo "$pid" ;; # FUSE clients
        esac
    done
}

bricks_online() {
    local st
    st=$(cli volume status "$VOL" --xml 2>/dev/null) || return 1
    [ "$(echo "$st" | tr -d '\n ' | sed 's#</node>#\n#g' |
        grep -c "<hostname>$BRICK_HOST</hostname><path>$STATE/bricks/b[12]</path>.*<status>1</status>")" -eq 2 ]
}

setup() {
    local t0=$SECONDS
    mkdir -p "$STATE"

    local need=()
    command -v glusterd >/dev/null 2>&1 || need+=(glusterfs-server)
    command -v mount.glusterfs >/dev/null 2>&1 || [ -x /sbin/mount.glusterfs ] || need+=(glusterfs-client)
    if [ ${#need[@]} -gt 0 ]; then
        apt_install "${need[@]}"
    fi
    [ -e /dev/fuse ] || { log "/dev/fuse missing: the FUSE client cannot mount"; exit 1; }

    mkdir -p "$STATE/lib" "$STATE/log" "$STATE/bricks/b1" "$STATE/bricks/b2" "$M1" "$M2"
    # remember which hard-coded dirs glusterd creates, to remove them at teardown
    [ -f "$STATE/created" ] || {
        : >"$STATE/created"
        local d
        for d in /var/lib/glusterd/ss_brick /var/lib/glusterd/geo-replication; do
            [ -e "$d" ] || echo "$d" >>"$STATE/created"
        done
    }

    if ! glusterd_running; then
        if port_open 24007 || pgrep -x glusterd >/dev/null; then
            log "another glusterd is running (port 24007): stop it first"
            exit 1
        fi
        cat >"$STATE/glusterd.vol" <<EOF
volume management
    type mgmt/glusterd
    option working-directory $STATE/lib
    option transport-type socket
    option transport.socket.keepalive-time 10
    option transport.socket.keepalive-interval 2
    option transport.socket.read-fail-log off
    option transport.socket.listen-port 24007
    option ping-timeout 0
    option event-threads 1
    option max-port 60999
end-volume
EOF
        glusterd -f "$STATE/glusterd.vol" -p "$PIDFILE" -l "$STATE/log/glusterd.log"
        local i
        for i in $(seq 200); do
            glusterd_running && cli peer status >/dev/null 2>&1 && break
            sleep 0.1
        done
        glusterd_running && cli peer status >/dev/null 2>&1 || {
            log "glusterd did not start; log:"
            tail -20 "$STATE/log/glusterd.log" >&2 || true
            exit 1
        }
        log "glusterd $(glusterd --version | awk 'NR==1{print $2}') started (pid $(cat "$PIDFILE"))"
    fi

    if ! cli volume info "$VOL" >/dev/null 2>&1; then
        cli volume create "$VOL" replica 2 \
            "$BRICK_HOST:$STATE/bricks/b1" "$BRICK_HOST:$STATE/bricks/b2" force >&2
    fi
    local kv
    for kv in $GLUSTER_VOLUME_OPTS; do
        cli volume set "$VOL" "${kv%%=*}" "${kv#*=}" >/dev/null || { log "volume set $kv failed"; exit 1; }
    done
    if ! cli volume info "$VOL" | grep -q '^Status: Started'; then
        cli volume start "$VOL" >&2
    fi
    local i
    for i in $(seq 100); do bricks_online && break; sleep 0.2; done
    bricks_online || { log "bricks not online:"; cli volume status "$VOL" >&2 || true; exit 1; }

    local m n=1
    for m in "$M1" "$M2"; do
        if ! is_mounted "$m"; then
            mount -t glusterfs -o "log-file=$STATE/log/mnt$n.log${GLUSTER_MOUNT_OPTS:+,$GLUSTER_MOUNT_OPTS}" \
                "$BRICK_HOST:/$VOL" "$m" || {
                log "mount of $m failed; log:"
                tail -20 "$STATE/log/mnt$n.log" >&2 || true
                exit 1
            }
        fi
        n=$((n + 1))
    done
    # sanity: a file written through mount 1 is read through mount 2
    local probe=".gluster-sh-probe.$$"
    echo "probe $$" >"$M1/$probe"
    for i in $(seq 100); do
        [ "$(cat "$M2/$probe" 2>/dev/null)" = "probe $$" ] && break
        sleep 0.05
    done
    [ "$(cat "$M2/$probe" 2>/dev/null)" = "probe $$" ] || { log "mount 2 does not see mount 1's file"; exit 1; }
    rm -f "$M1/$probe"
    log "volume $VOL (replica 2: $BRICK_HOST:$STATE/bricks/b1, b2) mounted at $M1 and $M2${GLUSTER_MOUNT_OPTS:+ (-o $GLUSTER_MOUNT_OPTS)}${GLUSTER_VOLUME_OPTS:+ (set $GLUSTER_VOLUME_OPTS)} in $((SECONDS - t0)) s"
    echo "$M1 $M2"
}

teardown() {
    set +e
    local m
    for m in "$M1" "$M2"; do
        if is_mounted "$m"; then
            umount "$m" 2>/dev/null || umount -l "$m"
        fi
    done
    # sockets our daemons use, collected before they go away
    local socks=() pid
    for pid in $(volume_pids); do
        socks+=($(tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n '/^-S$/{n;p}'))
    done
    if glusterd_running; then
        cli volume info "$VOL" >/dev/null 2>&1 && {
            cli volume stop "$VOL" force >/dev/null 2>&1
            cli volume delete "$VOL" >/dev/null 2>&1
        }
    fi
    for pid in $(volume_pids); do kill -TERM "$pid" 2>/dev/null; done
    if [ -f "$PIDFILE" ]; then
        pid=$(cat "$PIDFILE" 2>/dev/null)
        if pid_is "$pid" glusterd; then
            kill -TERM "$pid"
            local i
            for i in $(seq 100); do pid_is "$pid" glusterd || break; sleep 0.1; done
            pid_is "$pid" glusterd && kill -KILL "$pid"
        fi
    fi
    sleep 0.2
    for pid in $(volume_pids); do kill -KILL "$pid" 2>/dev/null; done
    local s
    for s in "${socks[@]}"; do rm -f "$s"; done
    rm -rf "/run/gluster/vols/$VOL" "/run/gluster/shd/$VOL"
    if ! pgrep -x glusterd >/dev/null; then rm -f /var/run/glusterd.socket; fi
    local tag
    tag=$(echo "${STATE#/}" | tr / -)
    rm -f /var/log/glusterfs/bricks/"$tag"-bricks-b[12].log
    if [ -f "$STATE/created" ]; then
        while read -r d; do [ -n "$d" ] && rm -rf "$d"; done <"$STATE/created"
    fi
    local busy=0
    for m in "$M1" "$M2"; do
        if is_mounted "$m"; then log "warning: $m still mounted; $STATE kept"; busy=1; fi
    done
    if [ $busy -eq 0 ]; then
        rm -rf "$STATE" 2>/dev/null || log "warning: could not remove all of $STATE"
        rmdir "$(dirname "$STATE")" 2>/dev/null || true
    fi
    set -e
    return 0
}

case "${1:-}" in
setup) setup ;;
teardown) teardown; log "torn down" ;;
status)
    if glusterd_running; then
        echo "glusterd pid $(cat "$PIDFILE")"
        cli volume status "$VOL" 2>/dev/null || true
        findmnt -t fuse.glusterfs || true
    else
        echo "not running"; exit 1
    fi
    ;;
*) echo "usage: $0 setup | teardown | status" >&2; exit 2 ;;
esac
