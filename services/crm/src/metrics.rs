//! The CRM's domain metrics, declared in one place and registered into the runtime's
//! registry beside the platform's. Names follow `centralita_crm_<name>_<unit>`; label values
//! are bounded (fixed sets of sources, outcomes, kinds and tables; never tenant, customer or
//! contact ids).
//!
//! Each is recorded once the transaction that did the thing has committed: by the gRPC
//! handlers ([`crate::api`]) and the contact-event consumer ([`crate::events`]), never by
//! the store, whose writes may still roll back.

use centralita_platform::metrics::Metrics as Platform;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Where a customer was resolved from its identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `ResolveCustomer`.
    Api,
    /// A contact event carrying customer identities.
    ContactEvent,
}

/// A kind of timeline entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A contact's interaction, written (or updated) as its events are folded in.
    Interaction,
    Note,
    Answer,
    Consent,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResolvedLabel {
    source: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabel {
    change: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

/// The tables an erasure deletes from (`store::erase`): the label values of
/// `centralita_crm_erased_rows`.
const ERASED_TABLES: [&str; 7] = ["identities", "notes", "answers", "consents", "interactions", "merges", "customers"];

/// What the retention sweeper deletes from (`crate::retention`), plus `erasure_reasons`
/// (erasure records whose reason text it cleared): the label values of
/// `centralita_crm_retention_deleted`.
const RETENTION_TABLES: [&str; 8] =
    ["identities", "notes", "answers", "consents", "interactions", "merges", "customers", "erasure_reasons"];

#[derive(Debug, Default)]
pub struct Metrics {
    resolved: Family<ResolvedLabel, Counter>,
    entries: Family<KindLabel, Counter>,
    consents: Family<ChangeLabel, Counter>,
    do_not_contact: Family<ChangeLabel, Counter>,
    merges: Family<ChangeLabel, Counter>,
    gdpr: Family<KindLabel, Counter>,
    erased_rows: Family<TableLabel, Counter>,
    retention_deleted: Family<TableLabel, Counter>,
    retention_failures: Counter,
}

impl Metrics {
    /// Declares the metrics in the runtime's registry.
    pub fn register(platform: &Platform) -> Self {
        let m = Metrics::default();
        let mut r = platform.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "centralita_crm_customers_resolved",
            "Customers resolved from their identities, by source (api, contact_event) and outcome (found, created)",
            m.resolved.clone(),
        );
        r.register(
            "centralita_crm_timeline_entries_written",
            "Timeline entries written, by kind (interaction: each contact event folded in; note, answer, consent)",
            m.entries.clone(),
        );
        r.register(
            "centralita_crm_consent_changes",
            "Consent ledger entries recorded, by change (granted, withdrawn)",
            m.consents.clone(),
        );
        r.register(
            "centralita_crm_do_not_contact_changes",
            "Do-not-contact flags changed, by change (set, cleared)",
            m.do_not_contact.clone(),
        );
        r.register("centralita_crm_merges", "Customer merges, by change (merged, undone)", m.merges.clone());
        r.register(
            "centralita_crm_gdpr_requests",
            "GDPR requests carried out, by kind (export, erasure)",
            m.gdpr.clone(),
        );
        r.register("centralita_crm_erased_rows", "Rows deleted by GDPR erasures, by table", m.erased_rows.clone());
        r.register(
            "centralita_crm_retention_deleted",
            "Rows the retention sweeper deleted as older than the tenant's dataRetentionDays, by table \
             (erasure_reasons: erasure records whose reason text it cleared)",
            m.retention_deleted.clone(),
        );
        r.register(
            "centralita_crm_retention_failures",
            "Retention sweeps that failed (retried at the next interval)",
            m.retention_failures.clone(),
        );
        drop(r);
        for table in RETENTION_TABLES {
            m.retention_deleted.get_or_create(&TableLabel { table }).inc_by(0);
        }
        // Both kinds are exported from the start (at 0), so the family is there to scrape
        // before the first request.
        for kind in ["export", "erasure"] {
            m.gdpr.get_or_create(&KindLabel { kind }).inc_by(0);
        }
        m
    }

    pub fn customer_resolved(&self, source: Source, created: bool) {
        let source = match source {
            Source::Api => "api",
            Source::ContactEvent => "contact_event",
        };
        let outcome = if created { "created" } else { "found" };
        self.resolved.get_or_create(&ResolvedLabel { source, outcome }).inc();
    }

    pub fn entry_written(&self, entry: Entry) {
        let kind = match entry {
            Entry::Interaction => "interaction",
            Entry::Note => "note",
            Entry::Answer => "answer",
            Entry::Consent => "consent",
        };
        self.entries.get_or_create(&KindLabel { kind }).inc();
    }

    /// A consent ledger entry recorded (also a timeline entry).
    pub fn consent_recorded(&self, granted: bool) {
        let change = if granted { "granted" } else { "withdrawn" };
        self.consents.get_or_create(&ChangeLabel { change }).inc();
        self.entry_written(Entry::Consent);
    }

    pub fn do_not_contact(&self, set: bool) {
        let change = if set { "set" } else { "cleared" };
        self.do_not_contact.get_or_create(&ChangeLabel { change }).inc();
    }

    pub fn merge(&self, undone: bool) {
        let change = if undone { "undone" } else { "merged" };
        self.merges.get_or_create(&ChangeLabel { change }).inc();
    }

    pub fn export(&self) {
        self.gdpr.get_or_create(&KindLabel { kind: "export" }).inc();
    }

    /// An erasure and the rows it deleted per table (tables outside the known set are not
    /// labelled: they cannot occur, see `store::erase`).
    pub fn erasure<'a>(&self, deleted: impl IntoIterator<Item = (&'a str, i64)>) {
        self.gdpr.get_or_create(&KindLabel { kind: "erasure" }).inc();
        for (table, n) in deleted {
            if let Some(table) = ERASED_TABLES.iter().find(|t| **t == table) {
                self.erased_rows.get_or_create(&TableLabel { table }).inc_by(u64::try_from(n).unwrap_or(0));
            }
        }
    }
}

