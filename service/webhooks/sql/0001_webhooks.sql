-- Webhook subscriptions. Configuration, not conversation: rows, not a log, because a signing
-- secret must be replaceable and deletable, which an append-only log would never allow.
-- Each subscription reads the event log from its own checkpoint (the gap-safe read_all); the
-- lease names the process that delivers for it, and fences its checkpoint writes.
CREATE TABLE webhooks (
    id                  text COLLATE "C" PRIMARY KEY,
    project             text NOT NULL,
    url                 text NOT NULL,
    event_types         text[] NOT NULL,
    description         text,
    enabled             boolean NOT NULL DEFAULT true,
    secret              text NOT NULL,
    previous_secret     text,                -- still signed with for a while after a rotation
    previous_until      timestamptz,
    created_at          bigint NOT NULL,
    checkpoint_xid      xid8 NOT NULL DEFAULT pg_snapshot_xmin(pg_current_snapshot()),
    checkpoint_position bigint NOT NULL DEFAULT 0,
    lease_owner         text,
    lease_until         timestamptz
);
CREATE INDEX webhooks_by_project ON webhooks (project, id);

-- One row per event per subscription: what was (or will be) sent, and every attempt.
-- `seq` orders one thread's deliveries (the event's log position, then its place among the
-- webhook events that one log event makes).
CREATE TABLE webhook_deliveries (
    id               text COLLATE "C" PRIMARY KEY,
    webhook_id       text COLLATE "C" NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         text NOT NULL,
    event_type       text NOT NULL,
    thread_id        text COLLATE "C" NOT NULL,
    seq              bigint NOT NULL,
    payload          text,                   -- NULL once its thread was erased
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempt_count    integer NOT NULL DEFAULT 0,
    attempts         jsonb NOT NULL DEFAULT '[]',
    created_at       double precision NOT NULL,
    first_attempt_at double precision,
    next_attempt_at  double precision NOT NULL,
    delivered_at     double precision,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, seq) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);
CREATE INDEX webhook_deliveries_by_thread ON webhook_deliveries (thread_id);
