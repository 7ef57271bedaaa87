#!/usr/bin/env bash
# Run the 110 center on this machine: set-up if needed, the lab Asterisk with
# its simulated seats and officers, and the backend (AMI + FastAGI + HTTP on
# 127.0.0.1:8110) in the foreground. Ctrl-C stops the backend and the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash sip-lab/bootstrap.sh
.venv/bin/jiejing lab up "$@"
trap '.venv/bin/jiejing lab down' EXIT
.venv/bin/jiejing serve
