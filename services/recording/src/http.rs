//! The playback HTTP endpoint: `GET /v1/recordings/{tenant}/{id}.wav?exp=…&sub=…&sig=…`,
//! a URL that `CreatePlaybackUrl` signed. Answers the whole WAV file or one byte range
//! (`Range: bytes=…`, 206), refuses an altered URL (403), an expired one (403) and an
//! unsatisfiable range (416). Every answered request is an audit record (`download`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

use crate::api::{open, Api};
use crate::playback::parse_range;
use crate::store::{self, Audit};

pub fn router(api: Arc<Api>) -> Router {
    Router::new().route("/v1/recordings/{tenant}/{file}", get(download)).with_state(api)
}

/// Serves the endpoint on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, api: Arc<Api>, shutdown: Shutdown) {
    let app = router(api);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.wait().await }).await {
        tracing::error!(error = %e, "playback HTTP server stopped");
    }
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], format!("{why}\n")).into_response()
}

async fn download(
    State(api): State<Arc<Api>>,
    Path((tenant, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let grant = match api.signer.verify(&tenant, &file, query.as_deref().unwrap_or(""), Utc::now().timestamp()) {
        Ok(g) => g,
        Err(why) => return refuse(StatusCode::FORBIDDEN, why),
    };
    let Ok(tenant) = TenantId::parse(&grant.tenant) else {
        return refuse(StatusCode::FORBIDDEN, "the URL was altered");
    };
    let r = &api.recorder;
    let row = match store::get(&r.pool, &tenant, &grant.recording).await {
        Ok(Some(row)) => row,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, "no such recording"),
        Err(e) => {
            tracing::warn!(error = %e, "playback lookup failed");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "try again later");
        }
    };
    let audio = match open(&r.pool, &r.keys, &r.objects, &tenant, &row).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, recording = %row.id, "playback open failed");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "try again later");
        }
    };
    let len = audio.wav_len();
    let range = match headers
        .get(header::RANGE)
        .map(|v| v.to_str().map_err(|_| crate::playback::Unsatisfiable).and_then(|v| parse_range(v, len)))
    {
        None => None,
        Some(Ok(r)) => r,
        Some(Err(_)) => {
            return (StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{len}"))])
                .into_response()
        }
    };
    let detail = match &range {
        Some(r) => format!("http bytes {}-{}", r.start, r.end - 1),
        None => "http whole file".into(),
    };
    let audit = Audit {
        actor: &grant.subject,
        roles: vec!["signed_url".into()],
        action: "download",
        recording: &row.id,
        detail,
        at: Utc::now(),
    };
    if let Err(e) = store::audit(&r.pool, &tenant, &audit).await {
        tracing::warn!(error = %e, "cannot audit a download; refusing it");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "try again later");
    }
    r.metrics.audited("download");
    let (tx, rx) = mpsc::channel(4);
    let (status, span) = match range {
        Some(rg) => (StatusCode::PARTIAL_CONTENT, rg),
        None => (StatusCode::OK, 0..len),
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "audio/wav")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, span.end - span.start)
        .header(header::CACHE_CONTROL, "private, no-store");
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(header::CONTENT_RANGE, format!("bytes {}-{}/{len}", span.start, span.end - 1));
    }
    audio.send(span, tx);
    let body = Body::from_stream(ReceiverStream::new(rx).map(|r| r.map_err(|e| std::io::Error::other(e.to_string()))));
    response.body(body).unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot answer"))
}
