-- Each webhook's place in the log and its lease move to its durable subscription
-- (events/sql/0002_subscriptions.sql), named 'webhook:<id>'.
INSERT INTO subscriptions (name, checkpoint_xid, checkpoint_position, lease_owner, lease_until)
SELECT 'webhook:' || id, checkpoint_xid, checkpoint_position, lease_owner, lease_until FROM webhooks;
ALTER TABLE webhooks DROP COLUMN checkpoint_xid, DROP COLUMN checkpoint_position,
                     DROP COLUMN lease_owner, DROP COLUMN lease_until;
