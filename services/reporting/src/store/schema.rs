//! The `reporting` schema's tables, one constant per migration version (see
//! `crate::MIGRATIONS`). An applied migration's text is checksummed, so it never changes:
//! a change is a new version.

/// Version 2 of the `reporting` schema: legs and applied event ids, both under row-level
/// security keyed on the tenant (`centralita.tenant`, set per transaction).
pub const LEGS_SQL: &str = r#"
CREATE TABLE applied_events (
    event_id text PRIMARY KEY,
    tenant text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE legs (
    tenant text NOT NULL,
    contact_id text NOT NULL,
    seq integer NOT NULL,
    queue text NOT NULL,
    channel integer NOT NULL,
    enqueued_at bigint NOT NULL,
    outcome smallint NOT NULL,
    left_at bigint,
    agent_id text NOT NULL DEFAULT '',
    held_since bigint,
    hold_ms bigint NOT NULL DEFAULT 0,
    ended_at bigint,
    handled_at bigint,
    transferred boolean NOT NULL DEFAULT false,
    offers integer NOT NULL DEFAULT 0,
    declines integer NOT NULL DEFAULT 0,
    disposition text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, contact_id, seq)
);
CREATE INDEX legs_by_entry ON legs (tenant, enqueued_at);
CREATE INDEX legs_by_handling ON legs (tenant, handled_at) WHERE handled_at IS NOT NULL;
CREATE INDEX legs_waiting ON legs (tenant, queue, enqueued_at) WHERE outcome = 0;
ALTER TABLE legs ENABLE ROW LEVEL SECURITY;
ALTER TABLE legs FORCE ROW LEVEL SECURITY;
CREATE POLICY legs_tenant ON legs
    USING (tenant = centralita_current_tenant()) WITH CHECK (tenant = centralita_current_tenant());
ALTER TABLE applied_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE applied_events FORCE ROW LEVEL SECURITY;
CREATE POLICY applied_events_tenant ON applied_events
    USING (tenant = centralita_current_tenant()) WITH CHECK (tenant = centralita_current_tenant());
"#;

/// Version 3: agent state spans (agents are BPO-wide: a span is visible to every tenant the
/// agent served then, and written under the pool tenant `bpo`), and BPO-wide reading of
/// legs for agent time (a shared agent's work for any tenant makes it busy for all).
pub const AGENTS_SQL: &str = r#"
CREATE TABLE agent_spans (
    agent_id text NOT NULL,
    since bigint NOT NULL,
    until bigint,
    state smallint NOT NULL,
    away_reason text NOT NULL DEFAULT '',
    queues text[] NOT NULL,
    tenants text[] NOT NULL,
    PRIMARY KEY (agent_id, since)
);
CREATE INDEX agent_spans_open ON agent_spans (agent_id) WHERE until IS NULL;
CREATE INDEX agent_spans_tenants ON agent_spans USING gin (tenants);
CREATE INDEX legs_by_agent ON legs (agent_id, left_at) WHERE outcome = 1;
ALTER TABLE agent_spans ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_spans FORCE ROW LEVEL SECURITY;
CREATE POLICY agent_spans_read ON agent_spans FOR SELECT
    USING (centralita_current_tenant() = ANY (tenants) OR centralita_current_tenant() = 'bpo');
CREATE POLICY agent_spans_write ON agent_spans FOR ALL
    USING (centralita_current_tenant() = 'bpo') WITH CHECK (centralita_current_tenant() = 'bpo');
CREATE POLICY legs_bpo_read ON legs FOR SELECT USING (centralita_current_tenant() = 'bpo');
"#;

/// Version 4: the days whose usage record was published, per tenant.
pub const USAGE_SQL: &str = r#"
CREATE TABLE usage_published (
    tenant text NOT NULL,
    day date NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, day)
);
ALTER TABLE usage_published ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_published FORCE ROW LEVEL SECURITY;
CREATE POLICY usage_published_tenant ON usage_published
    USING (tenant = centralita_current_tenant()) WITH CHECK (tenant = centralita_current_tenant());
"#;

/// Version 5: what a leg counts for (`core::Role`): a customer's (0), opened by a warm
/// transfer (1: handling only), a consult leg (2: agent busy time only).
pub const LEG_ROLE_SQL: &str = "ALTER TABLE legs ADD COLUMN role smallint NOT NULL DEFAULT 0;";

/// Version 6: a leg's channel is reporting's own [`crate::core::Channel`], stored by its
/// name, no longer the `centralita.tenancy.v1.Channel` number; the numbers already stored
/// become their names (one no build knew, or 0, becomes `unspecified`). Rewrites `legs`
/// once, under an exclusive lock, when a replica of this version first starts.
pub const CHANNEL_NAME_SQL: &str = r#"
ALTER TABLE legs ALTER COLUMN channel TYPE text USING (CASE channel
    WHEN 1 THEN 'voice' WHEN 2 THEN 'chat' WHEN 3 THEN 'sms' WHEN 4 THEN 'email' WHEN 5 THEN 'social'
    WHEN 6 THEN 'task' ELSE 'unspecified' END);
"#;

/// Version 7: the retention sweeper's index (`crate::retention`): legs not yet anonymised
/// by when they entered their queue, so a pass finds the expired ones without reading the
/// legs it anonymised before.
pub const RETENTION_SQL: &str = r#"
CREATE INDEX legs_identified ON legs (tenant, enqueued_at) WHERE contact_id NOT LIKE 'anon:%';
"#;
