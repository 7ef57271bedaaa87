#!/usr/bin/env bash
# Run the 110 center on this machine: set-up if needed, the lab Asterisk with
# its simulated seats and officers, and the backend (AMI, intake, FastAGI, HTTP on
# 127.0.0.1:8110) in the foreground. Ctrl-C stops the backend and the lab.
#
# The lab supervisor account (user "lab") gets the password in
# JIEJING_LAB_PASSWORD, or "lab-110-jiejing" — a lab, not a center.
set -euo pipefail
cd "$(dirname "$0")/.."
bash sip-lab/bootstrap.sh
.venv/bin/jiejing lab up "$@"
trap '.venv/bin/jiejing lab down' EXIT
.venv/bin/jiejing db upgrade    # a database of an earlier release gets this release's schema (a lab: no backup)
if ! .venv/bin/jiejing users list 2>/dev/null | grep -q "^lab[[:space:]]"; then
    printf '%s\n' "${JIEJING_LAB_PASSWORD:-lab-110-jiejing}" | .venv/bin/jiejing users add lab --role supervisor
fi
if ! .venv/bin/jiejing users list 2>/dev/null | grep -q "^taker[[:space:]]"; then
    printf '%s\n' "${JIEJING_LAB_PASSWORD:-lab-110-jiejing}" | .venv/bin/jiejing users add taker --role call_taker
fi
# The lab's browser seats (wseat01…), written by `lab up`: the desk registers one over WebRTC.
export JIEJING_PHONES_FILE="${JIEJING_PHONES_FILE:-${JIEJING_LAB_CACHE:-/var/cache/jiejing}/run/webrtc-phones.json}"
echo "desk: http://127.0.0.1:8110/desk (user taker)   wallboard: /wallboard   heat map: /heatmap (user lab)"
JIEJING_LAB=yes .venv/bin/jiejing serve    # the lab: the AMI secrets shipped in dialplan/manager.conf are allowed
