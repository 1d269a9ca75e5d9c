//! What every provider adapter does with an agent's outbound message (SMS through Twilio,
//! WhatsApp through Meta's Cloud API): post it with retries, then keep the provider's id for
//! its status reports or mark the message `failed` with the reason.

use std::time::Duration;

use centralita_platform::tenant::TenantId;

use super::model::{Message, Status};
use super::store;
use super::Digital;

/// How an adapter sends: its attempts, the first wait (doubled after each) and the counter
/// of outcomes (`sent`, `retried`, `failed`, `refused`).
pub struct Retries<'a> {
    pub attempts: u32,
    pub backoff: Duration,
    pub count: &'a (dyn Fn(&'static str) + Sync),
}

impl std::fmt::Debug for Retries<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retries").field("attempts", &self.attempts).field("backoff", &self.backoff).finish()
    }
}

/// Posts `request()` until the provider takes it: retried on network errors, 429 and 5xx
/// with exponential backoff; a 4xx is final. The provider's answer as JSON, or why not.
pub async fn post(
    r: &Retries<'_>,
    mut request: impl FnMut() -> reqwest::RequestBuilder,
) -> Result<serde_json::Value, String> {
    let attempts = r.attempts.max(1);
    let mut reason = String::new();
    for attempt in 1..=attempts {
        match request().send().await {
            Ok(answer) if answer.status().is_success() => {
                return answer.json().await.map_err(|e| format!("provider answer is not JSON: {}", e.without_url()));
            }
            Ok(answer) => {
                let status = answer.status();
                let detail: String = answer.text().await.unwrap_or_default().chars().take(200).collect();
                reason = format!("provider answered {status}: {detail}");
                if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
                    (r.count)("refused");
                    return Err(reason);
                }
            }
            Err(e) => reason = format!("provider unreachable: {}", e.without_url()),
        }
        if attempt < attempts {
            (r.count)("retried");
            tokio::time::sleep(r.backoff * 2u32.saturating_pow(attempt - 1)).await;
        }
    }
    (r.count)("failed");
    Err(format!("after {attempts} attempts: {reason}"))
}

/// Records how a send of `message` ended: the provider's id kept for its status reports, or
/// the message `failed` with the reason (`what` names the channel in the logs).
pub async fn settle(
    d: &Digital,
    tenant: &TenantId,
    contact: &str,
    message: &Message,
    outcome: Result<String, String>,
    what: &str,
    count: &(dyn Fn(&'static str) + Sync),
) {
    match outcome {
        Ok(id) => {
            count("sent");
            if let Err(e) = store::record_outbound_sms(&d.pool, tenant, contact, message.sequence, &id).await {
                tracing::warn!(tenant = %tenant, contact, error = %e, what, "cannot keep a provider id for its statuses");
            }
        }
        Err(reason) => {
            tracing::warn!(tenant = %tenant, contact, seq = message.sequence, reason, what, "send failed");
            match store::report_status(&d.pool, tenant, contact, message.sequence, Status::Failed, &reason, None).await
            {
                Ok(_) => d.written(tenant, contact),
                Err(e) => tracing::error!(tenant = %tenant, contact, error = %e, what, "cannot mark a message failed"),
            }
        }
    }
}
