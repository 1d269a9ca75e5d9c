//! The admin HTTP port: `/livez` (the process serves requests, and none of its consumer
//! groups is stuck while the broker answers: [`crate::bus::GroupWatch`]), `/readyz` (every
//! dependency check passes; 503 with the failing checks otherwise) and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::health::Readiness;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

pub fn router(readiness: Readiness, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { readiness, metrics })
}

async fn livez(State(s): State<AdminState>) -> impl IntoResponse {
    let broker_ok_since = s.readiness.passing_since("kafka");
    match s.metrics.groups.liveness(broker_ok_since, std::time::Instant::now()) {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(why) => {
            tracing::error!(%why, "not live: a consumer group is stuck while the broker answers; restart me");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
        }
    }
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let report = s.readiness.report();
    let code = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::to_string(&report).unwrap_or_else(|_| "{}".into());
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    s.metrics.ready.set(i64::from(s.readiness.is_ready()));
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode())
}
