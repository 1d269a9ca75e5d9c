//! The web chat front door: the customer's side of a chat, over HTTP and a WebSocket (the
//! convention of Chatwoot and Amazon Connect chat), on its own port
//! (`CENTRALITA_WEBCHAT_ADDR`).
//!
//! Every path carries the tenant: `/v1/tenants/{tenant}/webchat/…`.
//! - `POST …/chats` with the tenant's widget key, from an allowed origin: creates the chat
//!   contact in sessions (in the widget's queue) and its conversation, and returns a visitor
//!   token signed by media, scoped to that conversation (`sub` = `visitor:{contact}`, its
//!   own audience, so no other API accepts it).
//! - `GET …/socket?token=…&after=N` (WebSocket): the messages after `N`, then each new one,
//!   the agent's typing and read marker; the customer sends messages, typing and read
//!   markers, or leaves (the contact ends). A client that reconnects with the last sequence
//!   it saw misses and repeats nothing. When sessions says the contact has ended the socket
//!   gets `ended` and closes; sends after that are refused (409).
//! - `POST …/messages` (bearer visitor token): sends a message when the socket cannot.
//! - `GET …/messages?after=N` (bearer visitor token): the transcript.
//! - `POST …/attachments?name=…&requestId=…` (bearer visitor token, the file as the body,
//!   its type as `Content-Type`): the customer sends a file ([`super::attachments`]: a
//!   forbidden type or bytes not of the type claimed 415, over 5 MiB 413).
//! - `GET …/attachments/{id}` (bearer visitor token): a file of the visitor's own
//!   conversation, served as a download with `nosniff` and a sandboxing CSP.
//!
//! Refusals: an origin not in the widget's allow-list 403, a wrong widget key or visitor
//! token 401, an unknown tenant or one without a widget 404, a text over the limit 413 (a
//! frame over the limit closes the socket), more than the rate 429; each counted in
//! `centralita_media_webchat_refusals`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use centralita_platform::auth::{Role, Signer, TokenRequest, Verifier};
use centralita_platform::error::Error;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::{contact_name, Tenant, TenantId, WebChat as Widget};
use centralita_proto::crm::v1 as crm;
use serde::{Deserialize, Serialize};

use super::attachments;
use super::follow::{Follower, Update};
use super::limits::Bucket;
use super::model::{
    check_request_id, check_text, Kind, Message, NewAttachment, NewMessage, Sender, Status, TextRefusal,
};
use super::store::{self, NewConversation, Party};
use super::Digital;

/// How long a visitor token lasts.
pub const VISITOR_TTL: Duration = Duration::from_secs(4 * 3600);
/// Largest WebSocket frame and HTTP body: a text at its limit, JSON-escaped, fits.
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
/// How often an open socket asks sessions whether its contact has ended.
pub const ENDED_CHECK: Duration = Duration::from_secs(3);
/// The audience of visitor tokens: the API audience with this suffix.
pub const AUDIENCE_SUFFIX: &str = "-webchat";
const SUBJECT_PREFIX: &str = "visitor:";

/// The front door's state.
#[derive(Debug)]
pub struct WebChat {
    pub digital: Arc<Digital>,
    pub registry: TenantRegistry,
    pub signer: Signer,
    pub verifier: Verifier,
    /// Sockets close with "going away" when the process shuts down, so their clients
    /// resume on another replica.
    pub shutdown: Shutdown,
    buckets: Mutex<HashMap<(TenantId, String), Bucket>>,
}

impl WebChat {
    pub fn new(
        digital: Arc<Digital>,
        registry: TenantRegistry,
        signer: Signer,
        verifier: Verifier,
        shutdown: Shutdown,
    ) -> Self {
        Self { digital, registry, signer, verifier, shutdown, buckets: Mutex::default() }
    }

    /// One message's worth of the conversation's rate.
    fn take(&self, tenant: &TenantId, contact: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 100_000 {
            // Full buckets only: forgetting them changes nothing.
            buckets.retain(|_, b| {
                let mut probe = *b;
                !probe.take_all(now)
            });
        }
        buckets.entry((tenant.clone(), contact.to_owned())).or_insert_with(|| Bucket::full(now)).take(now)
    }
}

