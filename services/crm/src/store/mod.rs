//! PostgreSQL side of the CRM: the schema, and every read and write, each inside a
//! transaction whose tenant is set for row-level security ([`begin`]).
//!
//! Merging moves nothing: the source profile points at the target (`merged_into`) and
//! every read works on the *family* of a root profile (the root and the profiles merged
//! into it, transitively). Undo clears the pointer, so both profiles are exactly as before.
//!
//! # Layout
//! One module per aggregate; the functions the rest of the crate calls are re-exported
//! here, so callers write `store::resolve`, `store::add_consent`, ….
//! - `schema`: the `crm` schema's migrations ([`CUSTOMERS_SQL`], [`ERASURE_STORES_SQL`],
//!   [`RETENTION_SQL`]).
//! - `customers`: profiles and identities: [`resolve`], [`view`] of a family, [`update`].
//! - `merges`: [`merge`] and [`undo_merge`] of root profiles.
//! - `notes`: notes and answers about a customer.
//! - `consents`: the consent ledger and the entry [`consent_in_force`].
//! - `interactions`: the timeline's contacts as the contact events fold them, applied
//!   event ids, contacts of erased customers.
//! - `erasure`: GDPR [`erase`] of a family, its audit record and each other store's progress.
//! - `retention`: what the retention sweeper deletes, one batch per transaction.
//! - `outbox` (the platform's [`centralita_platform::db::outbox`]): events queued in a
//!   transaction for the relay.

mod consents;
mod customers;
mod erasure;
mod interactions;
mod merges;
mod notes;
mod retention;
mod schema;

pub use centralita_platform::db::begin;
pub use centralita_platform::db::outbox::queue as outbox;
pub use consents::{add_consent, consent_in_force, consents, ConsentRow};
pub use customers::{
    add_identity, remove_identity, resolve, root_of, roots_with, update, view, Changes, CustomerRow, Resolution, View,
};
pub use erasure::{erase, erasure, store_erased, ErasureRow, StoreRow, ERASURE_STORES};
pub use interactions::{
    first_application, interaction, interactions, is_erased_contact, write_interaction, InteractionRow,
};
pub use merges::{get_merge, merge, merges_of, undo_merge, MergeRow};
pub use notes::{add_answer, add_note, answers, notes, AnswerRow, NoteRow};
pub use retention::{clear_erasure_reasons, delete_expired_families, delete_expired_records, Record};
pub use schema::{CUSTOMERS_SQL, ERASURE_STORES_SQL, RETENTION_SQL};

pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