impl Metrics {
    /// `n` rows of `table` deleted by the retention sweeper (tables outside the known set are
    /// not labelled: they cannot occur, see `crate::retention`).
    pub fn retention_deleted(&self, table: &str, n: u64) {
        if let Some(table) = RETENTION_TABLES.iter().find(|t| **t == table) {
            self.retention_deleted.get_or_create(&TableLabel { table }).inc_by(n);
        }
    }

    pub fn retention_failed(&self) {
        self.retention_failures.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str, labels: &str) -> Option<u64> {
        let want = format!("{name}{{service=\"crm\",{labels}}} ");
        text.lines().find_map(|l| l.strip_prefix(want.as_str())).and_then(|v| v.parse().ok())
    }

    #[test]
    fn recorded_metrics_appear_in_the_registry_text_with_their_labels() {
        let platform = Platform::new("crm");
        let m = Metrics::register(&platform);
        m.customer_resolved(Source::Api, true);
        m.customer_resolved(Source::ContactEvent, false);
        m.customer_resolved(Source::ContactEvent, false);
        m.entry_written(Entry::Interaction);
        m.entry_written(Entry::Note);
        m.consent_recorded(false);
        m.do_not_contact(true);
        m.merge(true);
        m.export();
        m.erasure([("notes", 2), ("customers", 1), ("not_a_table", 9)]);
        m.retention_deleted("interactions", 3);
        m.retention_deleted("erasure_reasons", 1);
        m.retention_deleted("not_a_table", 4);
        m.retention_failed();
        let text = platform.encode();
        let at = |name: &str, labels: &str| sample(&text, name, labels);
        assert_eq!(at("centralita_crm_customers_resolved_total", "source=\"api\",outcome=\"created\""), Some(1));
        assert_eq!(
            at("centralita_crm_customers_resolved_total", "source=\"contact_event\",outcome=\"found\""),
            Some(2)
        );
        assert_eq!(at("centralita_crm_timeline_entries_written_total", "kind=\"interaction\""), Some(1));
        assert_eq!(at("centralita_crm_timeline_entries_written_total", "kind=\"note\""), Some(1));
        assert_eq!(at("centralita_crm_timeline_entries_written_total", "kind=\"consent\""), Some(1));
        assert_eq!(at("centralita_crm_consent_changes_total", "change=\"withdrawn\""), Some(1));
        assert_eq!(at("centralita_crm_do_not_contact_changes_total", "change=\"set\""), Some(1));
        assert_eq!(at("centralita_crm_merges_total", "change=\"undone\""), Some(1));
        assert_eq!(at("centralita_crm_gdpr_requests_total", "kind=\"export\""), Some(1));
        assert_eq!(at("centralita_crm_gdpr_requests_total", "kind=\"erasure\""), Some(1));
        assert_eq!(at("centralita_crm_erased_rows_total", "table=\"notes\""), Some(2));
        assert_eq!(at("centralita_crm_erased_rows_total", "table=\"customers\""), Some(1));
        assert_eq!(at("centralita_crm_retention_deleted_total", "table=\"interactions\""), Some(3));
        assert_eq!(at("centralita_crm_retention_deleted_total", "table=\"erasure_reasons\""), Some(1));
        assert_eq!(at("centralita_crm_retention_deleted_total", "table=\"notes\""), Some(0), "exported at 0");
        let failures = "centralita_crm_retention_failures_total{service=\"crm\"} ";
        assert_eq!(text.lines().find_map(|l| l.strip_prefix(failures)), Some("1"), "{text}");
        assert!(!text.contains("not_a_table"), "{text}");
    }

    #[test]
    fn gdpr_kinds_are_exported_before_the_first_request() {
        let platform = Platform::new("crm");
        let _m = Metrics::register(&platform);
        let text = platform.encode();
        assert_eq!(sample(&text, "centralita_crm_gdpr_requests_total", "kind=\"export\""), Some(0), "{text}");
        assert_eq!(sample(&text, "centralita_crm_gdpr_requests_total", "kind=\"erasure\""), Some(0), "{text}");
    }
}