impl Bucket {
    /// Whether the bucket is full at `now` (then it can be forgotten).
    fn take_all(&mut self, now: Instant) -> bool {
        (0..super::limits::BURST as usize).all(|_| self.take(now))
    }
}

/// The router of the front door.
pub fn router(state: Arc<WebChat>) -> Router {
    Router::new()
        .route("/v1/tenants/{tenant}/webchat/chats", post(start_chat).options(preflight))
        .route("/v1/tenants/{tenant}/webchat/messages", post(send).get(transcript).options(preflight))
        .route("/v1/tenants/{tenant}/webchat/socket", get(socket))
        .route(
            "/v1/tenants/{tenant}/webchat/attachments",
            // A little over the file limit: a file just over it is read and refused with a
            // clear 413 by the check rather than cut off mid-upload.
            post(upload).options(preflight).layer(DefaultBodyLimit::max(attachments::MAX_BYTES + 64 * 1024)),
        )
        .route("/v1/tenants/{tenant}/webchat/attachments/{id}", get(download).options(preflight_file))
        .layer(DefaultBodyLimit::max(MAX_FRAME_BYTES))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// Refusals.
// ---------------------------------------------------------------------------------------

/// A refusal: status, a reason code (also the metric's label) and a message.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    message: String,
    origin: Option<HeaderValue>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(ErrorBody { error: self.reason, message: &self.message })).into_response();
        if let Some(o) = self.origin {
            r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        }
        r
    }
}

