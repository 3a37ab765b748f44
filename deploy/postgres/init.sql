-- Runs once, on an empty data directory, as the POSTGRES_USER superuser.
-- Each service owns its own database; all of them also read API keys from quorum_access.
CREATE DATABASE quorum_ingest;
CREATE DATABASE quorum_tasking;
CREATE DATABASE quorum_consensus;
CREATE DATABASE quorum_payments;
CREATE DATABASE quorum_access;
