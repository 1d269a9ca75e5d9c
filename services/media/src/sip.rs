//! The thin adapter over the SIP stack (`rsipstack`, pinned to 0.7.14). Everything that
//! names the stack's types lives here, so its next API change touches this file only: the
//! rest of the crate sees [`SipServer`], [`Incoming`] requests with the few fields it reads,
//! [`ServerCall`] for an INVITE's server transaction, [`Dialer`] and [`Ringing`] for the
//! INVITEs media sends (to agents' phones), and [`Answered`] for the dialog of a call once
//! answered, either way. A REGISTER is read into the registrar's
//! [`crate::registrar::policy::Register`] ([`Incoming::register`]), its `Authorization`
//! split by the stack's own tokenizer, and answered with the registrar's headers
//! ([`Incoming::reply_with`]).
//!
//! Requests inside a dialog (the ACK of a `200`, a BYE, an INFO) go to their dialog in the
//! stack's dialog layer without reaching the front door; one for no known dialog gets
//! `481`, an ACK for none is dropped.
//!
//! The stack parses messages, runs the RFC 3261 transaction layer (retransmissions, the
//! `200` to a CANCEL, absorbing the ACK of a failure response) and the UDP, TCP and (with
//! [`TlsSettings`]) TLS transports; a TLS listener's certificate files are watched and a
//! rotated certificate is used for the next handshakes without a restart. A datagram it cannot parse at all is dropped by it (RFC 3261 §18.3: without
//! a Via there is nowhere to answer); a request it parses but whose headers we cannot read
//! is answered `400` by [`ServerCall::parse`]'s caller.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rsipstack::dialog::dialog::{Dialog, DialogState, DialogStateReceiver, TerminatedReason, TransactionHandle};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{HeadersExt, Method, StatusCode};
use rsipstack::transaction::{Endpoint, EndpointBuilder, Transaction, TransactionReceiver};
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::tls::{ReloadableCertResolver, TlsConfig, TlsListenerConnection};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::TransportLayer;
use tokio_util::sync::CancellationToken;

use crate::admission::Call;
use crate::error::Error;
use crate::registrar::digest::Credentials;
use crate::registrar::policy::{Contacts, Register};

/// SIP over TLS: where it listens, and the PEM files of its certificate chain and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub addr: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// How often the certificate files are looked at for a rotation.
pub const TLS_RELOAD_EVERY: Duration = Duration::from_secs(5);

impl TlsSettings {
    /// The files' contents, checked to be a certificate chain and its private key.
    pub fn read(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let (cert, key) = (read(&self.cert_file)?, read(&self.key_file)?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        ReloadableCertResolver::new(&cert, &key, provider).map_err(|e| {
            format!("{} and {}: not a certificate and its key ({e})", self.cert_file.display(), self.key_file.display())
        })?;
        Ok((cert, key))
    }

    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&self.cert_file)?, m(&self.key_file)?))
    }
}

/// The listening side: UDP and TCP on one address, and TLS on another if asked.
pub struct SipServer {
    endpoint: Endpoint,
    dialogs: Arc<DialogLayer>,
    incoming: TransactionReceiver,
    cancel: CancellationToken,
    local: SocketAddr,
    tls: Option<(TlsSettings, TlsListenerConnection)>,
}

impl std::fmt::Debug for SipServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipServer").field("local", &self.local).finish()
    }
}

impl SipServer {
    /// Binds UDP on `addr` (port 0 picks one) and TCP on the same port, and TLS as `tls`
    /// says (its files read and checked now: a bad certificate stops the start).
    pub async fn bind(addr: SocketAddr, tls: Option<&TlsSettings>) -> Result<Self, Error> {
        // rustls is built with ring only: make it the process's provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cancel = CancellationToken::new();
        let transport = TransportLayer::new(cancel.child_token());
        let udp = UdpConnection::create_connection(addr, None, Some(cancel.child_token()))
            .await
            .map_err(|e| Error::Bind(addr, e.to_string()))?;
        let local = udp.get_addr().get_socketaddr().map_err(|e| Error::Bind(addr, e.to_string()))?;
        transport.add_transport(udp.into());
        // The TCP listener binds when the endpoint starts serving; a taken TCP port shows
        // as a failed SIP check rather than here.
        let tcp = TcpListenerConnection::new(local, None).await.map_err(|e| Error::Bind(local, e.to_string()))?;
        transport.add_transport(tcp.into());
        let tls = match tls {
            Some(t) => {
                let (cert, key) = t.read().map_err(|e| Error::Bind(t.addr, e))?;
                let config = TlsConfig { cert: Some(cert), key: Some(key), ..Default::default() };
                let listener = TlsListenerConnection::new(t.addr, None, config)
                    .await
                    .map_err(|e| Error::Bind(t.addr, e.to_string()))?;
                transport.add_transport(listener.clone().into());
                Some((t.clone(), listener))
            }
            None => None,
        };
        let endpoint = EndpointBuilder::new()
            .with_user_agent(concat!("centralita-media/", env!("CARGO_PKG_VERSION")))
            .with_transport_layer(transport)
            .with_cancel_token(cancel.clone())
            .build();
        let incoming = endpoint.incoming_transactions().map_err(|e| Error::Bind(local, e.to_string()))?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        Ok(Self { endpoint, dialogs, incoming, cancel, local, tls })
    }

