#!/bin/bash
# erpcloud (images/): at first boot, the product's database role and database (S1), once.
# The role gets its password from Secrets Manager afterwards (fetch-secrets); none is set here.
set -euo pipefail
for _ in $(seq 1 60); do
  if runuser -u postgres -- pg_isready -q; then
    break
  fi
  sleep 1
done
runuser -u postgres -- psql --no-psqlrc -v ON_ERROR_STOP=1 -q -d postgres <<'SQL'
SELECT 'CREATE ROLE erp LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'erp')
\gexec
SELECT 'CREATE DATABASE erp OWNER erp'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'erp')
\gexec
SQL
