#!/bin/sh
# One database and one user per service, each user owning only its database and nobody else
# connecting to it: services never share a database. The postgres image runs this once, on an
# empty volume; each service runs its own migrations at startup. Passwords come from the
# services' Secrets (the StatefulSet's environment).
set -eu
for db in orders payments inventory; do
  password_var="$(echo "$db" | tr '[:lower:]' '[:upper:]')_PASSWORD"
  eval "password=\${$password_var}"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v db="$db" -v password="$password" <<'SQL'
CREATE ROLE :"db" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"db";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
done
