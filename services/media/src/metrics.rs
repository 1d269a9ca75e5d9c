//! Media's own metrics, declared here and registered into the runtime's registry beside the
//! platform's. Names follow `centralita_media_<name>_<unit>`; label values are bounded.

use centralita_platform::metrics::Metrics as Platform;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// What became of an INVITE. Each INVITE counts once under one of `created`,
/// `refused_unknown_number`, `refused_trunk`, `refused_tenant` (suspended, at its quota, or
/// closed), `refused_draining`, `refused_media` (no codec in common, no SDP: `488`),
/// `refused_flood` (its source over its INVITE rate: `503`), `malformed` or `failed`
/// (sessions unreachable, no RTP port), or `challenged` (a credential trunk asked for its
/// digest: `407`; its answering INVITE counts again); a created call that its caller then
/// cancels also counts once under `cancelled`.
pub const OUTCOMES: [&str; 11] = [
    "created",
    "refused_unknown_number",
    "refused_trunk",
    "refused_tenant",
    "refused_draining",
    "refused_media",
    "refused_flood",
    "malformed",
    "failed",
    "cancelled",
    "challenged",
];

#[derive(Debug, Default)]
pub struct Metrics {
    invites: Family<OutcomeLabel, Counter>,
    waiting: Gauge,
    fork_chunks: Family<OutcomeLabel, Counter>,
    recordings: Family<OutcomeLabel, Counter>,
    registers: Family<OutcomeLabel, Counter>,
}

/// Outcomes of a recording fork's audio chunks: handed to the IngestCall stream, or
/// dropped (the stream's buffer full, or the stream gone: recording unreachable).
pub const FORK_CHUNK_OUTCOMES: [&str; 2] = ["sent", "dropped"];
/// Outcomes of a call's recording: `complete` (recording answered with the recording),
/// `failed` (the stream could not be opened or broke).
pub const RECORDING_OUTCOMES: [&str; 2] = ["complete", "failed"];

impl Metrics {
    /// Declares the metrics in the runtime's registry, every outcome at zero.
    pub fn register(platform: &Platform) -> Self {
        let m = Self::default();
        let mut r = platform.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register("centralita_media_sip_invites", "INVITEs received, by outcome", m.invites.clone());
        r.register(
            "centralita_media_calls_waiting",
            "Calls this replica holds (queued with treatment, ringing an agent or bridged)",
            m.waiting.clone(),
        );
        r.register(
            "centralita_media_recording_fork_chunks",
            "Audio chunks of recorded calls, by outcome (sent to recording, or dropped)",
            m.fork_chunks.clone(),
        );
        r.register("centralita_media_recordings", "Calls' recordings streamed, by outcome", m.recordings.clone());
        for outcome in OUTCOMES {
            let _ = m.invites.get_or_create(&OutcomeLabel { outcome });
        }
        for outcome in FORK_CHUNK_OUTCOMES {
            let _ = m.fork_chunks.get_or_create(&OutcomeLabel { outcome });
        }
        for outcome in RECORDING_OUTCOMES {
            let _ = m.recordings.get_or_create(&OutcomeLabel { outcome });
        }
        r.register(
            "centralita_media_sip_registers",
            "REGISTERs of agents' phones answered, by outcome (the registrar's policy::OUTCOMES)",
            m.registers.clone(),
        );
        for outcome in crate::registrar::policy::OUTCOMES {
            let _ = m.registers.get_or_create(&OutcomeLabel { outcome });
        }
        m
    }

