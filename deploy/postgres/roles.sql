-- Least-privilege roles of the analytics database; idempotent, run by a superuser on every
-- start (make run, the test harness) or once by the operator elsewhere.
--
--   analytics_writer  the materializer: creates the schema (migrations) and upserts partials
--   analytics_reader  the query service: SELECT only; it cannot write, create or alter
--
-- Passwords are not set here: local stacks use trust authentication on 127.0.0.1. Elsewhere,
-- set them with ALTER ROLE ... PASSWORD and put them in each service's --postgres-url.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analytics_writer') THEN
    CREATE ROLE analytics_writer LOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analytics_reader') THEN
    CREATE ROLE analytics_reader LOGIN;
  END IF;
END
$$;

GRANT CONNECT ON DATABASE analytics TO analytics_writer, analytics_reader;
GRANT USAGE, CREATE ON SCHEMA public TO analytics_writer;
GRANT USAGE ON SCHEMA public TO analytics_reader;
REVOKE CREATE ON SCHEMA public FROM analytics_reader;

-- Tables created before the roles existed (by an older version, as another user).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO analytics_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO analytics_reader;

-- Tables the writer creates from now on are readable by the reader.
ALTER DEFAULT PRIVILEGES FOR ROLE analytics_writer IN SCHEMA public
  GRANT SELECT ON TABLES TO analytics_reader;
