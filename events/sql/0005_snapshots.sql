-- Snapshots let an actor activate without replaying a long stream. They are a cache of the fold:
-- deleting every row here changes nothing but start-up time.
CREATE TABLE snapshots (
    stream      text COLLATE "C" PRIMARY KEY,
    version     integer NOT NULL,
    schema      integer NOT NULL,
    state       jsonb NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now()
);
