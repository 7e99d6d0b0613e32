-- One schema per Quern service (DESIGN.md section 2), created on the
-- database's first start (docker-entrypoint-initdb.d). Each service's DB URL
-- names its schema: postgres://quern:...@postgres:5432/quern?schema=<service>.
CREATE SCHEMA IF NOT EXISTS registry AUTHORIZATION quern;
CREATE SCHEMA IF NOT EXISTS ingest AUTHORIZATION quern;
CREATE SCHEMA IF NOT EXISTS prep AUTHORIZATION quern;
CREATE SCHEMA IF NOT EXISTS train AUTHORIZATION quern;
CREATE SCHEMA IF NOT EXISTS monitor AUTHORIZATION quern;
CREATE SCHEMA IF NOT EXISTS alert AUTHORIZATION quern;