    /// The TLS listener's address, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|(t, _)| t.addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What sends INVITEs from this server's address.
    pub fn dialer(&self) -> Dialer {
        Dialer { dialogs: self.dialogs.clone() }
    }

    /// Starts the stack (transports, timers) in the background and returns the stream of
    /// requests that start a server transaction, and a handle that stops the stack.
    pub fn start(self) -> (Requests, Stopper) {
        let endpoint = self.endpoint;
        tokio::spawn(async move { endpoint.serve().await });
        if let Some((settings, listener)) = self.tls {
            tokio::spawn(watch_certificate(settings, listener, self.cancel.clone()));
        }
        (Requests { incoming: self.incoming, dialogs: self.dialogs }, Stopper(self.cancel))
    }
}

/// Uses the certificate files again whenever they change (a rotated Kubernetes Secret, a
/// renewed certificate), for the handshakes that follow; connections already up keep theirs.
/// A rotation that does not read as a certificate and its key is logged and the current
/// certificate kept.
async fn watch_certificate(settings: TlsSettings, listener: TlsListenerConnection, cancel: CancellationToken) {
    let mut stamp = settings.stamp();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(TLS_RELOAD_EVERY) => {}
        }
        let now = settings.stamp();
        if now.is_none() || now == stamp {
            continue;
        }
        match settings.read() {
            Ok((cert, key)) => match listener.reload_tls_config(cert, key).await {
                Ok(()) => {
                    stamp = now;
                    tracing::info!(cert = %settings.cert_file.display(), "SIP TLS certificate reloaded");
                }
                Err(e) => tracing::warn!(error = %e, "SIP TLS certificate not reloaded; the current one stays"),
            },
            // A Secret being rewritten can be read half-way: the next look tries again.
            Err(e) => tracing::warn!(error = %e, "SIP TLS certificate not reloaded; the current one stays"),
        }
    }
}

/// Stops the stack: its sockets close and its transactions end.
#[derive(Debug, Clone)]
pub struct Stopper(CancellationToken);

impl Stopper {
    pub fn stop(&self) {
        self.0.cancel();
    }
}

pub struct Requests {
    incoming: TransactionReceiver,
    dialogs: Arc<DialogLayer>,
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests").finish_non_exhaustive()
    }
}

impl Requests {
    /// The next request outside a dialog; those inside one are handled by their dialog.
    pub async fn next(&mut self) -> Option<Incoming> {
        loop {
            let mut tx = self.incoming.recv().await?;
            let in_dialog = tx.original.to_header().ok().and_then(|t| t.tag().ok().flatten()).is_some();
            if !in_dialog && tx.original.method != Method::Ack {
                return Some(Incoming { tx, dialogs: self.dialogs.clone() });
            }
            match self.dialogs.match_dialog(&tx) {
                Some(Dialog::Invite(mut dialog)) => {
                    tokio::spawn(async move {
                        if let Err(e) = dialog.handle(&mut tx).await {
                            tracing::debug!(error = %e, "in-dialog request");
                        }
                    });
                }
                _ if tx.original.method == Method::Ack => {}
                _ => {
                    tokio::spawn(async move {
                        let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                    });
                }
            }
        }
    }
}

/// A request that starts a server transaction outside any dialog.
pub struct Incoming {
    tx: Transaction,
    dialogs: Arc<DialogLayer>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").field("method", &self.tx.original.method.to_string()).finish()
    }
}

/// The request kinds the front door tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Invite,
    Options,
    Register,
    Other,
}

/// Headers the registrar adds to its answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extra {
    /// `WWW-Authenticate: Digest …` (the value).
    WwwAuthenticate(String),
    MinExpires(u32),
    /// `Contact: <uri>;expires=n`.
    Contact {
        uri: String,
        expires: u32,
    },
}

impl Incoming {
    pub fn kind(&self) -> Kind {
        match self.tx.original.method {
            Method::Invite => Kind::Invite,
            Method::Options => Kind::Options,
            Method::Register => Kind::Register,
            _ => Kind::Other,
        }
    }

    /// Answers with a final status and the registrar's headers.
    pub async fn reply_with(mut self, code: u16, reason: &str, extras: Vec<Extra>) {
        use rsipstack::sip::headers::untyped;
        let headers = extras
            .into_iter()
            .map(|e| match e {
                Extra::WwwAuthenticate(v) => rsipstack::sip::Header::WwwAuthenticate(untyped::WwwAuthenticate::new(v)),
                Extra::MinExpires(n) => rsipstack::sip::Header::MinExpires(untyped::MinExpires::new(n.to_string())),
                Extra::Contact { uri, expires } => {
                    rsipstack::sip::Header::Contact(untyped::Contact::new(format!("<{uri}>;expires={expires}")))
                }
            })
            .collect();
        let status = StatusCode::Other(code, reason.to_owned());
        if let Err(e) = self.tx.reply_with(status, headers, None).await {
            tracing::debug!(error = %e, code, "could not answer a REGISTER");
            return;
        }
        tokio::spawn(async move { while self.tx.receive().await.is_some() {} });
    }