    /// A REGISTER answered (`registrar::policy::OUTCOMES`).
    pub fn sip_register(&self, outcome: &'static str) {
        debug_assert!(crate::registrar::policy::OUTCOMES.contains(&outcome), "{outcome}");
        self.registers.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn fork_chunk(&self, outcome: &'static str) {
        debug_assert!(FORK_CHUNK_OUTCOMES.contains(&outcome), "{outcome}");
        self.fork_chunks.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn recording(&self, outcome: &'static str) {
        debug_assert!(RECORDING_OUTCOMES.contains(&outcome), "{outcome}");
        self.recordings.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn invite(&self, outcome: &'static str) {
        debug_assert!(OUTCOMES.contains(&outcome), "{outcome}");
        self.invites.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn set_waiting(&self, n: usize) {
        self.waiting.set(n as i64);
    }
}

/// Outcomes of a sweep of lost voice calls (`calls`): `done` (every entry settled and the
/// incarnation retired), `incomplete` (some left for the next sweep).
pub const SWEEP_OUTCOMES: [&str; 2] = ["done", "incomplete"];

/// The voice call registry's recovery of the calls of replicas that died (`calls`).
#[derive(Debug, Default)]
pub struct RecoveryMetrics {
    recovered: Counter,
    sweeps: Family<OutcomeLabel, Counter>,
}

impl RecoveryMetrics {
    pub fn register(platform: &Platform) -> Self {
        let m = Self::default();
        let mut r = platform.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "centralita_media_voice_calls_recovered",
            "Contacts of calls lost with their media replica that a sweep ended (cause `media lost the call`)",
            m.recovered.clone(),
        );
        r.register(
            "centralita_media_voice_sweeps",
            "Sweeps of a lost replica's (or this replica's own stale) call entries, by outcome",
            m.sweeps.clone(),
        );
        for outcome in SWEEP_OUTCOMES {
            let _ = m.sweeps.get_or_create(&OutcomeLabel { outcome });
        }
        m
    }

    /// A sweep ran with `outcome` and ended `recovered` contacts.
    pub fn swept(&self, outcome: &'static str, recovered: u32) {
        debug_assert!(SWEEP_OUTCOMES.contains(&outcome), "{outcome}");
        self.sweeps.get_or_create(&OutcomeLabel { outcome }).inc();
        self.recovered.inc_by(u64::from(recovered));
    }

    pub fn recovered(&self) -> u64 {
        self.recovered.get()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SenderLabel {
    sender: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why the web chat front door refused a request (bounded label values).
pub const WEBCHAT_REFUSALS: [&str; 6] = ["origin", "widget_key", "token", "too_large", "rate", "invalid"];

/// The digital role's metrics (`centralita_media_chat_*`, `centralita_media_webchat_*`).
#[derive(Debug, Default)]
pub struct DigitalMetrics {
    messages: Family<SenderLabel, Counter>,
    streams: Gauge,
    sockets: Gauge,
    refusals: Family<ReasonLabel, Counter>,
    sms_webhooks: Family<ReasonLabel, Counter>,
    sms_sends: Family<ReasonLabel, Counter>,
    deleted: Family<DeletedLabel, Counter>,
    retention_failures: Counter,
    smtp: Family<ReasonLabel, Counter>,
    email_sends: Family<ReasonLabel, Counter>,
    transcripts: Family<ReasonLabel, Counter>,
    whatsapp_webhooks: Family<ReasonLabel, Counter>,
    whatsapp_sends: Family<ReasonLabel, Counter>,
    telegram_webhooks: Family<ReasonLabel, Counter>,
    telegram_sends: Family<ReasonLabel, Counter>,
    messenger_webhooks: Family<ReasonLabel, Counter>,
    messenger_sends: Family<ReasonLabel, Counter>,
    instagram_webhooks: Family<ReasonLabel, Counter>,
    instagram_sends: Family<ReasonLabel, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeletedLabel {
    reason: &'static str,
    table: &'static str,
}

/// Why conversation rows were deleted: a customer's erasure or the retention sweeper.
pub const DELETE_REASONS: [&str; 2] = ["erasure", "retention"];
/// The tables of schema `media` whose deleted rows are counted.
pub const DELETED_TABLES: [&str; 6] =
    ["conversations", "messages", "sms_messages", "email_messages", "attachments", "outbox"];

/// Outcomes of SMS webhooks (bounded label values).
pub const SMS_WEBHOOK_OUTCOMES: [&str; 7] =
    ["stored", "duplicate", "status", "signature", "unknown_number", "invalid", "unavailable"];
/// Outcomes of inbound SMTP transactions and refusals (bounded label values).
pub const SMTP_OUTCOMES: [&str; 11] = [
    "stored",
    "duplicate",
    "unknown_recipient",
    "too_many_recipients",
    "too_large",
    "malformed",
    "forbidden_attachment",
    "line_too_long",
    "timeout",
    "busy",
    "unavailable",
];
/// Outcomes of outbound email attempts to the relay.
pub const EMAIL_SEND_OUTCOMES: [&str; 4] = ["sent", "retried", "failed", "refused"];
/// Outcomes of WhatsApp webhooks (handshakes, messages, statuses and refusals).
pub const WHATSAPP_WEBHOOK_OUTCOMES: [&str; 9] = [
    "subscribed",
    "stored",
    "duplicate",
    "status",
    "signature",
    "unknown_number",
    "invalid",
    "unavailable",
    "media_refused",
];
/// Outcomes of Messenger's and Instagram's webhooks.
pub const PAGE_WEBHOOK_OUTCOMES: [&str; 9] = [
    "subscribed",
    "stored",
    "duplicate",
    "receipt",
    "signature",
    "unknown_page",
    "invalid",
    "unavailable",
    "media_refused",
];
/// Outcomes of Telegram webhooks.
pub const TELEGRAM_WEBHOOK_OUTCOMES: [&str; 7] =
    ["stored", "duplicate", "ignored", "secret", "unknown_bot", "invalid", "unavailable"];
/// Outcomes of outbound Telegram attempts.
pub const TELEGRAM_SEND_OUTCOMES: [&str; 4] = ["sent", "retried", "failed", "refused"];
/// Outcomes of outbound WhatsApp attempts.
pub const WHATSAPP_SEND_OUTCOMES: [&str; 4] = ["sent", "retried", "failed", "refused"];
/// Outcomes of transcripts handed to recording.
pub const TRANSCRIPT_OUTCOMES: [&str; 2] = ["stored", "refused"];
/// Outcomes of outbound SMS attempts.
pub const SMS_SEND_OUTCOMES: [&str; 4] = ["sent", "retried", "failed", "refused"];

/// Registers a counter family by outcome, every outcome at zero.
fn outcomes(
    r: &mut prometheus_client::registry::Registry,
    name: &str,
    help: &str,
    family: &Family<ReasonLabel, Counter>,
    reasons: &[&'static str],
) {
    r.register(name, help, family.clone());
    for reason in reasons {
        let _ = family.get_or_create(&ReasonLabel { reason });
    }
}

impl DigitalMetrics {
    /// Declares the metrics in the runtime's registry, every label value at zero.
    pub fn register(platform: &Platform) -> Self {
        let m = Self::default();
        let mut r = platform.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register("centralita_media_chat_messages", "Conversation messages stored, by sender", m.messages.clone());
        r.register("centralita_media_chat_streams", "Agents' message streams open on this replica", m.streams.clone());
        r.register(
            "centralita_media_webchat_sockets",
            "Customers' web chat sockets open on this replica",
            m.sockets.clone(),
        );
        r.register("centralita_media_webchat_refusals", "Web chat requests refused, by reason", m.refusals.clone());
        for sender in ["customer", "agent", "system"] {
            let _ = m.messages.get_or_create(&SenderLabel { sender });
        }
        for reason in WEBCHAT_REFUSALS {
            let _ = m.refusals.get_or_create(&ReasonLabel { reason });
        }
        outcomes(
            &mut r,
            "centralita_media_sms_webhooks",
            "SMS webhooks (inbound and status), by outcome",
            &m.sms_webhooks,
            &SMS_WEBHOOK_OUTCOMES,
        );
        outcomes(
            &mut r,
            "centralita_media_sms_sends",
            "Outbound SMS attempts to the provider, by outcome",
            &m.sms_sends,
            &SMS_SEND_OUTCOMES,
        );
        r.register(
            "centralita_media_conversation_rows_deleted",
            "Rows of schema media deleted, by reason (erasure, retention) and table",
            m.deleted.clone(),
        );
        r.register(
            "centralita_media_retention_failures",
            "Retention sweeps of conversations that failed (retried at the next interval)",
            m.retention_failures.clone(),
        );
        outcomes(
            &mut r,
            "centralita_media_smtp_messages",
            "Inbound SMTP: messages and refusals, by outcome",
            &m.smtp,
            &SMTP_OUTCOMES,
        );
        outcomes(
            &mut r,
            "centralita_media_email_sends",
            "Outbound email attempts to the tenant's relay, by outcome",
            &m.email_sends,
            &EMAIL_SEND_OUTCOMES,
        );
        outcomes(
            &mut r,
            "centralita_media_transcripts",
            "Transcripts of closed digital contacts handed to recording, by outcome (refused: not retried)",
            &m.transcripts,
            &TRANSCRIPT_OUTCOMES,
        );
        outcomes(
            &mut r,
            "centralita_media_whatsapp_webhooks",
            "WhatsApp webhooks (handshakes, messages, statuses), by outcome",
            &m.whatsapp_webhooks,
            &WHATSAPP_WEBHOOK_OUTCOMES,
        );
        outcomes(
            &mut r,
            "centralita_media_whatsapp_sends",
            "Outbound WhatsApp attempts to the Cloud API, by outcome",
            &m.whatsapp_sends,
            &WHATSAPP_SEND_OUTCOMES,
        );
        outcomes(
            &mut r,
            "centralita_media_telegram_webhooks",
            "Telegram webhooks, by outcome",
            &m.telegram_webhooks,
            &TELEGRAM_WEBHOOK_OUTCOMES,
        );
        outcomes(
            &mut r,
            "centralita_media_telegram_sends",
            "Outbound Telegram attempts to the Bot API, by outcome",
            &m.telegram_sends,
            &TELEGRAM_SEND_OUTCOMES,
        );
        for (network, webhooks, sends) in [
            ("messenger", &m.messenger_webhooks, &m.messenger_sends),
            ("instagram", &m.instagram_webhooks, &m.instagram_sends),
        ] {
            outcomes(
                &mut r,
                &format!("centralita_media_{network}_webhooks"),
                "Messenger Platform webhooks (handshakes, messages, receipts), by outcome",
                webhooks,
                &PAGE_WEBHOOK_OUTCOMES,
            );
            outcomes(
                &mut r,
                &format!("centralita_media_{network}_sends"),
                "Outbound messages to the Send API, by outcome",
                sends,
                &WHATSAPP_SEND_OUTCOMES,
            );
        }
        for reason in DELETE_REASONS {
            for table in DELETED_TABLES {
                let _ = m.deleted.get_or_create(&DeletedLabel { reason, table });
            }
        }
        m
    }

    pub fn message_stored(&self, sender: &crate::digital::model::Sender) {
        use crate::digital::model::Sender;
        let sender = match sender {
            Sender::Customer => "customer",
            Sender::Agent(_) => "agent",
            Sender::System => "system",
        };
        self.messages.get_or_create(&SenderLabel { sender }).inc();
    }

    pub fn stream_opened(&self) {
        self.streams.inc();
    }

    pub fn stream_closed(&self) {
        self.streams.dec();
    }

    pub fn socket_opened(&self) {
        self.sockets.inc();
    }

    pub fn socket_closed(&self) {
        self.sockets.dec();
    }

    pub fn refused(&self, reason: &'static str) {
        debug_assert!(WEBCHAT_REFUSALS.contains(&reason), "{reason}");
        self.refusals.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn sms_webhook(&self, reason: &'static str) {
        debug_assert!(SMS_WEBHOOK_OUTCOMES.contains(&reason), "{reason}");
        self.sms_webhooks.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn whatsapp_webhook(&self, reason: &'static str) {
        debug_assert!(WHATSAPP_WEBHOOK_OUTCOMES.contains(&reason), "{reason}");
        self.whatsapp_webhooks.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn telegram_webhook(&self, reason: &'static str) {
        debug_assert!(TELEGRAM_WEBHOOK_OUTCOMES.contains(&reason), "{reason}");
        self.telegram_webhooks.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn telegram_send(&self, reason: &'static str) {
        debug_assert!(TELEGRAM_SEND_OUTCOMES.contains(&reason), "{reason}");
        self.telegram_sends.get_or_create(&ReasonLabel { reason }).inc();
    }

    fn page_families(
        &self,
        network: crate::digital::messaging::Network,
    ) -> (&Family<ReasonLabel, Counter>, &Family<ReasonLabel, Counter>) {
        match network {
            crate::digital::messaging::Network::Messenger => (&self.messenger_webhooks, &self.messenger_sends),
            crate::digital::messaging::Network::Instagram => (&self.instagram_webhooks, &self.instagram_sends),
        }
    }

    pub fn page_webhook(&self, network: crate::digital::messaging::Network, reason: &'static str) {
        debug_assert!(PAGE_WEBHOOK_OUTCOMES.contains(&reason), "{reason}");
        self.page_families(network).0.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn page_send(&self, network: crate::digital::messaging::Network, reason: &'static str) {
        debug_assert!(WHATSAPP_SEND_OUTCOMES.contains(&reason), "{reason}");
        self.page_families(network).1.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn whatsapp_send(&self, reason: &'static str) {
        debug_assert!(WHATSAPP_SEND_OUTCOMES.contains(&reason), "{reason}");
        self.whatsapp_sends.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn transcript(&self, reason: &'static str) {
        debug_assert!(TRANSCRIPT_OUTCOMES.contains(&reason), "{reason}");
        self.transcripts.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn sms_send(&self, reason: &'static str) {
        debug_assert!(SMS_SEND_OUTCOMES.contains(&reason), "{reason}");
        self.sms_sends.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn smtp(&self, reason: &'static str) {
        debug_assert!(SMTP_OUTCOMES.contains(&reason), "{reason}");
        self.smtp.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Inbound SMTP outcomes counted so far (tests).
    pub fn smtp_count(&self, reason: &'static str) -> u64 {
        self.smtp.get_or_create(&ReasonLabel { reason }).get()
    }

    pub fn email_send(&self, reason: &'static str) {
        debug_assert!(EMAIL_SEND_OUTCOMES.contains(&reason), "{reason}");
        self.email_sends.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Rows a customer's erasure deleted.
    pub fn erased(&self, r: &crate::digital::erasure::Report) {
        self.deleted_rows("erasure", r);
    }

    /// Rows the retention sweeper deleted.
    pub fn swept(&self, r: &crate::digital::erasure::Report) {
        self.deleted_rows("retention", r);
    }

    pub fn retention_failed(&self) {
        self.retention_failures.inc();
    }

    /// Rows deleted for `reason`, by table.
    pub fn deleted(&self, reason: &'static str, table: &'static str) -> u64 {
        self.deleted.get_or_create(&DeletedLabel { reason, table }).get()
    }

    fn deleted_rows(&self, reason: &'static str, r: &crate::digital::erasure::Report) {
        for (table, n) in [
            ("conversations", r.conversations),
            ("messages", r.messages),
            ("sms_messages", r.sms_ids),
            ("email_messages", r.email_ids),
            ("attachments", r.attachments),
            ("outbox", r.outbox),
        ] {
            self.deleted.get_or_create(&DeletedLabel { reason, table }).inc_by(n);
        }
    }
}

/// Outcomes of a leg event ([`crate::legs`]): `published` (the broker acknowledged it),
/// `failed` (the producer refused it or its delivery failed), `dropped` (the publishing
/// queue was full: the call never waits for the bus).
pub const LEG_EVENT_OUTCOMES: [&str; 3] = ["published", "failed", "dropped"];

/// The voice role's leg events (`centralita_media_leg_events_total{outcome}`).
#[derive(Debug, Default)]
pub struct LegMetrics {
    events: Family<OutcomeLabel, Counter>,
}

impl LegMetrics {
    /// Declares the metric in the runtime's registry, every outcome at zero.
    pub fn register(platform: &Platform) -> Self {
        let m = Self::default();
        let mut r = platform.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "centralita_media_leg_events",
            "Leg events of voice calls (created, ringing, answered, held, resumed, DTMF, ended), by outcome",
            m.events.clone(),
        );
        for outcome in LEG_EVENT_OUTCOMES {
            let _ = m.events.get_or_create(&OutcomeLabel { outcome });
        }
        m
    }

    pub fn leg_event(&self, outcome: &'static str) {
        debug_assert!(LEG_EVENT_OUTCOMES.contains(&outcome), "{outcome}");
        self.events.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Events counted under `outcome` so far.
    pub fn count(&self, outcome: &'static str) -> u64 {
        self.events.get_or_create(&OutcomeLabel { outcome }).get()
    }
}
