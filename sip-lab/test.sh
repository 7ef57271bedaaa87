#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up if needed, a PostgreSQL for the
# store's scale path, then unit, integration (real Asterisk) and lab tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash sip-lab/bootstrap.sh

# PostgreSQL 15 from Debian: start the default cluster, make a throw-away database.
if command -v pg_lsclusters >/dev/null; then
    cluster=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')
    if [ -n "$cluster" ]; then
        pg_ctlcluster $cluster start 2>/dev/null || true
        su postgres -c "psql -qtc \"SELECT 1 FROM pg_roles WHERE rolname='jiejing'\" | grep -q 1 || psql -qc \"CREATE ROLE jiejing LOGIN PASSWORD 'jiejing'\"" >/dev/null
        # the backup tests restore into databases of their own
        su postgres -c "psql -qc 'ALTER ROLE jiejing CREATEDB'" >/dev/null
        su postgres -c "psql -qc 'DROP DATABASE IF EXISTS jiejing_test' && psql -qc 'CREATE DATABASE jiejing_test OWNER jiejing'" >/dev/null
        export JIEJING_TEST_PG_URL=${JIEJING_TEST_PG_URL:-postgresql+asyncpg://jiejing:jiejing@127.0.0.1:5432/jiejing_test}
    fi
fi

exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
