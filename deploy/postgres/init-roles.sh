#!/bin/sh
# The postgres image runs this once, on an empty data folder (docker-entrypoint-initdb.d).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v migrate_password="$EO_MIGRATE_DB_PASSWORD" \
    -v directory_password="$EO_DIRECTORY_DB_PASSWORD" \
    -v router_password="$EO_ROUTER_DB_PASSWORD" \
    -f /etc/eo/roles.sql
