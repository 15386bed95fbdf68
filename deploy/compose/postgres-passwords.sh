#!/bin/sh
# Run by the postgres image once, after 10-roles.sql: the roles' passwords, from the
# environment (deploy/compose/.env), so that the services can log in over the network.
set -eu
psql -v ON_ERROR_STOP=1 -U postgres -d analytics \
  -v writer="$WRITER_PASSWORD" -v reader="$READER_PASSWORD" <<'SQL'
ALTER ROLE analytics_writer PASSWORD :'writer';
ALTER ROLE analytics_reader PASSWORD :'reader';
SQL
