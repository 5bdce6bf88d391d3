{{ header_sql }}
-- Inbox: the ids of the events this service has processed. The subscriber
-- inserts the id in the handler's transaction, so a redelivered event
-- finds its id and is acknowledged without running the handler again.
CREATE TABLE IF NOT EXISTS evgen_inbox (
    id text PRIMARY KEY,
    type text NOT NULL,
    source text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS evgen_inbox_processed_at ON evgen_inbox (processed_at);
