//! The crate's error type and the single place where errors become `tonic::Status`.
//!
//! Handlers return [`Error`]; [`From<Error> for tonic::Status`] decides what the caller sees.
//! Internal detail (database messages, broker errors) is logged there and replaced by a
//! generic message, so nothing internal leaks to a caller: such a message can name tables,
//! hosts or another tenant's rows, and a caller cannot act on it anyway. Validation failures,
//! which a caller can fix, carry their field details instead.

use std::fmt;

use tonic_types::{ErrorDetails, StatusExt};

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Error domain reported in `google.rpc.ErrorInfo` details.
pub const ERROR_DOMAIN: &str = "centralita.io";

/// One invalid field of an input: its path (`spec.quotas.maxConcurrentContacts`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Machine-readable reasons (`google.rpc.ErrorInfo.reason`) of refusals a client may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    TokenMissing,
    TokenInvalid,
    TokenExpired,
    TenantUnknown,
    TenantSuspended,
    TenantRateLimited,
    WrongTenant,
    RoleMissing,
    /// The caller acts as an agent it is not.
    NotThisAgent,
    /// The caller is not the agent holding the contact it acts on.
    NotContactHolder,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TokenMissing => "TOKEN_MISSING",
            Reason::TokenInvalid => "TOKEN_INVALID",
            Reason::TokenExpired => "TOKEN_EXPIRED",
            Reason::TenantUnknown => "TENANT_UNKNOWN",
            Reason::TenantSuspended => "TENANT_SUSPENDED",
            Reason::TenantRateLimited => "TENANT_RATE_LIMITED",
            Reason::WrongTenant => "WRONG_TENANT",
            Reason::RoleMissing => "ROLE_MISSING",
            Reason::NotThisAgent => "NOT_THIS_AGENT",
            Reason::NotContactHolder => "NOT_CONTACT_HOLDER",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is malformed; every offending field is listed.
    #[error("invalid input: {}", join(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{message}")]
    Unauthenticated { reason: Reason, message: String },
    #[error("{message}")]
    PermissionDenied { reason: Reason, message: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{message}")]
    ResourceExhausted { reason: Reason, message: String },
    /// A dependency (Kafka, PostgreSQL, Redis) cannot be reached right now; retry later.
    #[error("{0} is unavailable")]
    Unavailable(String),
    /// A bug or an unexpected failure. The detail is logged, never sent to a caller.
    #[error("internal error: {0}")]
    Internal(String),
}

fn join(v: &[FieldViolation]) -> String {
    v.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn internal(e: impl fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() || e.as_db_error().is_none() {
            Error::Unavailable(format!("postgresql ({e})"))
        } else {
            Error::Internal(format!("postgresql: {e}"))
        }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::Unavailable(format!("postgresql pool ({e})"))
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() {
            Error::Unavailable(format!("redis ({e})"))
        } else {
            Error::Internal(format!("redis: {e}"))
        }
    }
}

impl From<rdkafka::error::KafkaError> for Error {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        Error::Unavailable(format!("kafka ({e})"))
    }
}

fn with_reason(code: tonic::Code, message: String, reason: Reason) -> tonic::Status {
    let details = ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, []);
    tonic::Status::with_error_details(code, message, details)
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        match e {
            Error::InvalidArgument(violations) => {
                let message = format!("invalid request: {}", join(&violations));
                let details = ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
                        .collect::<Vec<_>>(),
                );
                tonic::Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::Unauthenticated { reason, message } => with_reason(Code::Unauthenticated, message, reason),
            Error::PermissionDenied { reason, message } => with_reason(Code::PermissionDenied, message, reason),
            Error::ResourceExhausted { reason, message } => with_reason(Code::ResourceExhausted, message, reason),
            Error::NotFound(what) => tonic::Status::not_found(format!("{what} not found")),
            Error::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            Error::Unavailable(what) => {
                tracing::warn!(dependency = %what, "request failed: dependency unavailable");
                tonic::Status::unavailable("a dependency is unavailable; retry later")
            }
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "request failed: internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_never_reaches_the_caller() {
        let status = tonic::Status::from(Error::Internal("password=hunter2 at db".into()));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }

    #[test]
    fn invalid_argument_carries_field_details() {
        let status = tonic::Status::from(Error::invalid("page_size", "must be between 0 and 1000"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations[0].field, "page_size");
        assert!(status.message().contains("page_size"));
    }

    #[test]
    fn refusals_carry_a_reason() {
        let status = tonic::Status::from(Error::PermissionDenied {
            reason: Reason::TenantSuspended,
            message: "tenant `acme` is suspended".into(),
        });
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.get_error_details().error_info().expect("info").reason, "TENANT_SUSPENDED");
    }
}
