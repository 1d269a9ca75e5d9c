//! The **digital role** of media: conversations of digital contacts (web chat so far),
//! stored in PostgreSQL (schema `media`), served to agents over gRPC and to customers over
//! the web chat front door.
//!
//! Stateless: every replica reads and writes the same store, so any replica serves any
//! conversation. Sessions stays the owner of the contact: the role creates chat contacts
//! through its API and asks it, on every agent call, who holds a contact.
//!
//! # Layout
//! - `model`: the plain types and pure rules (text limits, the delivery-status lattice);
//! - `access`: who may use a conversation (pure);
//! - `schema`, `store`: the migrations and every query, with the outbox of events;
//! - `follow`: one party following a conversation from a sequence (resume without loss);
//! - `contacts`: the client of sessions;
//! - `api`: `centralita.media.v1.ConversationService` for agents and supervisors;
//! - `erasure`: CRM's customer erasures carried out on conversations (`StoreErased` for
//!   store `media`); `retention`: the sweeper of conversations older than the tenant's
//!   `dataRetentionDays` (`CENTRALITA_MEDIA_SWEEP_INTERVAL`) and the follower recording
//!   when digital contacts end;
//! - `sms`: SMS through Twilio: the webhooks (inbound, status) and outbound sends;
//! - `smtp`: the inbound SMTP listener (mailin's state machine, our limits); `mail`: email,
//!   pure (MIME read with mail-parser, attachments rule, threading and reply headers);
//!   `email`: inbound mail into conversations and replies through the tenant's relay;
//! - `transcripts`: closed digital contacts' conversations handed to recording when the
//!   tenant keeps transcripts (the agent's recording pauses left out);
//! - `whatsapp`: WhatsApp through Meta's Cloud API: the webhook (handshake, messages,
//!   statuses) and outbound sends, with the 24-hour window; `meta`: its webhooks, pure (the
//!   `X-Hub-Signature-256` check, the JSON, the window);
//! - `outbound`: an agent's message posted to a provider with retries, then kept or failed;
//!   `provider`: what the provider adapters share on the way in (client, Secrets, refusals,
//!   the customer's open conversation);
//! - `telegram`: Telegram through the Bot API: the webhook (secret token) and outbound
//!   sends; `botapi`: its updates and `sendMessage`, pure;
//! - `twilio`: SMS webhooks, pure: the `X-Twilio-Signature` check, the forms, opt-out keywords;
//! - `webchat`: the customers' front door (HTTP and WebSocket), with `limits` (its rate);
//! - `wire`: conversions to the wire types.

pub mod access;
pub mod api;
pub mod attachments;
pub mod botapi;
pub mod contacts;
pub mod email;
pub mod erasure;
pub mod follow;
pub mod limits;
pub mod mail;
pub mod messaging;
pub mod meta;
pub mod model;
pub mod outbound;
pub mod pages;
pub mod provider;
pub mod retention;
pub mod schema;
pub mod sms;
pub mod smtp;
pub mod store;
pub mod telegram;
pub mod transcripts;
pub mod twilio;
pub mod webchat;
pub mod whatsapp;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use centralita_platform::bus::Producer;
use centralita_platform::error::Error;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use deadpool_postgres::Pool;
use tokio::sync::Notify;

use crate::metrics::DigitalMetrics;
use follow::Hub;
use model::{Message, NewMessage, Status};
use store::Party;

/// The digital role's shared state: the store, the followers' hub and sessions.
#[derive(Debug)]
pub struct Digital {
    pub pool: Pool,
    pub hub: Hub,
    pub contacts: contacts::Contacts,
    pub metrics: Arc<DigitalMetrics>,
    /// Wakes the outbox relay after a write.
    pub outbox: Arc<Notify>,
}

impl Digital {
    /// Stores a message; a repeated `request_id` returns the one stored before.
    pub async fn append(&self, tenant: &TenantId, contact: &str, m: &NewMessage) -> Result<Message, Error> {
        Ok(self.append_new(tenant, contact, m).await?.0)
    }

    /// Stores a message; and whether it was stored now (false: a repeated `request_id`).
    pub async fn append_new(&self, tenant: &TenantId, contact: &str, m: &NewMessage) -> Result<(Message, bool), Error> {
        let (stored, created) = store::append(&self.pool, tenant, contact, m)
            .await?
            .ok_or_else(|| Error::NotFound(format!("conversation of contact {contact}")))?;
        if created {
            self.metrics.message_stored(&m.sender);
            self.written(tenant, contact);
        }
        Ok((stored, created))
    }