    /// Reads a REGISTER for the registrar, or says why it is malformed.
    pub fn register(&self) -> Result<Register, String> {
        read_register(&self.tx.original)
    }

    /// The address the request came from.
    pub fn source(&self) -> Option<SocketAddr> {
        self.tx.connection.as_ref()?.get_remote_addr()?.get_socketaddr().ok()
    }

    /// Answers with a final status and ends the transaction in the background.
    pub async fn reply(self, code: u16, reason: &str) {
        ServerCall { tx: self.tx, dialogs: self.dialogs }.finish(code, reason).await;
    }

    /// Takes the INVITE's server transaction, with what the front door reads of it, or why
    /// the request is malformed.
    pub fn into_call(self) -> (ServerCall, Result<Call, String>) {
        let call = read_call(&self.tx);
        (ServerCall { tx: self.tx, dialogs: self.dialogs }, call)
    }
}

/// Seconds a `503` asks the client to wait before it tries this replica again (RFC 3261
/// 21.5.4): every `503` here means "not now" (draining, an INVITE flood from the source, no
/// media port, sessions unreachable); a carrier or SBC retries elsewhere or later instead of
/// at once.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// The `Retry-After` a final response of `code` carries, if any.
pub fn retry_after(code: u16) -> Option<u32> {
    (code == 503).then_some(RETRY_AFTER_SECONDS)
}

/// What the registrar reads of a REGISTER the stack parsed, or why it cannot.
fn read_register(req: &rsipstack::sip::Request) -> Result<Register, String> {
    let domain = req.uri().host().to_string().to_ascii_lowercase();
    let to = req.to_header().map_err(|_| "no To header")?;
    let to_uri = to.uri().map_err(|_| "unreadable To header")?;
    let to_user = to_uri.user().map(str::to_owned);
    let to_host = to_uri.host().to_string();
    req.call_id_header().map_err(|_| "no Call-ID header")?;
    let mut contacts = Vec::new();
    for h in req.contact_headers() {
        let list = rsipstack::sip::headers::typed::Contact::parse_header_list(h.value())
            .map_err(|_| "unreadable Contact header")?;
        contacts.extend(list);
    }
    let star = |c: &rsipstack::sip::headers::typed::Contact| matches!(&c.uri.scheme, Some(rsipstack::sip::Scheme::Other(s)) if s == "*");
    let contacts = match contacts.as_slice() {
        [] => Contacts::None,
        [one] if star(one) => Contacts::Star,
        [one] => {
            let expires = one
                .params
                .iter()
                .find_map(|p| match p {
                    rsipstack::sip::Param::Expires(e) => Some(e.to_string()),
                    _ => None,
                })
                .map(|e| e.trim().parse::<u32>().map_err(|_| "unreadable Contact expires"))
                .transpose()?;
            Contacts::One { uri: one.uri.to_string(), expires }
        }
        many if many.iter().any(star) => return Err("Contact: * with other contacts".into()),
        _ => Contacts::Many,
    };
    let expires = req
        .expires_header()
        .map(|e| e.value().trim().parse::<u32>().map_err(|_| "unreadable Expires header"))
        .transpose()?;
    let credentials = req.authorization_header().map(|a| credentials_of(a.value()));
    Ok(Register { domain, to_user, to_host, contacts, expires, credentials })
}

/// Digest credentials of an `Authorization` or `Proxy-Authorization` header's value.
fn credentials_of(value: &str) -> Result<Credentials, crate::registrar::digest::CredentialsError> {
    let tok = rsipstack::sip::headers::typed::tokenizers::AuthTokenizer::parse(value)
        .map_err(|_| crate::registrar::digest::CredentialsError::Unreadable)?;
    let params: Vec<(String, String)> = tok.params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Credentials::from_params(tok.scheme, &params)
}

fn read_call(tx: &Transaction) -> Result<Call, String> {
    let source: IpAddr = tx
        .connection
        .as_ref()
        .and_then(|c| c.get_remote_addr())
        .and_then(|a| a.get_socketaddr().ok())
        .map(|a| a.ip())
        .ok_or("no source address")?;
    read_invite(&tx.original, source)
}

/// What the front door reads of an INVITE the stack parsed, from `source`, or why it cannot.
fn read_invite(req: &rsipstack::sip::Request, source: IpAddr) -> Result<Call, String> {
    let from = req.from_header().map_err(|_| "no From header")?;
    let from_uri = from.uri().map_err(|_| "unreadable From header")?;
    from.tag().map_err(|_| "unreadable From tag")?.ok_or("From has no tag")?;
    let to = req.to_header().map_err(|_| "no To header")?;
    to.uri().map_err(|_| "unreadable To header")?;
    to.tag().map_err(|_| "unreadable To tag")?;
    req.call_id_header().map_err(|_| "no Call-ID header")?;
    let contact = req.contact_header().map_err(|_| "no Contact header")?;
    rsipstack::sip::headers::typed::Contact::parse(contact.value()).map_err(|_| "unreadable Contact header")?;
    let caller = user_of(&from_uri).ok_or("the From URI has no user part")?;
    let called = user_of(req.uri()).ok_or("the Request-URI has no user part")?;
    // A trunk's digest credentials (RFC 3261 §22.3), read only: the front door checks them.
    let credentials = req.headers.iter().find_map(|h| match h {
        rsipstack::sip::Header::ProxyAuthorization(p) => Some(credentials_of(p.value())),
        _ => None,
    });
    Ok(Call { called, caller, source, credentials })
}

