//! A stand-in for sessions' `GetContact`, for the CRM's tests: the contact records a test
//! puts (with the identities and wrap-up notes the contacts topic no longer carries),
//! behind a real token check and sessions' tenant rule (a token of one tenant reads only
//! that tenant's contacts). It serves that one method of `ContactService` (every other path
//! answers UNIMPLEMENTED), so RPCs added to the service later need nothing here.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use centralita_platform::auth::{Role, Verifier};
use centralita_platform::testkit;
use centralita_proto::sessions::v1 as spb;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::{Request, Response, Status};

const PATH: &str = "/centralita.sessions.v1.ContactService/GetContact";

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
        let verifier = Verifier::from_file(
            &testkit::repo_file("deploy/local/dev-keys/jwt-ed25519.pub"),
            "centralita",
            "centralita-api",
        )
        .unwrap();
        let server = Server { fake: self.clone(), verifier: Arc::new(verifier) };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    /// GetContact as sessions answers it: the caller's token verified, its tenant's contacts
    /// only, a supervisor's (the role the CRM's tokens carry).
    fn get_contact(&self, verifier: &Verifier, r: Request<spb::GetContactRequest>) -> Result<spb::Contact, Status> {
        let header = r.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let caller = verifier
            .verify(header.strip_prefix("Bearer ").unwrap_or_default())
            .map_err(|_| Status::unauthenticated("bad token"))?;
        let name = r.into_inner().name;
        self.reads.lock().unwrap().push((caller.subject.clone(), name.clone()));
        let tenant = caller.own_tenant().map_err(Status::from)?.to_string();
        if !name.starts_with(&format!("tenants/{tenant}/")) {
            return Err(Status::permission_denied("another tenant's contact"));
        }
        if !caller.has_role(Role::Supervisor) {
            return Err(Status::permission_denied("not a supervisor"));
        }
        self.records.lock().unwrap().get(&name).cloned().ok_or_else(|| Status::not_found(name))
    }
}

#[derive(Clone)]
struct Server {
    fake: FakeSessions,
    verifier: Arc<Verifier>,
}

impl tonic::server::NamedService for Server {
    const NAME: &'static str = "centralita.sessions.v1.ContactService";
}

impl tonic::server::UnaryService<spb::GetContactRequest> for Server {
    type Response = spb::Contact;
    type Future = BoxFuture<Response<spb::Contact>, Status>;

    fn call(&mut self, r: Request<spb::GetContactRequest>) -> Self::Future {
        let answer = self.fake.get_contact(&self.verifier, r).map(Response::new);
        Box::pin(async move { answer })
    }
}

impl Service<http::Request<tonic::body::Body>> for Server {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != PATH {
                return Ok(Status::unimplemented("the stand-in serves GetContact only").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(this, req).await)
        })
    }
}