    /// `party` received or read the other party's messages up to `sequence`.
    pub async fn mark(
        &self,
        tenant: &TenantId,
        contact: &str,
        party: Party,
        sequence: i64,
        report: Status,
    ) -> Result<i64, Error> {
        let upto = store::mark(&self.pool, tenant, contact, party, sequence, report)
            .await?
            .ok_or_else(|| Error::NotFound(format!("conversation of contact {contact}")))?;
        self.written(tenant, contact);
        Ok(upto)
    }

    pub async fn typing(&self, tenant: &TenantId, contact: &str, party: Party, active: bool) -> Result<(), Error> {
        if !store::set_typing(&self.pool, tenant, contact, party, active).await? {
            return Err(Error::NotFound(format!("conversation of contact {contact}")));
        }
        self.written(tenant, contact);
        Ok(())
    }

    fn written(&self, tenant: &TenantId, contact: &str) {
        self.hub.touch(tenant, contact);
        self.outbox.notify_one();
    }
}

/// Wakes this replica's followers of every conversation written anywhere: LISTENs on
/// [`store::NOTIFY_CHANNEL`] over a connection of its own, reconnecting after a second when
/// it drops (and then waking every follower, since notifications may have been missed).
pub async fn listen(url: String, digital: Arc<Digital>, shutdown: Shutdown) {
    use futures::StreamExt as _;
    use tokio_postgres::AsyncMessage;
    loop {
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                let query = format!("LISTEN {}", store::NOTIFY_CHANNEL);
                let listen = client.batch_execute(&query);
                tokio::pin!(listen);
                let mut listening = false;
                loop {
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        r = &mut listen, if !listening => match r {
                            Ok(()) => {
                                listening = true;
                                digital.hub.touch_all();
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot LISTEN for conversation writes");
                                break;
                            }
                        },
                        m = messages.next() => match m {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                if let Some((t, contact)) = n.payload().split_once('/') {
                                    if let Ok(tenant) = TenantId::parse(t) {
                                        digital.hub.touch(&tenant, contact);
                                    }
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "conversation notifications dropped; reconnecting");
                                break;
                            }
                            None => break,
                        },
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect for conversation notifications; retrying"),
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

pub use centralita_platform::db::outbox::relay_once;

/// Wires the digital role onto the runtime: the `media` schema (migrated in the
/// background), the outbox relay, `ConversationService` and the web chat front door on
/// `webchat`. Without a signing key media can neither ask sessions about contacts nor sign
/// visitor tokens: the role stays off and its readiness check says why.
pub fn start(
    runtime: &mut centralita_platform::server::Runtime,
    config: &crate::Config,
    signer: Option<centralita_platform::auth::Signer>,
    webchat: tokio::net::TcpListener,
    routes: &mut tonic::service::RoutesBuilder,
) -> anyhow::Result<()> {
    use centralita_platform::auth::Authenticated;
    use centralita_platform::config::{ConfigError, PostgresConfig};
    use centralita_proto::media::v1::conversation_service_server::ConversationServiceServer;

    runtime.readiness.register(crate::CHECK_DIGITAL);
    let Some(signer) = signer else {
        runtime.readiness.set(
            crate::CHECK_DIGITAL,
            false,
            "CENTRALITA_JWT_PRIVATE_KEY_FILE is not set: no chat contacts, digital role off",
        );
        return Ok(());
    };
    let Some(url) = config.service.database_url.clone() else {
        return Err(ConfigError::new("CENTRALITA_DATABASE_URL", "the digital role needs it").into());
    };
    let listen_url = url.expose().clone();
    let pg = PostgresConfig { url, pool_size: config.service.database_pool_size };
    let pool = runtime.postgres(&pg, schema::MIGRATIONS)?;
    let metrics = Arc::new(DigitalMetrics::register(&runtime.metrics));
    let outbox = Arc::new(Notify::new());
    let producer = Producer::new(&config.common.kafka.brokers, Some(runtime.metrics.clone()))?;
    let relay = centralita_platform::db::outbox::relay(
        pool.clone(),
        producer,
        runtime.topics.clone(),
        outbox.clone(),
        runtime.shutdown.clone(),
        "conversations",
    );
    runtime.spawn(relay);
    start_data_protection(runtime, config, &pool, &metrics)?;
    let auth = &config.common.auth;
    let audience = format!("{}{}", auth.audience, webchat::AUDIENCE_SUFFIX);
    let visitor_signer = match &config.service.jwt_private_key_file {
        Some(path) => centralita_platform::auth::Signer::from_file(path, &auth.issuer, &audience)
            .map_err(|m| ConfigError::new("CENTRALITA_JWT_PRIVATE_KEY_FILE", m))?,
        None => return Err(ConfigError::new("CENTRALITA_JWT_PRIVATE_KEY_FILE", "the digital role needs it").into()),
    };
    let verifier = centralita_platform::auth::Verifier::from_file(&auth.public_key_file, &auth.issuer, &audience)
        .map_err(|m| ConfigError::new("CENTRALITA_JWT_PUBLIC_KEY_FILE", m))?;
    let contacts = contacts::Contacts::new(
        &config.service.sessions_endpoint,
        &config.service.crm_endpoint,
        runtime.tls.as_ref(),
        signer,
    )?;
    let digital = Arc::new(Digital { pool, hub: Hub::default(), contacts, metrics, outbox });
    runtime.spawn(listen(listen_url, digital.clone(), runtime.shutdown.clone()));
    start_transcripts(runtime, config, &digital)?;
    runtime.with_health_name("centralita.media.v1.ConversationService");
    let sms = Arc::new(sms::Sms::new(digital.clone(), runtime.registry.clone(), config.service.sms.settings())?);
    let email = Arc::new(email::Email::new(digital.clone(), runtime.registry.clone(), config.service.email.settings()));
    let whatsapp = Arc::new(whatsapp::WhatsApp::new(
        digital.clone(),
        runtime.registry.clone(),
        config.service.whatsapp.settings(&config.service.sms),
    )?);
    let telegram = Arc::new(telegram::Telegram::new(
        digital.clone(),
        runtime.registry.clone(),
        config.service.telegram.settings(&config.service.sms),
    )?);
    let page_settings = config.service.messenger.settings(&config.service.sms);
    let [messenger, instagram] = [messaging::Network::Messenger, messaging::Network::Instagram]
        .map(|n| pages::Pages::new(n, digital.clone(), runtime.registry.clone(), page_settings.clone()).map(Arc::new));
    let (messenger, instagram) = (messenger?, instagram?);
    if let Some(addr) = config.service.email.smtp_addr {
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| anyhow::anyhow!("cannot listen for SMTP on {addr} (CENTRALITA_SMTP_ADDR): {e}"))?;
        tracing::info!(smtp_addr = %listener.local_addr()?, "SMTP listening");
        runtime.spawn(smtp::serve(
            listener,
            email.clone(),
            config.service.email.limits(),
            config.service.email.smtp_hostname.clone(),
            runtime.shutdown.clone(),
        ));
    }
    routes.add_service(Authenticated::new(
        ConversationServiceServer::new(api::Api {
            digital: digital.clone(),
            sms: sms.clone(),
            whatsapp: whatsapp.clone(),
            telegram: telegram.clone(),
            messenger: messenger.clone(),
            instagram: instagram.clone(),
            email,
        })
        // A file of up to 5 MiB in SendAttachment and GetAttachment, with room for the rest.
        .max_decoding_message_size(attachments::MAX_BYTES + 64 * 1024)
        .max_encoding_message_size(attachments::MAX_BYTES + 64 * 1024),
        runtime.authenticator.clone(),
    ));
    let front = Arc::new(webchat::WebChat::new(
        digital,
        runtime.registry.clone(),
        visitor_signer,
        verifier,
        runtime.shutdown.clone(),
    ));
    let local = webchat.local_addr()?;
    let shutdown = runtime.shutdown.clone();
    runtime.spawn(async move {
        let routes = webchat::router(front)
            .merge(sms::router(sms))
            .merge(whatsapp::router(whatsapp))
            .merge(telegram::router(telegram))
            .merge(pages::router(messenger))
            .merge(pages::router(instagram));
        let served = axum::serve(webchat, routes).with_graceful_shutdown(async move {
            shutdown.wait().await;
        });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "web chat front door failed");
        }
    });
    tracing::info!(webchat_addr = %local, "web chat listening");
    runtime.readiness.set(crate::CHECK_DIGITAL, true, format!("web chat on {local}"));
    Ok(())
}

