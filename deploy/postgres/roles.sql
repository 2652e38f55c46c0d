-- PostgreSQL roles of EO referrals (DESIGN.md section 7), for a managed PostgreSQL or the
-- compose stack (init-roles.sh). Run once as a superuser (or the provider's admin role) on the
-- database `eo`, with the three passwords as psql variables:
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -v migrate_password=... -v directory_password=... \
--        -v router_password=... -f deploy/postgres/roles.sql
--
--   eo_migrate    owns the schemas and tables: `eo migrate --seed` (a Job / one-shot service)
--   eo_directory  the directory service: reads and writes its own schema, nothing else
--   eo_router     the router: its own schema, reads the directory, and reserves places
--                 (UPDATE directory.site) in the same transaction as the offer
-- The services run with DIRECTORY_APPLY_MIGRATIONS=false and ROUTER_APPLY_MIGRATIONS=false.

CREATE ROLE eo_migrate LOGIN PASSWORD :'migrate_password';
CREATE ROLE eo_directory LOGIN PASSWORD :'directory_password';
CREATE ROLE eo_router LOGIN PASSWORD :'router_password';

-- The migrations create these extensions; a non-superuser may not, so they are created here.
CREATE EXTENSION IF NOT EXISTS cube;
CREATE EXTENSION IF NOT EXISTS earthdistance;

GRANT CONNECT ON DATABASE eo TO eo_migrate, eo_directory, eo_router;
-- The migrations say CREATE SCHEMA IF NOT EXISTS, which PostgreSQL checks against CREATE on
-- the database even when the schema exists (tests/integration/test_deploy_roles.py).
GRANT CREATE ON DATABASE eo TO eo_migrate;
-- public.schema_migrations (the migrations' ledger) is created by eo_migrate.
GRANT CREATE, USAGE ON SCHEMA public TO eo_migrate;
GRANT USAGE ON SCHEMA public TO eo_directory, eo_router;
CREATE SCHEMA IF NOT EXISTS directory AUTHORIZATION eo_migrate;
CREATE SCHEMA IF NOT EXISTS router AUTHORIZATION eo_migrate;

GRANT USAGE ON SCHEMA directory TO eo_directory, eo_router;
GRANT USAGE ON SCHEMA router TO eo_router;

-- Tables and sequences eo_migrate creates from now on.
ALTER DEFAULT PRIVILEGES FOR ROLE eo_migrate IN SCHEMA public
    GRANT SELECT ON TABLES TO eo_directory, eo_router;
ALTER DEFAULT PRIVILEGES FOR ROLE eo_migrate IN SCHEMA directory
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO eo_directory;
ALTER DEFAULT PRIVILEGES FOR ROLE eo_migrate IN SCHEMA directory
    GRANT USAGE, SELECT ON SEQUENCES TO eo_directory;
ALTER DEFAULT PRIVILEGES FOR ROLE eo_migrate IN SCHEMA directory
    GRANT SELECT, UPDATE ON TABLES TO eo_router;
ALTER DEFAULT PRIVILEGES FOR ROLE eo_migrate IN SCHEMA router
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO eo_router;
ALTER DEFAULT PRIVILEGES FOR ROLE eo_migrate IN SCHEMA router
    GRANT USAGE, SELECT ON SEQUENCES TO eo_router;
