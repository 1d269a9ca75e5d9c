//! The inbound SMTP listener (`CENTRALITA_SMTP_ADDR`). The SMTP state machine is `mailin`'s
//! (commands, their order, dot-unstuffing of DATA); this file reads lines off tokio sockets
//! under limits, feeds them to it, and answers the end of DATA itself, after the message is
//! stored (or refused).
//!
//! Limits and answers:
//! - `RCPT TO` an address no active tenant claims: `550 5.1.1`, before any DATA;
//!   beyond [`SmtpLimits::max_recipients`]: `452 4.5.3`;
//! - a message over [`SmtpLimits::max_message_bytes`]: `552 5.3.4` at the end of DATA
//!   (the excess is read and dropped, never buffered);
//! - a line over [`SmtpLimits::max_line_bytes`]: `500 5.5.2` and the connection closed;
//! - no line for [`SmtpLimits::idle`] or a session longer than [`SmtpLimits::session`]:
//!   `421 4.4.2` and closed; more than [`SmtpLimits::max_connections`] at once: `421 4.7.0`;
//! - unreadable MIME or no sender address: `554 5.6.0`; an executable or script attached:
//!   `554 5.7.1` (the whole message refused);
//! - the store or sessions unavailable: `451 4.3.0` (the sender retries; the Message-ID
//!   makes the retry store it once);
//! - stored (or a redelivery): `250 2.0.0`, only after the commit.
//!
//! No STARTTLS or AUTH here: it takes mail for the tenants' own addresses only (an MX, not
//! a submission port); TLS in front of it is the ingress's.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::{is_email_address, TenantId};
use mailin::{Action, Handler, Response, SessionBuilder};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::email::{Email, Stored};
use super::mail::{self, Refused};

/// The listener's limits.
#[derive(Debug, Clone)]
pub struct SmtpLimits {
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub max_line_bytes: usize,
    pub max_connections: usize,
    pub idle: Duration,
    pub session: Duration,
}

impl Default for SmtpLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 10 * 1024 * 1024,
            max_recipients: 20,
            // RFC 5321 §4.5.3.1.6: 1000 octets a text line; more is taken from lenient
            // senders, up to this.
            max_line_bytes: 4096,
            max_connections: 200,
            idle: Duration::from_secs(60),
            session: Duration::from_secs(600),
        }
    }
}

/// One accepted recipient: the tenant, the address and its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub tenant: TenantId,
    pub address: String,
    pub queue: String,
}

/// The transaction under way, shared by the handler (inside mailin's session) and the
/// connection's loop.
#[derive(Debug, Default)]
struct Envelope {
    sender: String,
    recipients: Vec<Recipient>,
    data: Vec<u8>,
    too_large: bool,
    /// DATA ended: the loop answers it.
    complete: bool,
}

/// mailin's view of the listener: every decision it needs synchronously.
struct Gate {
    email: Arc<Email>,
    limits: SmtpLimits,
    envelope: Arc<Mutex<Envelope>>,
}

impl Gate {
    fn envelope(&self) -> std::sync::MutexGuard<'_, Envelope> {
        self.envelope.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn reply(code: u16, text: &str) -> Response {
    Response::custom(code, text.to_owned())
}

impl Handler for Gate {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        *self.envelope() = Envelope { sender: from.to_ascii_lowercase(), ..Envelope::default() };
        mailin::response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let to = to.trim().trim_start_matches('<').trim_end_matches('>').to_ascii_lowercase();
        if self.envelope().recipients.len() >= self.limits.max_recipients {
            self.email.digital.metrics.smtp("too_many_recipients");
            return reply(452, "4.5.3 Too many recipients");
        }
        let found = is_email_address(&to).then(|| self.email.recipient(&to)).flatten();
        match found {
            Some((tenant, queue)) => {
                let mut e = self.envelope();
                if !e.recipients.iter().any(|r| r.address == to) {
                    e.recipients.push(Recipient { tenant, address: to, queue });
                }
                mailin::response::OK
            }
            None => {
                self.email.digital.metrics.smtp("unknown_recipient");
                reply(550, "5.1.1 No such recipient here")
            }
        }
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, _to: &[String]) -> Response {
        let mut e = self.envelope();
        e.data.clear();
        e.too_large = false;
        e.complete = false;
        mailin::response::START_DATA
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let max = self.limits.max_message_bytes;
        let mut e = self.envelope();
        if e.too_large || e.data.len() + buf.len() > max {
            e.too_large = true;
            e.data = Vec::new();
        } else {
            e.data.extend_from_slice(buf);
        }
        Ok(())
    }

    /// The real answer is the loop's, after the message is stored: mailin moves on to the
    /// next transaction.
    fn data_end(&mut self) -> Response {
        self.envelope().complete = true;
        mailin::response::OK
    }
}

/// Accepts connections until `shutdown`.
pub async fn serve(listener: TcpListener, email: Arc<Email>, limits: SmtpLimits, name: String, shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.wait() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "SMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            email.digital.metrics.smtp("busy");
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = stream.write_all(b"421 4.7.0 Too many connections, try again later\r\n").await;
            });
            continue;
        };
        let (email, limits, name) = (email.clone(), limits.clone(), name.clone());
        tokio::spawn(async move {
            if let Err(e) = session(stream, peer, email, limits, &name).await {
                tracing::debug!(peer = %peer, error = %e, "SMTP session ended with an error");
            }
            drop(slot);
        });
    }
}

