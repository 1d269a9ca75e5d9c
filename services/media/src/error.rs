//! The crate's one error type. Refusals of a call are not errors: they are
//! [`crate::admission::Refusal`]s, and a contact sessions would not create is a
//! [`ContactRefused`] answer, mapped to a SIP status in one place ([`Error::sip_status`]).

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen for SIP on {0}: {1}")]
    Bind(SocketAddr, String),
    #[error("SIP stack: {0}")]
    Sip(String),
    #[error("cannot mint a token for sessions: {0}")]
    Token(String),
    #[error("sessions did not create the contact: {0:?}")]
    ContactRefused(ContactRefused),
    #[error("sessions: {0}")]
    Sessions(String),
    /// Sessions has no such contact (a contact media names is gone, or never was).
    #[error("sessions has no such contact")]
    NoContact,
}

/// Why sessions did not create a call's contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactRefused {
    /// The tenant was suspended (or offboarded) after this replica last heard of it.
    TenantSuspended,
    /// Outside the tenant's business hours voice is not queued.
    Closed,
    /// Sessions could not be reached or was overloaded.
    Unavailable,
}

impl Error {
    /// The SIP status and reason phrase a caller gets when its call fails on this error,
    /// and the metric outcome.
    pub fn sip_status(&self) -> (u16, &'static str, &'static str) {
        match self {
            Error::ContactRefused(ContactRefused::TenantSuspended) => {
                (403, "Forbidden - Tenant Suspended", "refused_tenant")
            }
            Error::ContactRefused(ContactRefused::Closed) => {
                (480, "Temporarily Unavailable - Closed", "refused_tenant")
            }
            Error::ContactRefused(ContactRefused::Unavailable) => (503, "Service Unavailable", "failed"),
            _ => (500, "Server Internal Error", "failed"),
        }
    }
}
