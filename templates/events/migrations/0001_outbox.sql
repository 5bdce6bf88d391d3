{{ header_sql }}
-- Transactional outbox: rows written by `outbox::enqueue` inside the
-- caller's transaction and published in order by the relay. The column
-- names follow Debezium's outbox event router defaults.
CREATE TABLE IF NOT EXISTS evgen_outbox (
    seq bigserial PRIMARY KEY,
    id uuid NOT NULL UNIQUE,
    aggregatetype text NOT NULL,
    aggregateid text NOT NULL,
    type text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE INDEX IF NOT EXISTS evgen_outbox_unpublished
    ON evgen_outbox (seq) WHERE published_at IS NULL;

CREATE INDEX IF NOT EXISTS evgen_outbox_published
    ON evgen_outbox (published_at) WHERE published_at IS NOT NULL;