/// The user part of a `sip:`, `sips:` or `tel:` URI.
fn user_of(uri: &rsipstack::sip::Uri) -> Option<String> {
    use rsipstack::sip::Scheme;
    match &uri.scheme {
        Some(Scheme::Sip) | Some(Scheme::Sips) => uri.user().filter(|u| !u.is_empty()).map(str::to_owned),
        Some(Scheme::Other(s)) if s.eq_ignore_ascii_case("tel") => Some(uri.host().to_string()),
        _ => None,
    }
}

/// An INVITE's server transaction, held by the task of its call until it is answered
/// ([`ServerCall::answer`]) or refused ([`ServerCall::finish`]).
pub struct ServerCall {
    tx: Transaction,
    dialogs: Arc<DialogLayer>,
}

impl std::fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCall").field("key", &self.tx.key.to_string()).finish()
    }
}

impl ServerCall {
    /// The SIP Call-ID, for logs.
    pub fn call_id(&self) -> String {
        self.tx.original.call_id_header().map(|c| c.value().to_owned()).unwrap_or_default()
    }

    /// The INVITE's body (the SDP offer), as received.
    pub fn offer(&self) -> &[u8] {
        &self.tx.original.body
    }

    /// Whether the INVITE's body is declared as SDP (no `Content-Type` with a body is read
    /// as SDP too, as many trunks omit it).
    pub fn offer_is_sdp(&self) -> bool {
        match self.tx.original.header_value("content-type") {
            Some(ct) => ct.to_ascii_lowercase().starts_with("application/sdp"),
            None => true,
        }
    }

    pub async fn trying(&mut self) -> Result<(), Error> {
        self.tx.reply(StatusCode::Trying).await.map_err(|e| Error::Sip(e.to_string()))
    }

    /// Sends a final failure status (`487` after a CANCEL, a refusal) and keeps the
    /// transaction running in the background until it ends, so the stack retransmits the
    /// response until the caller's ACK.
    pub async fn finish(mut self, code: u16, reason: &str) {
        let status = StatusCode::Other(code, reason.to_owned());
        let headers = retry_after(code)
            .map(|s| {
                rsipstack::sip::Header::RetryAfter(rsipstack::sip::headers::untyped::RetryAfter::new(s.to_string()))
            })
            .into_iter()
            .collect();
        if let Err(e) = self.tx.reply_with(status, headers, None).await {
            tracing::debug!(error = %e, code, "could not send a final response");
            return;
        }
        tokio::spawn(async move { while self.tx.receive().await.is_some() {} });
    }

    /// Asks a trunk for its digest credentials: `407` with `Proxy-Authenticate: challenge`
    /// (RFC 3261 §22.3); the trunk's next INVITE carries them.
    pub async fn challenge(mut self, challenge: String) {
        let status = StatusCode::Other(407, "Proxy Authentication Required".to_owned());
        let header = rsipstack::sip::Header::ProxyAuthenticate(
            rsipstack::sip::headers::untyped::ProxyAuthenticate::new(challenge),
        );
        if let Err(e) = self.tx.reply_with(status, vec![header], None).await {
            tracing::debug!(error = %e, "could not send a 407");
            return;
        }
        tokio::spawn(async move { while self.tx.receive().await.is_some() {} });
    }

    /// Answers the call `200 OK` with the SDP `answer`: the call is now a dialog of the
    /// stack, which absorbs the ACK, answers a late CANCEL and a BYE, and reports them on
    /// the returned [`Answered`]. A CANCEL already received ends it at once (`487`).
    pub fn answer(self, answer: String) -> Result<Answered, Error> {
        let dialogs = self.dialogs;
        let (states_tx, states) = dialogs.new_dialog_state_channel();
        let contact = dialogs.build_local_contact(None, None).ok();
        let dialog = dialogs
            .get_or_create_server_invite(&self.tx, states_tx, None, contact)
            .map_err(|e| Error::Sip(e.to_string()))?;
        let mut tx = self.tx;
        let mut handler = dialog.clone();
        tokio::spawn(async move {
            if let Err(e) = handler.handle(&mut tx).await {
                tracing::debug!(error = %e, "INVITE transaction of an answered call");
            }
        });
        let content_type = rsipstack::sip::Header::ContentType("application/sdp".into());
        dialog.accept(Some(vec![content_type]), Some(answer.into_bytes())).map_err(|e| Error::Sip(e.to_string()))?;
        Ok(Answered { dialog, dialogs, states, server: true })
    }
}

/// Sends INVITEs (media as the caller: to an agent's phone).
#[derive(Clone)]
pub struct Dialer {
    dialogs: Arc<DialogLayer>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer").finish_non_exhaustive()
    }
}

/// A step of an INVITE media sent ([`Ringing::progress`]).
#[derive(Debug)]
pub enum Progress {
    /// A provisional answer (180, 183): its status.
    Early(u16),
    Final(Outcome),
}

