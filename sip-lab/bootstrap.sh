#!/usr/bin/env bash
# Set up everything jiejing needs on a fresh Debian 12 machine, as root:
# Debian packages, the Python virtualenv (.venv), the browser libraries of the
# pages (vendor/web, from the npm registry) and the lab's Asterisk 22 chroot
# (cached outside the checkout, built once). Safe to run again: each step is
# skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: run as root (apt-get, debootstrap, chroot)" >&2
    exit 2
fi

PACKAGES=(debootstrap sip-tester baresip-core postgresql python3-venv ca-certificates chromium fonts-noto-cjk prometheus kamailio)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The package's own Kamailio service (its sample configuration, SIP on every address's port 5060) would take
# the lab Asterisk's port at the next boot: the lab runs its front door itself (`jiejing lab cluster up`).
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet kamailio 2>/dev/null; then
    systemctl disable --now kamailio >/dev/null 2>&1 || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.jiejing-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "bootstrap: installing Python packages into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
fi

# Browser libraries of the pages (JsSIP for the WebRTC seat), pinned in
# vendor/web/package-lock.json, installed from the npm registry into
# vendor/web/node_modules and bundled into vendor/web/dist (both git-ignored;
# the backend serves dist/ under /vendor/). Node.js may come from elsewhere
# (e.g. NodeSource, which brings its own npm): Debian's packages only when npm
# is missing.
if ! command -v npm >/dev/null 2>&1; then
    echo "bootstrap: installing nodejs npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
vendor=vendor/web
stamp=$vendor/node_modules/.jiejing-installed
want=$(cat "$vendor/package.json" "$vendor/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ ! -f "$vendor/dist/jssip.min.js" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "bootstrap: installing the pages' browser libraries into $vendor (npm ci)"
    (cd "$vendor" && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build >/dev/null)
    echo "$want" > "$stamp"
fi

.venv/bin/jiejing lab provision