/// How reading a line went.
enum Line {
    Got(Vec<u8>),
    Eof,
    TooLong,
    TimedOut,
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R, max: usize, until: Instant) -> Line {
    let mut buf = Vec::new();
    let mut limited = reader.take(max as u64 + 1);
    match tokio::time::timeout_at(until, limited.read_until(b'\n', &mut buf)).await {
        Err(_) => Line::TimedOut,
        Ok(Err(_)) | Ok(Ok(0)) => Line::Eof,
        Ok(Ok(_)) if !buf.ends_with(b"\n") => {
            if buf.len() > max {
                Line::TooLong
            } else {
                Line::Eof
            }
        }
        Ok(Ok(_)) => {
            // Lenient with bare LF: mailin expects CRLF.
            if !buf.ends_with(b"\r\n") {
                buf.pop();
                buf.extend_from_slice(b"\r\n");
            }
            Line::Got(buf)
        }
    }
}

fn write(out: &mut Vec<u8>, r: &Response) {
    let _ = r.write_to(out);
}

async fn session(
    stream: TcpStream,
    peer: SocketAddr,
    email: Arc<Email>,
    limits: SmtpLimits,
    name: &str,
) -> std::io::Result<()> {
    let (read, mut out) = stream.into_split();
    let mut reader = BufReader::new(read);
    let envelope = Arc::new(Mutex::new(Envelope::default()));
    let gate = Gate { email: email.clone(), limits: limits.clone(), envelope: envelope.clone() };
    let mut smtp = SessionBuilder::new(name).build(peer.ip(), gate);
    let mut buf = Vec::new();
    write(&mut buf, &smtp.greeting());
    out.write_all(&buf).await?;
    let end = Instant::now() + limits.session;
    let metrics = &email.digital.metrics;
    loop {
        let until = (Instant::now() + limits.idle).min(end);
        let line = match read_line(&mut reader, limits.max_line_bytes, until).await {
            Line::Got(l) => l,
            Line::Eof => return Ok(()),
            Line::TooLong => {
                metrics.smtp("line_too_long");
                out.write_all(b"500 5.5.2 Line too long\r\n").await?;
                return Ok(());
            }
            Line::TimedOut => {
                metrics.smtp("timeout");
                out.write_all(b"421 4.4.2 Timeout, closing connection\r\n").await?;
                return Ok(());
            }
        };
        let response = smtp.process(&line);
        let complete = {
            let mut e = envelope.lock().unwrap_or_else(|p| p.into_inner());
            if e.complete {
                Some(std::mem::take(&mut *e))
            } else {
                None
            }
        };
        let mut buf = Vec::new();
        if let Some(e) = complete {
            let (code, text) = deliver(&email, e).await;
            let _ = write!(buf, "{code} {text}\r\n");
            out.write_all(&buf).await?;
            continue;
        }
        match response.action {
            Action::NoReply => {}
            Action::Reply => {
                write(&mut buf, &response);
                out.write_all(&buf).await?;
            }
            Action::Close | Action::UpgradeTls => {
                write(&mut buf, &response);
                out.write_all(&buf).await?;
                return Ok(());
            }
        }
    }
}

/// The answer to the end of DATA: the message stored for every tenant it is addressed to,
/// or refused.
async fn deliver(email: &Email, e: Envelope) -> (u16, String) {
    let metrics = &email.digital.metrics;
    if e.too_large {
        metrics.smtp("too_large");
        return (552, "5.3.4 Message too big".into());
    }
    let m = match mail::parse(&e.data, &e.sender) {
        Ok(m) => m,
        Err(Refused::Forbidden(name)) => {
            metrics.smtp("forbidden_attachment");
            let name: String = name.chars().filter(|c| !c.is_control()).take(80).collect();
            return (554, format!("5.7.1 Attachment type not accepted: {name}"));
        }
        Err(Refused::Malformed) | Err(Refused::NoSender) => {
            metrics.smtp("malformed");
            return (554, "5.6.0 Message not readable or without a sender address".into());
        }
    };
    // One copy per tenant, in the queue of the first of its addresses named.
    let mut done: Vec<&TenantId> = Vec::new();
    let mut stored = false;
    for r in &e.recipients {
        if done.contains(&&r.tenant) {
            continue;
        }
        done.push(&r.tenant);
        match email.receive(&r.tenant, &r.address, &r.queue, &m, &e.data).await {
            Ok(Stored::New(contact)) => {
                tracing::info!(tenant = %r.tenant, contact, "email stored");
                stored = true;
            }
            Ok(Stored::Duplicate) => {}
            Err(err) => {
                tracing::warn!(tenant = %r.tenant, error = %err, "email not taken");
                metrics.smtp("unavailable");
                return (451, "4.3.0 Temporary failure, try again later".into());
            }
        }
    }
    metrics.smtp(if stored { "stored" } else { "duplicate" });
    (250, "2.0.0 OK".into())
}