/// How an INVITE media sent was answered.
#[derive(Debug)]
pub enum Outcome {
    /// `2xx`: the dialog, and the answer's body (SDP).
    Answered(Answered, Vec<u8>),
    /// A final failure status (`486`, `603`, `487` after our CANCEL, `408`...).
    Refused(u16),
    /// No final answer: the transaction failed (unreachable, transport error).
    Failed(String),
}

impl Dialer {
    /// Starts an INVITE to `target` (a `sip:` URI) with the SDP `offer`, from `caller`
    /// (the user part of the From URI: the customer's number, for the phone's display).
    /// `auto_answer` asks the phone to answer by itself: `Call-Info: <target>;answer-after=0`
    /// (the de-facto intercom header of desk phones and softphones) and `Alert-Info: …;
    /// info=alert-autoanswer` (the older one some phones read instead).
    pub fn invite(&self, target: &str, caller: &str, offer: String, auto_answer: bool) -> Result<Ringing, Error> {
        let callee = rsipstack::sip::Uri::try_from(target).map_err(|e| Error::Sip(format!("`{target}`: {e}")))?;
        let contact = self.dialogs.build_local_contact(None, None).map_err(|e| Error::Sip(e.to_string()))?;
        let mut from = contact.clone();
        let user = if caller.is_empty() { "anonymous" } else { caller };
        from.auth = Some(rsipstack::sip::Auth { user: user.to_owned(), password: None });
        let (states_tx, states) = self.dialogs.new_dialog_state_channel();
        let option = InviteOption {
            caller: from,
            callee,
            contact,
            content_type: Some("application/sdp".into()),
            offer: Some(offer.into_bytes()),
            headers: auto_answer.then(|| {
                use rsipstack::sip::headers::untyped;
                vec![
                    rsipstack::sip::Header::CallInfo(untyped::CallInfo::new(format!("<{target}>;answer-after=0"))),
                    rsipstack::sip::Header::AlertInfo(untyped::AlertInfo::new(
                        "<http://127.0.0.1/autoanswer>;info=alert-autoanswer;delay=0",
                    )),
                ]
            }),
            ..Default::default()
        };
        let (dialog, result) =
            self.dialogs.do_invite_async(option, states_tx).map_err(|e| Error::Sip(e.to_string()))?;
        Ok(Ringing { dialog, result: Some(result), states: Some(states), dialogs: self.dialogs.clone(), early: false })
    }
}

/// An INVITE media sent, until its final answer.
pub struct Ringing {
    dialog: InviteDialog,
    result: Option<tokio::task::JoinHandle<InviteAsyncResult>>,
    states: Option<DialogStateReceiver>,
    dialogs: Arc<DialogLayer>,
    /// A provisional answer (180/183) was seen.
    early: bool,
}

impl std::fmt::Debug for Ringing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ringing").field("id", &self.dialog.id().to_string()).finish()
    }
}

impl Ringing {
    /// Waits for the final answer. Cancel-safe: racing it against a CANCEL decision and
    /// calling it again after [`Ringing::cancel`] returns the answer that ended it.
    pub async fn outcome(&mut self) -> Outcome {
        let Some(result) = self.result.as_mut() else { return Outcome::Failed("already answered".into()) };
        let r = result.await;
        self.result = None;
        self.read(r)
    }

    /// The outcome of the INVITE's finished transaction.
    fn read(&mut self, r: Result<InviteAsyncResult, tokio::task::JoinError>) -> Outcome {
        match r {
            Ok(Ok((_, Some(response)))) => {
                let code = u16::from(response.status_code.clone());
                if (200..300).contains(&code) && !self.dialog.state().is_terminated() {
                    let states = self.states.take().unwrap_or_else(|| self.dialogs.new_dialog_state_channel().1);
                    let answered =
                        Answered { dialog: self.dialog.clone(), dialogs: self.dialogs.clone(), states, server: false };
                    Outcome::Answered(answered, response.body)
                } else if (200..300).contains(&code) {
                    // Answered after our CANCEL: the stack ended it with a BYE.
                    Outcome::Refused(487)
                } else {
                    Outcome::Refused(code)
                }
            }
            Ok(Ok((_, None))) => Outcome::Failed("no final response".into()),
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// The SIP Call-ID of the INVITE's dialog.
    pub fn call_id(&self) -> String {
        self.dialog.id().call_id.clone()
    }

    /// The next step of the INVITE: the phone's first provisional answer (180 or 183:
    /// its status, once), or the final answer ([`Ringing::outcome`]). Cancel-safe.
    pub async fn progress(&mut self) -> Progress {
        if !self.early {
            if let (Some(result), Some(states)) = (self.result.as_mut(), self.states.as_mut()) {
                let early = async {
                    while let Some(state) = states.recv().await {
                        if let DialogState::Early(_, response) = state {
                            return Some(u16::from(response.status_code));
                        }
                    }
                    None
                };
                let step = tokio::select! {
                    code = early => code.map(Ok),
                    finished = result => Some(Err(finished)),
                };
                match step {
                    Some(Ok(code)) => {
                        self.early = true;
                        return Progress::Early(code);
                    }
                    Some(Err(finished)) => {
                        self.result = None;
                        return Progress::Final(self.read(finished));
                    }
                    // The states ended: only the final answer is left.
                    None => self.early = true,
                }
            }
        }
        Progress::Final(self.outcome().await)
    }

    /// Gives up on the INVITE: CANCEL (sent once the phone has answered provisionally;
    /// a `2xx` crossing it is ended with a BYE by the stack).
    pub async fn cancel(&self) {
        if let Err(e) = self.dialog.cancel().await {
            tracing::debug!(error = %e, "CANCEL of an INVITE");
        }
    }
}

/// How an answered call's dialog ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    /// The caller sent BYE.
    Bye,
    /// The caller cancelled before the answer reached it (`487` sent).
    Cancelled,
    /// No ACK came for the `200` (the stack sent BYE).
    NoAck,
    /// Media ended it (BYE sent), or the stack stopped.
    Ended,
}

/// The dialog of an answered call (the caller's, or an agent's phone's). Dropping it
/// forgets the dialog in the stack.
pub struct Answered {
    dialog: InviteDialog,
    dialogs: Arc<DialogLayer>,
    states: DialogStateReceiver,
    /// Media answered it (the caller's leg), rather than sent it.
    server: bool,
}

impl std::fmt::Debug for Answered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answered").field("id", &self.dialog.id().to_string()).finish()
    }
}

