//! The shutdown sequence has one deadline: after the shutdown trigger (what the first
//! SIGTERM does), `Runtime::serve` returns within one `shutdown_timeout` even when a gRPC
//! call in flight and a background task are both slower than the timeout. The chart's
//! grace-period check (`charts/tests`) assumes exactly that.
//!
//! Needs no local stack: the broker address has nothing behind it (the runtime stays
//! not-ready, which does not stop it from serving calls or shutting down). Real time,
//! because the runtime serves real sockets; the timeout is kept at one second.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use centralita_platform::config::CommonConfig;
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;
use centralita_proto::reporting::v1 as pb;
use pb::staffing_service_client::StaffingServiceClient;
use pb::staffing_service_server::{StaffingService, StaffingServiceServer};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(1);
/// Longer than any deadline here: neither the call nor the task ends by itself in time.
const SLOW: Duration = Duration::from_secs(30);
/// What the sequence may take beyond the deadline: closing the admin port, aborting tasks.
const SLACK: Duration = Duration::from_millis(500);

fn config() -> CommonConfig {
    let mut c = common::config("test.shutdown.");
    c.shutdown_timeout = TIMEOUT;
    // The discard port: refused at once, so no broker is needed.
    c.kafka.brokers = "127.0.0.1:9".into();
    c
}

/// A gRPC API whose one call takes [`SLOW`], and says when it has started.
struct SlowStaffing {
    started: mpsc::UnboundedSender<()>,
}

#[tonic::async_trait]
impl StaffingService for SlowStaffing {
    async fn compute_staffing(
        &self,
        _: tonic::Request<pb::ComputeStaffingRequest>,
    ) -> Result<tonic::Response<pb::ComputeStaffingResponse>, tonic::Status> {
        let _ = self.started.send(());
        tokio::time::sleep(SLOW).await;
        Ok(tonic::Response::new(pb::ComputeStaffingResponse::default()))
    }
}

/// Sets its flag when dropped: the background task it lives in was stopped.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_takes_one_deadline_even_when_the_drain_and_the_background_work_are_slow() {
    let shutdown = Shutdown::new();
    let listeners = Listeners::ephemeral().await.unwrap();
    let grpc = listeners.grpc_addr();
    let mut runtime = Runtime::new("test", &config(), shutdown.clone()).unwrap();

    // Background work that ignores the shutdown and outlasts the deadline (a consumer stuck
    // committing to a broker that does not answer).
    let (task_started_tx, mut task_started) = mpsc::unbounded_channel();
    let task_stopped = Arc::new(AtomicBool::new(false));
    let guard = Dropped(task_stopped.clone());
    runtime.spawn(async move {
        let _guard = guard;
        let _ = task_started_tx.send(());
        tokio::time::sleep(SLOW).await;
    });

    let (call_started_tx, mut call_started) = mpsc::unbounded_channel();
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(StaffingServiceServer::new(SlowStaffing { started: call_started_tx }));
    let served = tokio::spawn(runtime.serve(listeners, routes));

    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}")).unwrap().connect_lazy();
    let call = tokio::spawn(async move {
        StaffingServiceClient::new(channel).compute_staffing(pb::ComputeStaffingRequest::default()).await
    });
    tokio::time::timeout(Duration::from_secs(10), call_started.recv()).await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), task_started.recv()).await.unwrap().unwrap();

    let signalled = Instant::now();
    shutdown.trigger();
    let result = tokio::time::timeout(SLOW, served).await.expect("serve returned").unwrap();
    let took = signalled.elapsed();
    result.unwrap();

    assert!(took < TIMEOUT + SLACK, "shutdown took {took:?}, more than one deadline of {TIMEOUT:?}");
    // It did wait for the slow work, up to the deadline, before giving up on it.
    assert!(took >= TIMEOUT - Duration::from_millis(50), "shutdown took only {took:?}");
    // Aborted at the deadline (its drop runs on a worker right after).
    let stopped = async {
        while !task_stopped.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(1), stopped).await.expect("the background task was stopped");
    assert!(!call.is_finished() || call.await.unwrap().is_err(), "the slow call did not complete");
    eprintln!("shutdown with a slow call and a slow background task took {took:?} (timeout {TIMEOUT:?})");
}
