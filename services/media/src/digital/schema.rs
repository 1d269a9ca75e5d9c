//! The `media` schema's migrations (digital role). A migration's text is checksummed once
//! applied, so it never changes: each later change is a version of its own.

use centralita_platform::db::{Migration, Migrations, TENANCY_SQL};

/// Version 2: conversations, their messages and the outbox of conversation events. Every
/// table carries the tenant and is under forced row-level security: a transaction that set
/// no tenant sees and writes nothing.
pub const CONVERSATIONS_SQL: &str = r#"
CREATE TABLE conversations (
    tenant text NOT NULL,
    contact_id text NOT NULL,
    channel text NOT NULL,
    queue text NOT NULL,
    visitor text NOT NULL DEFAULT '',
    origin text NOT NULL DEFAULT '',
    last_seq bigint NOT NULL DEFAULT 0,
    customer_read_seq bigint NOT NULL DEFAULT 0,
    agent_read_seq bigint NOT NULL DEFAULT 0,
    customer_typing_until timestamptz,
    agent_typing_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, contact_id)
);
CREATE TABLE messages (
    tenant text NOT NULL,
    contact_id text NOT NULL,
    seq bigint NOT NULL,
    sender smallint NOT NULL,
    agent_id text NOT NULL DEFAULT '',
    kind smallint NOT NULL,
    body text NOT NULL,
    status smallint NOT NULL,
    failure_reason text NOT NULL DEFAULT '',
    request_id text NOT NULL DEFAULT '',
    provider_time timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, contact_id, seq),
    FOREIGN KEY (tenant, contact_id) REFERENCES conversations (tenant, contact_id)
);
CREATE UNIQUE INDEX messages_request ON messages (tenant, contact_id, sender, request_id) WHERE request_id <> '';
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
    FOREACH t IN ARRAY ARRAY['conversations', 'messages', 'outbox']
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

/// Version 3: the provider message ids of SMS (Twilio `MessageSid`), inbound and outbound,
/// each to its message: an inbound redelivery is recognised by its id, a status callback
/// finds its message by it.
pub const SMS_SQL: &str = r#"
CREATE TABLE sms_messages (
    tenant text NOT NULL,
    message_sid text NOT NULL,
    contact_id text NOT NULL,
    seq bigint NOT NULL,
    inbound boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, message_sid),
    FOREIGN KEY (tenant, contact_id, seq) REFERENCES messages (tenant, contact_id, seq)
);
CREATE INDEX conversations_by_customer ON conversations (tenant, channel, visitor, origin, created_at);
ALTER TABLE sms_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE sms_messages FORCE ROW LEVEL SECURITY;
CREATE POLICY sms_messages_tenant ON sms_messages USING (tenant = centralita_current_tenant())
    WITH CHECK (tenant = centralita_current_tenant());
"#;

/// Version 4: retention (`super::retention`). `ended_at` is when sessions ended the
/// conversation's contact for the customer (from the contacts topic; empty while it is open,
/// and for conversations that ended before this version); the index finds the tenant's
/// candidates for the sweeper (a conversation's last activity is never before its start).
pub const RETENTION_SQL: &str = r#"
ALTER TABLE conversations ADD COLUMN ended_at timestamptz;
CREATE INDEX conversations_by_age ON conversations (tenant, created_at);
"#;

/// Version 5: email (`super::email`). Each email message of a conversation, inbound and
/// outbound, under its Message-ID (the tenant's key: a redelivery is recognised by it, a
/// reply's `In-Reply-To`/`References` find their conversation by it), with its subject, the
/// `References` a reply to it carries (space-separated ids), and the names, types and sizes
/// of its attachments (their contents are not kept).
pub const EMAIL_SQL: &str = r#"
CREATE TABLE email_messages (
    tenant text NOT NULL,
    message_id text NOT NULL,
    contact_id text NOT NULL,
    seq bigint NOT NULL,
    inbound boolean NOT NULL,
    subject text NOT NULL DEFAULT '',
    refs text NOT NULL DEFAULT '',
    attachments jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, message_id),
    FOREIGN KEY (tenant, contact_id, seq) REFERENCES messages (tenant, contact_id, seq)
);
CREATE INDEX email_messages_by_contact ON email_messages (tenant, contact_id, seq);
ALTER TABLE email_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE email_messages FORCE ROW LEVEL SECURITY;
CREATE POLICY email_messages_tenant ON email_messages USING (tenant = centralita_current_tenant())
    WITH CHECK (tenant = centralita_current_tenant());
"#;

/// Version 6: transcripts (`super::transcripts`). The spans during which the contact's
/// agent had paused the recording (PCI), from sessions' events: `[[start ms, end ms or
/// null], …]`; the messages written in them are left out of the transcript.
pub const TRANSCRIPTS_SQL: &str = r#"
ALTER TABLE conversations ADD COLUMN paused_spans jsonb NOT NULL DEFAULT '[]';
"#;

/// Version 7: files (`super::attachments`). A message of kind 3 describes its file in
/// `messages.attachment` (id, name, type, size, SHA-256); the bytes are in `attachments`,
/// one row per file, under the same row-level security, deleted with their conversation by
/// erasure and retention.
pub const ATTACHMENTS_SQL: &str = r#"
ALTER TABLE messages ADD COLUMN attachment jsonb;
CREATE TABLE attachments (
    tenant text NOT NULL,
    contact_id text NOT NULL,
    id text NOT NULL,
    seq bigint NOT NULL,
    content_type text NOT NULL,
    data bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, contact_id, id),
    FOREIGN KEY (tenant, contact_id, seq) REFERENCES messages (tenant, contact_id, seq)
);
ALTER TABLE attachments ENABLE ROW LEVEL SECURITY;
ALTER TABLE attachments FORCE ROW LEVEL SECURITY;
CREATE POLICY attachments_tenant ON attachments USING (tenant = centralita_current_tenant())
    WITH CHECK (tenant = centralita_current_tenant());
"#;

/// The `media` schema.
pub const MIGRATIONS: Migrations = Migrations {
    schema: "media",
    steps: &[
        Migration { version: 1, name: "tenancy", sql: TENANCY_SQL },
        Migration { version: 2, name: "conversations", sql: CONVERSATIONS_SQL },
        Migration { version: 3, name: "sms", sql: SMS_SQL },
        Migration { version: 4, name: "retention", sql: RETENTION_SQL },
        Migration { version: 5, name: "email", sql: EMAIL_SQL },
        Migration { version: 6, name: "transcripts", sql: TRANSCRIPTS_SQL },
        Migration { version: 7, name: "attachments", sql: ATTACHMENTS_SQL },
    ],
};
