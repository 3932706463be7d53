#!/usr/bin/env bash
# Installs what kredis needs to build and test and is not already here: redis-server and
# redis-cli (Debian's redis 7.0). Idempotent; prints nothing when all is present.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)

if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts a packaged redis-server on 6379 where systemd runs; kredis never uses it.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
        $sudo systemctl stop redis-server || true
    fi
fi

# redis-py: the HTTP API test checks a Python RedisCluster client with replica reads.
if ! python3 -c 'import redis.cluster' >/dev/null 2>&1; then
    echo "installing: redis-py"
    if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
        python3 -m pip install -q --disable-pip-version-check redis >/dev/null 2>&1 || true
    fi
    if ! python3 -c 'import redis.cluster' >/dev/null 2>&1; then
        sudo=""
        if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq --no-install-recommends python3 python3-redis >/dev/null
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed (the Rust toolchain is a prerequisite)" >&2
    exit 1
fi
