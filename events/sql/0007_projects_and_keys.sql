-- Tenancy: projects own every resource; API keys are stored as SHA-256 digests only.
CREATE TABLE projects (
    name       text COLLATE "C" PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id         text COLLATE "C" PRIMARY KEY,
    project    text COLLATE "C" NOT NULL REFERENCES projects(name),
    digest     bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