impl Answered {
    /// Waits for the dialog to end. Cancel-safe (the states queue in a channel).
    pub async fn ended(&mut self) -> Hangup {
        while let Some(state) = self.states.recv().await {
            if let DialogState::Terminated(_, reason) = state {
                return match reason {
                    // The far end's BYE: the caller's to media's server dialog, the phone's
                    // to media's client dialog.
                    TerminatedReason::UacBye if self.server => Hangup::Bye,
                    TerminatedReason::UasBye if !self.server => Hangup::Bye,
                    TerminatedReason::UacCancel => Hangup::Cancelled,
                    TerminatedReason::Timeout => Hangup::NoAck,
                    _ => Hangup::Ended,
                };
            }
        }
        Hangup::Ended
    }

    /// The next thing to happen in the dialog: its end, or a request inside it that media
    /// answers (a re-INVITE or UPDATE, an INFO, a REFER). An in-dialog OPTIONS is answered
    /// `200` here, other requests `405`. Cancel-safe (the states queue in a channel).
    pub async fn next(&mut self) -> DialogEvent {
        while let Some(state) = self.states.recv().await {
            match state {
                DialogState::Terminated(..) => {
                    // The reason is read the way `ended` reads it.
                    return DialogEvent::Ended(self.hangup_of(state));
                }
                DialogState::Updated(_, request, handle)
                | DialogState::Info(_, request, handle)
                | DialogState::Refer(_, request, handle) => {
                    return DialogEvent::Request(Box::new(InDialog { request, handle }));
                }
                DialogState::Options(_, _, handle) => {
                    tokio::spawn(async move { handle.reply(StatusCode::OK).await });
                }
                DialogState::Message(_, _, handle)
                | DialogState::Notify(_, _, handle)
                | DialogState::Publish(_, _, handle) => {
                    tokio::spawn(async move { handle.reply(StatusCode::MethodNotAllowed).await });
                }
                _ => {}
            }
        }
        DialogEvent::Ended(Hangup::Ended)
    }

    fn hangup_of(&self, state: DialogState) -> Hangup {
        match state {
            DialogState::Terminated(_, TerminatedReason::UacBye) if self.server => Hangup::Bye,
            DialogState::Terminated(_, TerminatedReason::UasBye) if !self.server => Hangup::Bye,
            DialogState::Terminated(_, TerminatedReason::UacCancel) => Hangup::Cancelled,
            DialogState::Terminated(_, TerminatedReason::Timeout) => Hangup::NoAck,
            _ => Hangup::Ended,
        }
    }

    /// The SIP Call-ID of the dialog.
    pub fn call_id(&self) -> String {
        self.dialog.id().call_id.clone()
    }

    /// Tells the REFER's sender how the referred transfer went (RFC 3515: a NOTIFY with a
    /// `message/sipfrag` status line, the implicit subscription terminated). Sent in the
    /// background a moment after the REFER's answer (which the stack sends from its own
    /// task: a NOTIFY overtaking it confuses some phones), so the call never waits on it.
    pub fn notify_refer(&self, code: u16) {
        let dialog = self.dialog.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let status = if code == 200 { StatusCode::OK } else { StatusCode::Other(code, String::new()) };
            if let Err(e) = dialog.notify_refer(status, "terminated;reason=noresource").await {
                tracing::debug!(error = %e, "NOTIFY of a REFER");
            }
        });
    }

    /// Ends the call from media's side: BYE to the caller.
    pub async fn hang_up(&self) {
        if let Err(e) = self.dialog.bye().await {
            tracing::debug!(error = %e, "BYE to the caller");
        }
    }
}

/// What happened in an answered call's dialog ([`Answered::next`]).
#[derive(Debug)]
pub enum DialogEvent {
    Ended(Hangup),
    Request(Box<InDialog>),
}

/// The kinds of in-dialog requests media answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InDialogKind {
    /// A re-INVITE: a new SDP offer (or none: media then offers).
    Reinvite,
    /// An UPDATE: a new SDP offer, or none (a session refresh).
    Update,
    Info,
    Refer,
}

