-- Which process is executing which run, until when. A process renews its leases while it works;
-- a lease that lapses means its process died, and any process may take the run over.
CREATE TABLE run_leases (
    run_id      text COLLATE "C" PRIMARY KEY,
    thread_id   text COLLATE "C" NOT NULL,
    owner       text NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX run_leases_by_owner ON run_leases (owner);
