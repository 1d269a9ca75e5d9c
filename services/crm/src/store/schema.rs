//! The `crm` schema's migrations. Version 2 holds every table of the first release in one
//! migration; each later change is a version of its own. A migration's text is checksummed
//! once applied, so it never changes.

/// Version 2 of the `crm` schema. Every table carries the tenant and is under forced
/// row-level security: a transaction that set no tenant sees and writes nothing.
pub const CUSTOMERS_SQL: &str = r#"
CREATE TABLE customers (
    tenant text NOT NULL,
    id text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    preferred_language text NOT NULL DEFAULT '',
    value_tier smallint NOT NULL DEFAULT 0,
    attributes jsonb NOT NULL DEFAULT '{}',
    tags text[] NOT NULL DEFAULT '{}',
    do_not_contact boolean NOT NULL DEFAULT false,
    do_not_contact_reason text NOT NULL DEFAULT '',
    merged_into text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, merged_into) REFERENCES customers (tenant, id)
);
CREATE INDEX customers_merged ON customers (tenant, merged_into) WHERE merged_into IS NOT NULL;
CREATE TABLE identities (
    tenant text NOT NULL,
    customer_id text NOT NULL,
    kind smallint NOT NULL,
    value text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, customer_id, kind, value),
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, id)
);
CREATE INDEX identities_lookup ON identities (tenant, kind, value);
CREATE TABLE notes (
    tenant text NOT NULL,
    id text NOT NULL,
    customer_id text NOT NULL,
    contact text NOT NULL DEFAULT '',
    author text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, id)
);
CREATE INDEX notes_by_customer ON notes (tenant, customer_id, created_at);
CREATE TABLE answers (
    tenant text NOT NULL,
    id text NOT NULL,
    customer_id text NOT NULL,
    contact text NOT NULL DEFAULT '',
    question text NOT NULL,
    answer text NOT NULL,
    asked_by text NOT NULL,
    asked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, id)
);
CREATE INDEX answers_by_customer ON answers (tenant, customer_id, asked_at);
CREATE TABLE consents (
    tenant text NOT NULL,
    id text NOT NULL,
    customer_id text NOT NULL,
    channel smallint NOT NULL,
    purpose text NOT NULL,
    granted boolean NOT NULL,
    effective_at timestamptz NOT NULL,
    source text NOT NULL,
    evidence text NOT NULL DEFAULT '',
    recorded_by text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, id)
);
CREATE INDEX consents_lookup ON consents (tenant, customer_id, channel, purpose, effective_at);
CREATE TABLE merges (
    tenant text NOT NULL,
    id text NOT NULL,
    target text NOT NULL,
    source text NOT NULL,
    reason text NOT NULL,
    merged_by text NOT NULL,
    merged_at timestamptz NOT NULL DEFAULT now(),
    undone_by text NOT NULL DEFAULT '',
    undone_at timestamptz,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE interactions (
    tenant text NOT NULL,
    contact_id text NOT NULL,
    customer_id text,
    channel smallint NOT NULL,
    direction text NOT NULL,
    queue text NOT NULL,
    state text NOT NULL,
    holder text NOT NULL DEFAULT '',
    agents text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    connected_at timestamptz,
    ended_at timestamptz,
    disposition text NOT NULL DEFAULT '',
    wrap_up_notes text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, contact_id)
);
CREATE INDEX interactions_by_customer ON interactions (tenant, customer_id, created_at);
CREATE TABLE applied_events (
    tenant text NOT NULL,
    event_id text NOT NULL,
    PRIMARY KEY (tenant, event_id)
);
CREATE TABLE erased_contacts (
    tenant text NOT NULL,
    contact_id text NOT NULL,
    erasure_id text NOT NULL,
    PRIMARY KEY (tenant, contact_id)
);
CREATE TABLE erasures (
    tenant text NOT NULL,
    id text NOT NULL,
    customer_ids text[] NOT NULL,
    contact_ids text[] NOT NULL,
    deleted_rows jsonb NOT NULL,
    requested_by text NOT NULL,
    reason text NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);
CREATE TABLE outbox (
    tenant text NOT NULL,
    seq bigserial,
    topic_base text NOT NULL,
    key text NOT NULL,
    envelope bytea NOT NULL,
    PRIMARY KEY (tenant, seq)
);
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customers', 'identities', 'notes', 'answers', 'consents', 'merges',
                             'interactions', 'applied_events', 'erased_contacts', 'erasures', 'outbox']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I USING (tenant = centralita_current_tenant()) '
                       'WITH CHECK (tenant = centralita_current_tenant())', t || '_tenant', t);
    END LOOP;
END $$;
-- The outbox relay publishes for every tenant under the BPO scope.
CREATE POLICY outbox_relay ON outbox USING (centralita_current_tenant() = 'bpo');
"#;

/// Version 3 of the `crm` schema: each store outside the CRM that must erase an erasure's
/// contacts, pending (`done_at` null) until its service reports it done. Erasures recorded
/// before this version have no rows here.
pub const ERASURE_STORES_SQL: &str = r#"
CREATE TABLE erasure_stores (
    tenant text NOT NULL,
    erasure_id text NOT NULL,
    store text NOT NULL,
    done_at timestamptz,
    records_erased bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, erasure_id, store),
    FOREIGN KEY (tenant, erasure_id) REFERENCES erasures (tenant, id)
);
ALTER TABLE erasure_stores ENABLE ROW LEVEL SECURITY;
ALTER TABLE erasure_stores FORCE ROW LEVEL SECURITY;
CREATE POLICY erasure_stores_tenant ON erasure_stores USING (tenant = centralita_current_tenant())
    WITH CHECK (tenant = centralita_current_tenant());
"#;

/// Version 4 of the `crm` schema: the retention sweeper's age indexes (`crate::retention`),
/// so a pass finds the expired interactions, notes and answers of a tenant without reading
/// the whole table.
pub const RETENTION_SQL: &str = r#"
CREATE INDEX interactions_by_age ON interactions (tenant, created_at);
CREATE INDEX notes_by_age ON notes (tenant, created_at);
CREATE INDEX answers_by_age ON answers (tenant, asked_at);
"#;