fn refuse(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { status, reason, message: message.into(), origin: None }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(v) => refuse(
                StatusCode::BAD_REQUEST,
                "invalid",
                v.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            ),
            Error::NotFound(what) => refuse(StatusCode::NOT_FOUND, "not_found", format!("{what} not found")),
            Error::FailedPrecondition(m) => refuse(StatusCode::CONFLICT, "refused", m),
            Error::ResourceExhausted { message, .. } => refuse(StatusCode::TOO_MANY_REQUESTS, "busy", message),
            Error::Unavailable(_) => refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again later"),
            e => {
                tracing::error!(error = %e, "web chat request failed");
                refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

impl WebChat {
    fn refused(&self, r: Refusal) -> Refusal {
        if let Some(label) = crate::metrics::WEBCHAT_REFUSALS.iter().find(|l| **l == r.reason) {
            self.digital.metrics.refused(label);
        }
        r
    }

    /// The tenant of the path and its widget, if the tenant is active and has one.
    fn widget(&self, tenant: &str) -> Result<(Arc<Tenant>, Widget), Refusal> {
        let unknown = || refuse(StatusCode::NOT_FOUND, "not_found", "no web chat here");
        let id = TenantId::parse(tenant).map_err(|_| unknown())?;
        let t = self.registry.get(&id).ok_or_else(unknown)?;
        let w = t.webchat.clone().ok_or_else(unknown)?;
        if !t.is_active() {
            return Err(refuse(StatusCode::FORBIDDEN, "refused", "this tenant does not take chats now"));
        }
        Ok((t, w))
    }

    /// The request's `Origin`, which must be one of the widget's.
    fn origin(&self, headers: &HeaderMap, widget: &Widget, required: bool) -> Result<Option<HeaderValue>, Refusal> {
        match headers.get(header::ORIGIN) {
            None if !required => Ok(None),
            Some(o) if o.to_str().is_ok_and(|o| widget.allows(o)) => Ok(Some(o.clone())),
            _ => Err(self.refused(refuse(StatusCode::FORBIDDEN, "origin", "this origin may not use the chat"))),
        }
    }

    /// The conversation a visitor token is for, in the tenant of the path.
    fn visitor(&self, tenant: &TenantId, token: &str) -> Result<String, Refusal> {
        let bad = || self.refused(refuse(StatusCode::UNAUTHORIZED, "token", "the visitor token is not valid here"));
        let caller = self.verifier.verify(token).map_err(|_| bad())?;
        if caller.tenant.as_ref() != Some(tenant) {
            return Err(bad());
        }
        let contact = caller.subject.strip_prefix(SUBJECT_PREFIX).ok_or_else(bad)?;
        Ok(contact.to_owned())
    }

    /// The tenant, the request's origin (one of the widget's, echoed on every answer) and
    /// the visitor's conversation, for the endpoints a visitor token opens.
    fn visitor_request(
        &self,
        tenant: &str,
        headers: &HeaderMap,
    ) -> Result<(Arc<Tenant>, Option<HeaderValue>, String), Refusal> {
        let (t, widget) = self.widget(tenant)?;
        let origin = self.origin(headers, &widget, false)?;
        let contact = self
            .visitor(&t.id, bearer(headers).unwrap_or_default())
            .map_err(|r| Refusal { origin: origin.clone(), ..r })?;
        Ok((t, origin, contact))
    }

    /// Whether sessions says the contact has ended for the customer (after-contact work or
    /// later, or it no longer knows it). Unknown when
    /// sessions cannot be asked: then it has not ended, as far as the chat goes.
    async fn ended(&self, tenant: &TenantId, contact: &str) -> bool {
        match self.digital.contacts.view(tenant, contact).await {
            Ok(Some(v)) => !v.open,
            Ok(None) => true,
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask sessions whether a chat has ended");
                false
            }
        }
    }

    /// The customer leaves: a notice in the conversation, and the contact ended in sessions.
    async fn leave(&self, tenant: &TenantId, contact: &str) -> Result<(), Error> {
        let notice = NewMessage {
            sender: Sender::System,
            kind: Kind::Notice,
            text: "The customer left the chat".into(),
            provider_time: None,
            request_id: "customer-left".into(),
            attachment: None,
        };
        self.digital.append(tenant, contact, &notice).await?;
        self.digital.contacts.end(tenant, contact).await
    }

    fn mint(&self, tenant: &TenantId, contact: &str) -> Result<String, Error> {
        self.signer.mint(&TokenRequest {
            subject: format!("{SUBJECT_PREFIX}{contact}"),
            tenant: Some(tenant.clone()),
            // The role is required of every token; the audience is what confines this one
            // to the web chat.
            roles: vec![Role::Channel],
            agent_id: None,
            ttl: VISITOR_TTL,
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

fn with_origin(mut r: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(o) = origin {
        r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        r.headers_mut().insert(header::VARY, HeaderValue::from_static("origin"));
    }
    r
}

/// CORS preflight: granted to the widget's origins only.
async fn preflight(
    State(chat): State<Arc<WebChat>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let (_, widget) = chat.widget(&tenant)?;
    let origin = chat.origin(&headers, &widget, true)?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    Ok(with_origin(r, origin))
}

/// CORS preflight of a file's download (the path also names the file).
async fn preflight_file(
    chat: State<Arc<WebChat>>,
    Path((tenant, _)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    preflight(chat, Path(tenant), headers).await
}

// ---------------------------------------------------------------------------------------
// The wire form of the front door (JSON).
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartChat {
    widget_key: String,
    /// A returning visitor's id (kept by the widget); a new one is made when absent.
    #[serde(default)]
    visitor_id: String,
    /// Idempotency key: a retried start returns the same chat.
    #[serde(default)]
    request_id: String,
    /// The customer's phone number from the widget's pre-chat form (E.164, `+` and digits),
    /// optional: the chat then belongs to the customer CRM knows by that number.
    #[serde(default)]
    phone: String,
    /// The customer's email from the pre-chat form, optional, likewise.
    #[serde(default)]
    email: String,
}

/// The pre-chat form's phone and email as CRM identities in normal form, or what is wrong.
fn prechat_identities(phone: &str, email: &str) -> Result<Vec<crm::Identity>, String> {
    let mut out = Vec::new();
    for (kind, value, field) in [(crm::IdentityKind::Phone, phone, "phone"), (crm::IdentityKind::Email, email, "email")]
    {
        if value.trim().is_empty() {
            continue;
        }
        let raw = crm::Identity { kind: kind as i32, value: value.trim().to_owned(), network: String::new() };
        // No default country: a number must be written in full (+34…).
        let id = centralita_platform::identity::Identity::parse(&raw, "").map_err(|e| format!("{field}: {e}"))?;
        out.push(crm::Identity { kind: kind as i32, value: id.value, network: String::new() });
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ChatStarted {
    contact: String,
    visitor_id: String,
    visitor_token: String,
    expires_in_seconds: u64,
}

/// A message as the customer's side sees it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireMessage {
    sequence: i64,
    sender: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    agent_id: String,
    kind: &'static str,
    text: String,
    status: &'static str,
    create_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attachment: Option<WireAttachment>,
}

/// A file of the conversation: download it from `…/webchat/attachments/{id}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireAttachment {
    id: String,
    name: String,
    content_type: String,
    size: i64,
}

fn wire_message(m: &Message) -> WireMessage {
    WireMessage {
        sequence: m.sequence,
        sender: match m.sender {
            Sender::Customer => "customer",
            Sender::Agent(_) => "agent",
            Sender::System => "system",
        },
        agent_id: m.sender.agent_id().to_owned(),
        kind: match m.kind {
            Kind::Text => "text",
            Kind::Notice => "notice",
            Kind::Attachment => "attachment",
        },
        attachment: m.attachment.as_ref().map(|a| WireAttachment {
            id: a.id.clone(),
            name: a.name.clone(),
            content_type: a.content_type.clone(),
            size: a.size,
        }),
        text: m.text.clone(),
        status: match m.status {
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Failed => "failed",
        },
        create_time: m.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SendBody {
    text: String,
    #[serde(default)]
    request_id: String,
}

#[derive(Debug, Deserialize)]
struct After {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    token: String,
}

#[derive(Debug, Serialize)]
struct Transcript {
    messages: Vec<WireMessage>,
}

/// What the customer's socket sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Inbound {
    Message {
        text: String,
        #[serde(default, rename = "requestId")]
        request_id: String,
    },
    Typing {
        active: bool,
    },
    Delivered {
        sequence: i64,
    },
    Read {
        sequence: i64,
    },
    /// The customer leaves: the contact ends (abandoned if no agent took it yet).
    Leave {},
}

/// What the customer's socket receives.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Outbound<'a> {
    Message(WireMessage),
    Typing {
        active: bool,
    },
    Read {
        sequence: i64,
    },
    /// A message the customer sent was stored under this sequence.
    Ack {
        #[serde(rename = "requestId")]
        request_id: &'a str,
        sequence: i64,
    },
    Error {
        error: &'a str,
        message: &'a str,
    },
    /// The contact has ended: nothing more can be sent; the socket closes after this.
    Ended {},
}

// ---------------------------------------------------------------------------------------
// Handlers.
// ---------------------------------------------------------------------------------------

fn is_visitor_id(s: &str) -> bool {
    (8..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Constant-time comparison of the widget key (it is public, but guessing keys of other
/// tenants' widgets byte by byte should not be made easy).
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn start_chat(
    State(chat): State<Arc<WebChat>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Refusal> {
    let (t, widget) = chat.widget(&tenant)?;
    let origin = chat.origin(&headers, &widget, true)?;
    let cors = |r: Refusal| Refusal { origin: origin.clone(), ..r };
    let req: StartChat = serde_json::from_slice(&body).map_err(|e| {
        cors(chat.refused(refuse(StatusCode::BAD_REQUEST, "invalid", format!("not a chat start: {e}"))))
    })?;
    if !same_key(&req.widget_key, &widget.widget_key) {
        return Err(cors(chat.refused(refuse(StatusCode::UNAUTHORIZED, "widget_key", "unknown widget key"))));
    }
    let visitor = match req.visitor_id.as_str() {
        "" => format!("v-{}", uuid::Uuid::now_v7().simple()),
        v if is_visitor_id(v) => v.to_owned(),
        _ => {
            return Err(cors(chat.refused(refuse(
                StatusCode::BAD_REQUEST,
                "invalid",
                "visitorId: must be 8 to 64 of A-Z, a-z, 0-9 and -",
            ))))
        }
    };
    if !check_request_id(&req.request_id) {
        return Err(cors(chat.refused(refuse(
            StatusCode::BAD_REQUEST,
            "invalid",
            "requestId: must be up to 64 of A-Z a-z 0-9 - _ .",
        ))));
    }
    let identities = prechat_identities(&req.phone, &req.email)
        .map_err(|m| cors(chat.refused(refuse(StatusCode::BAD_REQUEST, "invalid", m))))?;
    let origin_text = origin.as_ref().and_then(|o| o.to_str().ok()).unwrap_or_default().to_owned();
    let request_id = match req.request_id.as_str() {
        "" => uuid::Uuid::now_v7().simple().to_string(),
        r => format!("webchat-{r}"),
    };
    let new = super::contacts::NewChat {
        queue: widget.queue.clone(),
        visitor: visitor.clone(),
        origin: origin_text.clone(),
        request_id,
        identities,
    };
    let contact = chat.digital.contacts.create_chat(&t.id, &new).await.map_err(|e| cors(e.into()))?;
    let conversation = NewConversation {
        contact_id: contact.clone(),
        channel: store::WEBCHAT,
        queue: widget.queue.clone(),
        visitor: visitor.clone(),
        origin: origin_text,
    };
    let created = store::create_conversation(&chat.digital.pool, &t.id, &conversation, "Chat started")
        .await
        .map_err(|e| cors(e.into()))?;
    if created {
        chat.digital.metrics.message_stored(&Sender::System);
        chat.digital.outbox.notify_one();
    }
    let token = chat.mint(&t.id, &contact).map_err(|e| cors(e.into()))?;
    let body = ChatStarted {
        contact: contact_name(t.id.as_str(), &contact),
        visitor_id: visitor,
        visitor_token: token,
        expires_in_seconds: VISITOR_TTL.as_secs(),
    };
    Ok(with_origin((StatusCode::CREATED, Json(body)).into_response(), origin))
}

/// Checks a customer's text and the conversation's rate.
fn admit_text(chat: &WebChat, tenant: &TenantId, contact: &str, text: &str) -> Result<(), Refusal> {
    match check_text(text) {
        Ok(()) => {}
        Err(TextRefusal::TooLong) => {
            return Err(chat.refused(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                TextRefusal::TooLong.describe(),
            )))
        }
        Err(r) => {
            return Err(chat.refused(refuse(StatusCode::BAD_REQUEST, "invalid", format!("text: {}", r.describe()))))
        }
    }
    if !chat.take(tenant, contact) {
        return Err(chat.refused(refuse(StatusCode::TOO_MANY_REQUESTS, "rate", "too many messages; slow down")));
    }
    Ok(())
}

fn customer_message(text: String, request_id: String) -> NewMessage {
    NewMessage {
        sender: Sender::Customer,
        kind: Kind::Text,
        text,
        provider_time: Some(chrono::Utc::now()),
        request_id,
        attachment: None,
    }
}

async fn send(
    State(chat): State<Arc<WebChat>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Refusal> {
    let (t, origin, contact) = chat.visitor_request(&tenant, &headers)?;
    let cors = |r: Refusal| Refusal { origin: origin.clone(), ..r };
    let req: SendBody = serde_json::from_slice(&body)
        .map_err(|e| cors(chat.refused(refuse(StatusCode::BAD_REQUEST, "invalid", format!("not a message: {e}")))))?;
    if !check_request_id(&req.request_id) {
        return Err(cors(chat.refused(refuse(StatusCode::BAD_REQUEST, "invalid", "requestId: malformed"))));
    }
    admit_text(&chat, &t.id, &contact, &req.text).map_err(cors)?;
    if chat.ended(&t.id, &contact).await {
        return Err(cors(refuse(StatusCode::CONFLICT, "ended", "the chat has ended")));
    }
    let stored = chat
        .digital
        .append(&t.id, &contact, &customer_message(req.text, req.request_id))
        .await
        .map_err(|e| cors(e.into()))?;
    Ok(with_origin((StatusCode::CREATED, Json(wire_message(&stored))).into_response(), origin))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadQuery {
    #[serde(default)]
    name: String,
    #[serde(default)]
    request_id: String,
}

/// `POST …/attachments?name=…&requestId=…` (bearer visitor token; the body is the file, its
/// `Content-Type` its type): the customer sends a file.
async fn upload(
    State(chat): State<Arc<WebChat>>,
    Path(tenant): Path<String>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Refusal> {
    let (t, origin, contact) = chat.visitor_request(&tenant, &headers)?;
    let cors = |r: Refusal| Refusal { origin: origin.clone(), ..r };
    if !check_request_id(&q.request_id) {
        return Err(cors(chat.refused(refuse(StatusCode::BAD_REQUEST, "invalid", "requestId: malformed"))));
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let checked = attachments::check(&q.name, content_type, &body).map_err(|r| {
        let status = match r {
            attachments::Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            attachments::Refusal::ForbiddenType(_) | attachments::Refusal::NotOfType(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        let field = match r.field() {
            "file_name" => "name",
            "content_type" => "Content-Type",
            f => f,
        };
        cors(chat.refused(refuse(status, "invalid", format!("{field}: {}", r.describe()))))
    })?;
    if !chat.take(&t.id, &contact) {
        return Err(cors(chat.refused(refuse(StatusCode::TOO_MANY_REQUESTS, "rate", "too many messages; slow down"))));
    }
    if chat.ended(&t.id, &contact).await {
        return Err(cors(refuse(StatusCode::CONFLICT, "ended", "the chat has ended")));
    }
    let m = NewMessage {
        sender: Sender::Customer,
        kind: Kind::Attachment,
        text: checked.name.clone(),
        provider_time: Some(chrono::Utc::now()),
        request_id: q.request_id,
        attachment: Some(NewAttachment {
            name: checked.name,
            content_type: checked.content_type,
            sha256: checked.sha256,
            data: body.to_vec(),
        }),
    };
    let stored = chat.digital.append(&t.id, &contact, &m).await.map_err(|e| cors(e.into()))?;
    Ok(with_origin((StatusCode::CREATED, Json(wire_message(&stored))).into_response(), origin))
}

/// `GET …/attachments/{id}` (bearer visitor token): a file of the visitor's conversation,
/// as a download (never rendered inline by the browser: `Content-Disposition: attachment`,
/// `nosniff`).
async fn download(
    State(chat): State<Arc<WebChat>>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let (t, origin, contact) = chat.visitor_request(&tenant, &headers)?;
    let cors = |r: Refusal| Refusal { origin: origin.clone(), ..r };
    let missing = || cors(refuse(StatusCode::NOT_FOUND, "not_found", "no such file in this chat"));
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(missing());
    }
    let (meta, data) = store::attachment(&chat.digital.pool, &t.id, &contact, &id)
        .await
        .map_err(|e| cors(e.into()))?
        .ok_or_else(missing)?;
    let mut r = data.into_response();
    let h = r.headers_mut();
    let ct = HeaderValue::from_str(&meta.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    // RFC 6266 with RFC 5987's UTF-8 form; the plain fallback keeps ASCII letters only.
    let ascii: String =
        meta.name.chars().map(|c| if c.is_ascii_alphanumeric() || ".-_ ".contains(c) { c } else { '_' }).collect();
    let encoded: String = meta
        .name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b".-_".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(with_origin(r, origin))
}

async fn transcript(
    State(chat): State<Arc<WebChat>>,
    Path(tenant): Path<String>,
    Query(q): Query<After>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let (t, origin, contact) = chat.visitor_request(&tenant, &headers)?;
    let cors = |r: Refusal| Refusal { origin: origin.clone(), ..r };
    let mut messages = Vec::new();
    let mut after = q.after.max(0);
    loop {
        let page =
            store::messages_after(&chat.digital.pool, &t.id, &contact, after, 500).await.map_err(|e| cors(e.into()))?;
        let done = page.len() < 500;
        after = page.last().map_or(after, |m| m.sequence);
        messages.extend(page.iter().map(wire_message));
        if done || messages.len() >= 10_000 {
            break;
        }
    }
    Ok(with_origin(Json(Transcript { messages }).into_response(), origin))
}

async fn socket(
    State(chat): State<Arc<WebChat>>,
    Path(tenant): Path<String>,
    Query(q): Query<After>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Refusal> {
    let (t, widget) = chat.widget(&tenant)?;
    // Browsers always send their origin on a WebSocket handshake.
    chat.origin(&headers, &widget, true)?;
    let contact = chat.visitor(&t.id, &q.token)?;
    if q.after < 0 {
        return Err(chat.refused(refuse(StatusCode::BAD_REQUEST, "invalid", "after: must not be negative")));
    }
    let tenant = t.id.clone();
    Ok(upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |ws| serve_socket(chat, tenant, contact, q.after, ws)))
}

async fn serve_socket(chat: Arc<WebChat>, tenant: TenantId, contact: String, after: i64, mut ws: WebSocket) {
    chat.digital.metrics.socket_opened();
    let mut follower = Follower::new(&chat.digital.hub, tenant.clone(), contact.clone(), Party::Customer, after);
    let shutdown = chat.shutdown.clone();
    // Sessions owns the contact: it is asked, now and then, whether the contact has ended.
    let mut check = tokio::time::interval(ENDED_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ended = false;
    loop {
        if ended {
            // What was written up to the end, then the end, then close.
            if let Ok(updates) = follower.next(&chat.digital.pool).await {
                for u in updates {
                    if let Update::Message(m) = u {
                        let _ = send_json(&mut ws, &Outbound::Message(wire_message(&m))).await;
                    }
                }
            }
            let _ = send_json(&mut ws, &Outbound::Ended {}).await;
            let close = ws::CloseFrame { code: ws::close_code::NORMAL, reason: "the chat has ended".into() };
            let _ = ws.send(ws::Message::Close(Some(close))).await;
            break;
        }
        tokio::select! {
            _ = check.tick() => {
                ended = chat.ended(&tenant, &contact).await;
            }
            _ = shutdown.wait() => {
                let close = ws::CloseFrame { code: ws::close_code::AWAY, reason: "shutting down; resume elsewhere".into() };
                let _ = ws.send(ws::Message::Close(Some(close))).await;
                break;
            }
            frame = ws.recv() => {
                let Some(Ok(frame)) = frame else { break };
                let reply = match frame {
                    ws::Message::Text(_) if ended => Err(refuse(StatusCode::CONFLICT, "ended", "the chat has ended")),
                    ws::Message::Text(text) => inbound(&chat, &tenant, &contact, text.as_str()).await,
                    ws::Message::Binary(_) => Err(chat.refused(refuse(StatusCode::BAD_REQUEST, "invalid", "frames are JSON text"))),
                    ws::Message::Close(_) => break,
                    _ => Ok(Reply::Nothing),
                };
                let out = match &reply {
                    Ok(Reply::Stored(request_id, sequence)) => Some(Outbound::Ack { request_id, sequence: *sequence }),
                    Ok(Reply::Nothing) => None,
                    Ok(Reply::Left) => {
                        ended = true;
                        None
                    }
                    Err(r) => Some(Outbound::Error { error: r.reason, message: &r.message }),
                };
                if let Some(out) = out {
                    if send_json(&mut ws, &out).await.is_err() {
                        break;
                    }
                }
            }
            updates = follower.next(&chat.digital.pool) => {
                let updates = match updates {
                    Ok(u) => u,
                    Err(e) => {
                        tracing::warn!(error = %e, "web chat socket cannot follow its conversation");
                        let _ = send_json(&mut ws, &Outbound::Error { error: "unavailable", message: "try again later" }).await;
                        break;
                    }
                };
                let mut failed = false;
                for u in updates {
                    let out = match u {
                        Update::Message(m) => Outbound::Message(wire_message(&m)),
                        Update::Typing(active) => Outbound::Typing { active },
                        Update::Read(sequence) => Outbound::Read { sequence },
                    };
                    if send_json(&mut ws, &out).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed {
                    break;
                }
            }
        }
    }
    chat.digital.metrics.socket_closed();
}

async fn send_json(ws: &mut WebSocket, out: &Outbound<'_>) -> Result<(), axum::Error> {
    let text = serde_json::to_string(out).unwrap_or_else(|_| r#"{"type":"error","error":"internal"}"#.into());
    ws.send(ws::Message::Text(text.into())).await
}

/// What a customer's frame did.
#[derive(Debug)]
enum Reply {
    /// A message stored: its request id and sequence.
    Stored(String, i64),
    Nothing,
    /// The customer left.
    Left,
}

/// Applies one frame of the customer.
async fn inbound(chat: &WebChat, tenant: &TenantId, contact: &str, text: &str) -> Result<Reply, Refusal> {
    let frame: Inbound = serde_json::from_str(text)
        .map_err(|e| chat.refused(refuse(StatusCode::BAD_REQUEST, "invalid", format!("not a chat frame: {e}"))))?;
    match frame {
        Inbound::Message { text, request_id } => {
            if !check_request_id(&request_id) {
                return Err(chat.refused(refuse(StatusCode::BAD_REQUEST, "invalid", "requestId: malformed")));
            }
            admit_text(chat, tenant, contact, &text)?;
            let stored = chat.digital.append(tenant, contact, &customer_message(text, request_id.clone())).await?;
            Ok(Reply::Stored(request_id, stored.sequence))
        }
        Inbound::Typing { active } => {
            chat.digital.typing(tenant, contact, Party::Customer, active).await?;
            Ok(Reply::Nothing)
        }
        Inbound::Delivered { sequence } | Inbound::Read { sequence } if sequence < 0 => {
            Err(chat.refused(refuse(StatusCode::BAD_REQUEST, "invalid", "sequence: must not be negative")))
        }
        Inbound::Delivered { sequence } => {
            chat.digital.mark(tenant, contact, Party::Customer, sequence, Status::Delivered).await?;
            Ok(Reply::Nothing)
        }
        Inbound::Read { sequence } => {
            chat.digital.mark(tenant, contact, Party::Customer, sequence, Status::Read).await?;
            Ok(Reply::Nothing)
        }
        Inbound::Leave {} => {
            chat.leave(tenant, contact).await?;
            Ok(Reply::Left)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prechat_form_gives_normal_identities_or_says_what_is_wrong() {
        let ids = prechat_identities(" +34 600 11 22 33 ", "Ana@Example.COM").unwrap();
        assert_eq!(
            ids.iter().map(|i| (i.kind, i.value.as_str())).collect::<Vec<_>>(),
            [(crm::IdentityKind::Phone as i32, "+34600112233"), (crm::IdentityKind::Email as i32, "ana@example.com")]
        );
        assert!(prechat_identities("", "").unwrap().is_empty());
        assert!(prechat_identities("600112233", "").unwrap_err().starts_with("phone:"));
        assert!(prechat_identities("", "not-an-email").unwrap_err().starts_with("email:"));
        assert!(prechat_identities(&"9".repeat(5000), "").unwrap_err().starts_with("phone:"));
    }

    #[test]
    fn frames_parse_or_are_refused() {
        let m: Inbound = serde_json::from_str(r#"{"type":"message","text":"hola","requestId":"r1"}"#).unwrap();
        assert!(matches!(m, Inbound::Message { ref text, ref request_id } if text == "hola" && request_id == "r1"));
        assert!(matches!(
            serde_json::from_str(r#"{"type":"read","sequence":3}"#).unwrap(),
            Inbound::Read { sequence: 3 }
        ));
        for bad in [r#"{"type":"shout"}"#, r#"{"type":"read"}"#, r#"{"type":"message","text":"x","extra":1}"#, "[]", ""]
        {
            assert!(serde_json::from_str::<Inbound>(bad).is_err(), "{bad}");
        }
        let ack = serde_json::to_string(&Outbound::Ack { request_id: "r1", sequence: 4 }).unwrap();
        assert_eq!(ack, r#"{"type":"ack","requestId":"r1","sequence":4}"#);
    }

    #[test]
    fn keys_and_visitor_ids() {
        assert!(same_key("abcdefghijklmnop", "abcdefghijklmnop"));
        assert!(!same_key("abcdefghijklmnop", "abcdefghijklmnoq") && !same_key("abc", "abcd"));
        assert!(is_visitor_id("v-0123456789") && !is_visitor_id("short") && !is_visitor_id("v 0123456789"));
    }
}
