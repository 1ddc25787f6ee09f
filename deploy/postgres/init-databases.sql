-- One database per service: services never share a database. Each service runs its own
-- migrations at startup; this only creates the empty databases, owned by POSTGRES_USER.
-- The postgres image runs this once, when the data volume is empty.
CREATE DATABASE orders;
CREATE DATABASE payments;
CREATE DATABASE inventory;
