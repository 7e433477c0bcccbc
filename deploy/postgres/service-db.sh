#!/bin/sh
# docker-entrypoint-initdb.d script of a service's own PostgreSQL (deploy/compose.yaml): runs once, on
# an empty volume. The service gets a login role that owns its database and nothing else; the
# image's superuser (POSTGRES_USER) stays the operator's.
#   SERVICE_DB           name of both the database and the role (harmon_cart, ...)
#   SERVICE_DB_PASSWORD  the role's password
set -eu
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    --set=name="$SERVICE_DB" --set=password="$SERVICE_DB_PASSWORD" <<'SQL'
CREATE ROLE :"name" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