/// The consumer of the contacts topic that hands closed contacts' transcripts to recording
/// (one group for every replica).
fn start_transcripts(
    runtime: &mut centralita_platform::server::Runtime,
    config: &crate::Config,
    digital: &Arc<Digital>,
) -> anyhow::Result<()> {
    use centralita_platform::bus::{Consumer, ConsumerSettings, MemoryDedupe, FETCH_WAIT_DEFAULT};
    use centralita_proto::recording::v1::recording_service_client::RecordingServiceClient;
    let kafka = &config.common.kafka;
    let endpoint = &config.service.recording_endpoint;
    let channel = centralita_platform::tls::lazy_channel(endpoint, runtime.tls.as_ref(), |e| {
        e.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(30))
    })
    .map_err(|e| centralita_platform::config::ConfigError::new("CENTRALITA_RECORDING_ENDPOINT", e))?;
    let transcripts = Consumer::new(
        ConsumerSettings {
            brokers: kafka.brokers.clone(),
            group_id: format!("{}media.transcripts", kafka.topic_prefix),
            topics: vec![runtime.topics.contacts()],
            fetch_wait: FETCH_WAIT_DEFAULT,
            group_instance_id: kafka.group_instance_id.as_ref().map(|id| format!("{id}-transcripts")),
        },
        transcripts::TranscriptsHandler {
            digital: digital.clone(),
            registry: runtime.registry.clone(),
            recording: RecordingServiceClient::new(channel),
        },
        MemoryDedupe::new(10_000),
        Some(runtime.metrics.clone()),
    )?;
    let sd = runtime.shutdown.clone();
    runtime.spawn(async move {
        if let Err(e) = transcripts.run(sd).await {
            tracing::error!(error = %e, "transcripts consumer stopped");
        }
    });
    Ok(())
}

