-- Durable catch-up subscriptions (events/subscriptions.py): consumers of the whole log — webhook
-- deliveries, and the ingestion and connected-agent workers to come — that resume where they left
-- off. One process at a time holds a subscription (its lease), and the lease fences every move of
-- its checkpoint. A new subscription starts at the log's present unless told otherwise.
CREATE TABLE subscriptions (
    name                text COLLATE "C" PRIMARY KEY,
    checkpoint_xid      xid8 NOT NULL DEFAULT pg_snapshot_xmin(pg_current_snapshot()),
    checkpoint_position bigint NOT NULL DEFAULT 0,
    lease_owner         text,
    lease_until         timestamptz
);