/// A request inside an answered call's dialog, until media answers it (dropped without an
/// answer, the stack answers `501`).
pub struct InDialog {
    request: rsipstack::sip::Request,
    handle: TransactionHandle,
}

impl std::fmt::Debug for InDialog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InDialog").field("method", &self.request.method.to_string()).finish()
    }
}

impl InDialog {
    pub fn kind(&self) -> InDialogKind {
        match self.request.method {
            Method::Info => InDialogKind::Info,
            Method::Refer => InDialogKind::Refer,
            Method::Update => InDialogKind::Update,
            _ => InDialogKind::Reinvite,
        }
    }

    /// The request's body, as received.
    pub fn body(&self) -> &[u8] {
        &self.request.body
    }

    /// The `Content-Type` header's value, if any.
    pub fn content_type(&self) -> Option<String> {
        self.request.header_value("content-type")
    }

    /// The value of the header `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        self.request.header_value(name)
    }

    /// The user part of a REFER's `Refer-To` URI (read with the stack's own parser; a
    /// `tel:` URI's number), or why there is none.
    pub fn refer_to_user(&self) -> Result<String, &'static str> {
        let value = self.request.header_value("refer-to").ok_or("no Refer-To header")?;
        let to = rsipstack::sip::headers::typed::Contact::parse(&value).map_err(|_| "unreadable Refer-To header")?;
        user_of(&to.uri).ok_or("the Refer-To URI has no user part")
    }

    /// Answers with a final status and no body.
    pub async fn reply(self, code: u16, reason: &str) {
        let status = if code == 200 { StatusCode::OK } else { StatusCode::Other(code, reason.to_owned()) };
        if self.handle.respond(status, None, None).await.is_err() {
            tracing::debug!(code, "an in-dialog request ended before its answer");
        }
    }

    /// Answers `200 OK` with the SDP `sdp` (an answer to the request's offer, or media's
    /// offer when the request had none).
    pub async fn answer_sdp(self, sdp: String) {
        let content_type = rsipstack::sip::Header::ContentType("application/sdp".into());
        if self.handle.respond(StatusCode::OK, Some(vec![content_type]), Some(sdp.into_bytes())).await.is_err() {
            tracing::debug!("a re-INVITE ended before its answer");
        }
    }
}

