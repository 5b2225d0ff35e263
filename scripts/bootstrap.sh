#!/usr/bin/env bash
# Idempotent bootstrap for a fresh Debian 12 machine: system packages, npm packages, the native
# addon and the TypeScript build. Quick when everything is present; prints what it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap] %s\n' "$*"; }

node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 20)); then
  log "Node.js >= 20 is required (found $(node --version)); install Node 20 LTS first"
  exit 1
fi

# --- system packages -------------------------------------------------------------------------
APT_PACKAGES=(nats-server redis-server libucx-dev ucx-utils cmake g++ make pkg-config python3 docker-compose openssl
  python3-torch python3-cbor2) # torch: the Python client tests (~3 min to install); cbor2: CBOR reference in tests
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing system packages: ${missing[*]}"
    log "run as root:  apt-get update && apt-get install -y ${missing[*]}"
    exit 1
  fi
  log "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps apt from starting a system redis on 6379: kvfabric starts its own servers.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  log "installed: ${missing[*]}"
fi

# --- npm packages ----------------------------------------------------------------------------
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  log "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

# --- native addon ----------------------------------------------------------------------------
addon=native/build/Release/kvfabric_native.node
if [[ ! -f $addon ]] || [[ -n $(find native/src native/CMakeLists.txt -newer "$addon" -print -quit 2>/dev/null) ]]; then
  log "building the native addon (cmake-js compile)"
  npm run --silent build:native >native-build.log 2>&1 || { cat native-build.log; log "native build failed"; exit 1; }
  rm -f native-build.log
fi

# --- TypeScript ------------------------------------------------------------------------------
stamp=dist/.tsbuildinfo
if [[ ! -f $stamp ]] || [[ -n $(find shared services native -name '*.ts' -newer "$stamp" -print -quit) ]] \
  || [[ tsconfig.json -nt $stamp || tsconfig.build.json -nt $stamp || package.json -nt $stamp ]]; then
  log "building TypeScript"
  npm run --silent build:ts
fi
log "ready"