/// Erasure and retention of the conversations: CRM's `CustomerErased` on the customers topic
/// (one consumer group for every replica), the contacts' ends from the contacts topic (the
/// same), and the retention sweeper on every replica (its passes are idempotent and lock
/// what they delete, so replicas sweeping at once delete each conversation once).
fn start_data_protection(
    runtime: &mut centralita_platform::server::Runtime,
    config: &crate::Config,
    pool: &Pool,
    metrics: &Arc<DigitalMetrics>,
) -> anyhow::Result<()> {
    use centralita_platform::bus::{Consumer, ConsumerSettings, MemoryDedupe, FETCH_WAIT_DEFAULT};
    let kafka = &config.common.kafka;
    runtime.with_topics(&[runtime.topics.customers()]);
    let settings = |group: &str, topic: String| ConsumerSettings {
        brokers: kafka.brokers.clone(),
        group_id: format!("{}media.{group}", kafka.topic_prefix),
        topics: vec![topic],
        fetch_wait: FETCH_WAIT_DEFAULT,
        // One static member id per consumer of the process.
        group_instance_id: kafka.group_instance_id.as_ref().map(|id| format!("{id}-{group}")),
    };
    let erasures = Consumer::new(
        settings("erasures", runtime.topics.customers()),
        erasure::ErasureHandler {
            pool: pool.clone(),
            producer: Arc::new(Producer::new(&kafka.brokers, Some(runtime.metrics.clone()))?),
            topics: runtime.topics.clone(),
            metrics: metrics.clone(),
        },
        MemoryDedupe::new(10_000),
        Some(runtime.metrics.clone()),
    )?;
    let sd = runtime.shutdown.clone();
    runtime.spawn(async move {
        if let Err(e) = erasures.run(sd).await {
            tracing::error!(error = %e, "customer erasure consumer stopped");
        }
    });
    let ends = Consumer::new(
        settings("conversation-ends", runtime.topics.contacts()),
        retention::EndsHandler { pool: pool.clone() },
        MemoryDedupe::new(10_000),
        Some(runtime.metrics.clone()),
    )?;
    let sd = runtime.shutdown.clone();
    runtime.spawn(async move {
        if let Err(e) = ends.run(sd).await {
            tracing::error!(error = %e, "contact ends consumer stopped");
        }
    });
    runtime.spawn(retention::run(
        pool.clone(),
        runtime.registry.clone(),
        metrics.clone(),
        config.service.sweep_interval,
        config.common.sweep_clock_offset,
        runtime.shutdown.clone(),
    ));
    Ok(())
}