impl Drop for Answered {
    fn drop(&mut self) {
        self.dialogs.remove_dialog(&self.dialog.id());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_503_asks_the_client_to_retry_later() {
        assert_eq!(super::retry_after(503), Some(super::RETRY_AFTER_SECONDS));
        for code in [404, 403, 486, 480, 500] {
            assert_eq!(super::retry_after(code), None, "{code}");
        }
    }

    use super::*;

    const REGISTER: &str = "REGISTER sip:acme.example SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK776asdhds\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@acme.example>;tag=456248\r\n\
        To: <sip:alice@acme.example>\r\n\
        Call-ID: 843817637684230@998sdasdh09\r\n\
        CSeq: 1826 REGISTER\r\n\
        Contact: <sip:alice-0x1@127.0.0.1:5062;transport=udp>;expires=120\r\n\
        Expires: 7200\r\n\
        Authorization: Digest username=\"alice\", realm=\"acme.example\", nonce=\"abc\", uri=\"sip:acme.example\", \
        response=\"0123\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"xyz\"\r\n\
        Content-Length: 0\r\n\r\n";

    fn read(text: &str) -> Result<Register, String> {
        let req = rsipstack::sip::Request::try_from(text).map_err(|e| format!("stack: {e}"))?;
        read_register(&req)
    }

    #[test]
    fn a_register_is_read_with_its_contact_expiry_and_credentials_as_sent() {
        let r = read(REGISTER).expect("valid");
        assert_eq!(
            (r.domain.as_str(), r.to_user.as_deref(), r.to_host.as_str()),
            ("acme.example", Some("alice"), "acme.example")
        );
        assert_eq!(r.contacts, Contacts::One { uri: "sip:alice-0x1@127.0.0.1:5062".into(), expires: Some(120) });
        assert_eq!(r.expires, Some(7200));
        let c = r.credentials.expect("present").expect("readable");
        assert_eq!(
            (c.username.as_str(), c.realm.as_str(), c.uri.as_str(), c.nc.as_deref(), c.cnonce.as_deref()),
            ("alice", "acme.example", "sip:acme.example", Some("00000001"), Some("xyz"))
        );
    }

    #[test]
    fn contacts_star_many_none_and_unreadable_headers() {
        let contact = "Contact: <sip:alice-0x1@127.0.0.1:5062;transport=udp>;expires=120\r\n";
        let star = read(&REGISTER.replace(contact, "Contact: *\r\n")).expect("star");
        assert_eq!(star.contacts, Contacts::Star);
        let none = read(&REGISTER.replace(contact, "")).expect("query");
        assert_eq!(none.contacts, Contacts::None);
        let two = read(&REGISTER.replace(contact, "Contact: <sip:a@10.0.0.1>, <sip:a@10.0.0.2>\r\n")).expect("two");
        assert_eq!(two.contacts, Contacts::Many);
        assert!(read(&REGISTER.replace(contact, "Contact: *, <sip:a@10.0.0.2>\r\n")).is_err());
        assert!(read(&REGISTER.replace("Expires: 7200", "Expires: soon")).is_err());
        assert!(read(&REGISTER.replace(";expires=120", ";expires=-1")).is_err());
        let basic = read(&REGISTER.replace("Authorization: Digest", "Authorization: Basic")).expect("read");
        assert!(
            matches!(basic.credentials, Some(Err(crate::registrar::digest::CredentialsError::NotDigest))),
            "not a digest"
        );
        let garbled = REGISTER
            .split("\r\n")
            .map(|l| if l.starts_with("Authorization:") { "Authorization: Digest username" } else { l })
            .collect::<Vec<_>>()
            .join("\r\n");
        let garbled = read(&garbled).expect("read");
        assert!(matches!(garbled.credentials, Some(Err(crate::registrar::digest::CredentialsError::Unreadable))));
        let anonymous =
            read(&REGISTER.replace("To: <sip:alice@acme.example>", "To: <sip:acme.example>")).expect("read");
        assert_eq!(anonymous.to_user, None);
    }

    proptest::proptest! {
        /// Random bytes changed anywhere in a REGISTER, or random header values: whatever
        /// the stack parses is read or refused, never a panic.
        #[test]
        fn mutated_registers_never_panic(
            edits in proptest::collection::vec((0usize..700, proptest::prelude::any::<u8>()), 1..8),
            value in "[ -~]{0,80}",
        ) {
            let mut bytes = REGISTER.as_bytes().to_vec();
            for (at, b) in edits {
                let at = at % bytes.len();
                bytes[at] = b;
            }
            if let Ok(req) = rsipstack::sip::Request::try_from(bytes.as_slice()) {
                let _ = read_register(&req);
            }
            for header in ["Contact: ", "Expires: ", "Authorization: ", "To: "] {
                let line = REGISTER.split("\r\n").find(|l| l.starts_with(header)).unwrap_or_default().to_owned();
                let text = REGISTER.replace(&line, &format!("{header}{value}"));
                if let Ok(req) = rsipstack::sip::Request::try_from(text.as_str()) {
                    let _ = read_register(&req);
                }
            }
        }
    }

    const INVITE: &str = "INVITE sip:+34910000001@127.0.0.1:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
        From: <sip:+34600111222@127.0.0.1:5070>;tag=abc\r\n\
        To: <sip:+34910000001@127.0.0.1:5060>\r\n\
        Call-ID: inv-1@127.0.0.1\r\n\
        CSeq: 1 INVITE\r\n\
        Contact: <sip:+34600111222@127.0.0.1:5070>\r\n\
        Max-Forwards: 70\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 0\r\n\r\n";

    fn invite(text: &str) -> Result<Call, String> {
        let req = rsipstack::sip::Request::try_from(text).map_err(|e| e.to_string())?;
        read_invite(&req, "192.0.2.7".parse().expect("ip"))
    }

    #[test]
    fn an_invite_is_read_and_a_malformed_one_refused() {
        let call = invite(INVITE).expect("read");
        assert_eq!((call.called.as_str(), call.caller.as_str()), ("+34910000001", "+34600111222"));
        assert_eq!(call.source, "192.0.2.7".parse::<IpAddr>().expect("ip"));
        let tel =
            invite(&INVITE.replace("INVITE sip:+34910000001@127.0.0.1:5060", "INVITE tel:+34910000001")).expect("tel");
        assert_eq!(tel.called, "+34910000001");
        assert!(invite(&INVITE.replace(";tag=abc", "")).is_err(), "From without a tag");
        assert!(invite(&INVITE.replace("<sip:+34600111222@127.0.0.1:5070>;", "<sip:127.0.0.1:5070>;")).is_err());
        assert!(invite(&INVITE.replace("INVITE sip:+34910000001@", "INVITE sip:")).is_err(), "no user called");
        let no_contact: String =
            INVITE.split("\r\n").filter(|l| !l.starts_with("Contact:")).collect::<Vec<_>>().join("\r\n");
        assert!(invite(&no_contact).is_err());
    }

    proptest::proptest! {
        /// Random bytes changed anywhere in an INVITE, or random values of the headers the
        /// front door reads: whatever the stack parses is read or refused, never a panic.
        #[test]
        fn mutated_invites_never_panic(
            edits in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..8),
            value in "[ -~]{0,80}",
        ) {
            let mut bytes = INVITE.as_bytes().to_vec();
            for (at, b) in edits {
                let at = at % bytes.len();
                bytes[at] = b;
            }
            if let Ok(req) = rsipstack::sip::Request::try_from(bytes.as_slice()) {
                let _ = read_invite(&req, "192.0.2.7".parse().expect("ip"));
            }
            for header in ["From: ", "To: ", "Contact: ", "Call-ID: ", "INVITE "] {
                let line = INVITE.split("\r\n").find(|l| l.starts_with(header)).unwrap_or_default().to_owned();
                let replaced = if header == "INVITE " { format!("INVITE {value} SIP/2.0") } else { format!("{header}{value}") };
                let text = INVITE.replace(&line, &replaced);
                if let Ok(req) = rsipstack::sip::Request::try_from(text.as_str()) {
                    let _ = read_invite(&req, "192.0.2.7".parse().expect("ip"));
                }
            }
        }
    }
}
