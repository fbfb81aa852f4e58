#!/usr/bin/env bash
# Install, start and prepare a local PostgreSQL for the store tests (idempotent).
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
if ! pg_lsclusters -h | grep -q "^$version main"; then
  pg_createcluster "$version" main >/dev/null
fi
pg_ctlcluster "$version" main start 2>/dev/null || true
for _ in $(seq 1 30); do
  su postgres -c "pg_isready -q -h 127.0.0.1 -p 5432" && break
  sleep 1
done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='toolkit'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"CREATE USER toolkit WITH PASSWORD 'toolkit' CREATEDB\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='toolkit_test'\"" | grep -q 1 \
  || su postgres -c "createdb -O toolkit toolkit_test"
echo "postgres $version ready on 127.0.0.1:5432"
