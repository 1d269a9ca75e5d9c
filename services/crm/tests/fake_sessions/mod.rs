//! A stand-in for sessions' `GetContact`, for the CRM's tests: the contact records a test
//! puts (with the identities and wrap-up notes the contacts topic no longer carries),
//! behind a real token check and sessions' tenant rule (a token of one tenant reads only
//! that tenant's contacts). Every other RPC is unimplemented.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use centralita_platform::auth::Role;
use centralita_platform::testkit;
use centralita_proto::sessions::v1 as spb;
use spb::contact_service_server::{ContactService, ContactServiceServer};
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, Default)]
pub struct FakeSessions {
    records: Arc<Mutex<HashMap<String, spb::Contact>>>,
    /// Each GetContact asked: (caller subject, contact name).
    pub reads: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeSessions {
    pub fn put(&self, c: &spb::Contact) {
        self.records.lock().unwrap().insert(c.name.clone(), c.clone());
    }

    /// What sessions' erasure consumer does to a record: identities, attributes and notes go.
    pub fn erase(&self, name: &str) {
        if let Some(c) = self.records.lock().unwrap().get_mut(name) {
            c.customer_identities.clear();
            c.attributes.clear();
            c.wrap_up_notes.clear();
        }
    }

    pub fn reads_of(&self, name: &str) -> usize {
        self.reads.lock().unwrap().iter().filter(|(_, n)| n == name).count()
    }

    /// Serves it on an ephemeral port; returns the `http://` endpoint.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let verifier = centralita_platform::auth::Verifier::from_file(
            &testkit::repo_file("deploy/local/dev-keys/jwt-ed25519.pub"),
            "centralita",
            "centralita-api",
        )
        .unwrap();
        let interceptor = move |mut r: Request<()>| {
            let header = r.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let caller = verifier
                .verify(header.strip_prefix("Bearer ").unwrap_or_default())
                .map_err(|_| Status::unauthenticated("bad token"))?;
            r.extensions_mut().insert(caller);
            Ok(r)
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ContactServiceServer::with_interceptor(self.clone(), interceptor))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }
}

type R<T> = Result<Response<T>, Status>;

fn fake<T>() -> R<T> {
    Err(Status::unimplemented("fake"))
}

#[tonic::async_trait]
impl ContactService for FakeSessions {
    async fn get_contact(&self, r: Request<spb::GetContactRequest>) -> R<spb::Contact> {
        let caller = centralita_platform::auth::caller(&r)?.clone();
        let name = r.into_inner().name;
        self.reads.lock().unwrap().push((caller.subject.clone(), name.clone()));
        let tenant = caller.own_tenant().map_err(Status::from)?.to_string();
        if !name.starts_with(&format!("tenants/{tenant}/")) {
            return Err(Status::permission_denied("another tenant's contact"));
        }
        if !caller.has_role(Role::Supervisor) {
            return Err(Status::permission_denied("not a supervisor"));
        }
        self.records.lock().unwrap().get(&name).cloned().map(Response::new).ok_or_else(|| Status::not_found(name))
    }
    async fn create_contact(&self, _: Request<spb::CreateContactRequest>) -> R<spb::Contact> {
        fake()
    }
    async fn list_contacts(&self, _: Request<spb::ListContactsRequest>) -> R<spb::ListContactsResponse> {
        fake()
    }
    async fn accept_contact(&self, _: Request<spb::AcceptContactRequest>) -> R<spb::Contact> {
        fake()
    }
    async fn reject_contact(&self, _: Request<spb::RejectContactRequest>) -> R<spb::Contact> {
        fake()
    }
    async fn hold_contact(&self, _: Request<spb::HoldContactRequest>) -> R<spb::Contact> {
        fake()
    }
    async fn resume_contact(&self, _: Request<spb::ResumeContactRequest>) -> R<spb::Contact> {
        fake()
    }
    async fn pause_recording(&self, _: Request<spb::PauseRecordingRequest>) -> R<spb::Contact> {
        fake()
    }
    async fn resume_recording(&self, _: Request<spb::ResumeRecordingRequest>) -> R<spb::Contact> {
        fake()
    }
    async fn transfer_contact(&self, _: Request<spb::TransferContactRequest>) -> R<spb::Contact> {
        fake()
    }
    async fn consult_contact(&self, _: Request<spb::ConsultContactRequest>) -> R<spb::Contact> {
        fake()
    }
    async fn complete_consult(&self, _: Request<spb::CompleteConsultRequest>) -> R<spb::Contact> {
        fake()
    }
    async fn end_contact(&self, _: Request<spb::EndContactRequest>) -> R<spb::Contact> {
        fake()
    }
    async fn wrap_up_contact(&self, _: Request<spb::WrapUpContactRequest>) -> R<spb::Contact> {
        fake()
    }
    async fn list_queue_stats(&self, _: Request<spb::ListQueueStatsRequest>) -> R<spb::ListQueueStatsResponse> {
        fake()
    }
}
