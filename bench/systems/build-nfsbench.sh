#!/usr/bin/env bash
# Builds the userspace NFS workload client: build-nfsbench.sh OUT
# Installs libnfs-dev (and a C compiler) with apt if missing.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 OUT   (path of the nfsbench binary to build)" >&2
    exit 2
fi
out=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
need=()
[ -f /usr/include/nfsc/libnfs.h ] || need+=(libnfs-dev)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
        apt-get update -qq
        apt-get install -y --no-install-recommends "${need[@]}"
    }
fi
mkdir -p "$(dirname "$out")"
cc -O2 -Wall -Wextra -std=gnu11 -o "$out" "$here/nfsbench.c" -lnfs
echo "built $out" >&2
