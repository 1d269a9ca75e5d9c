//! Chaos mode: while the arrivals run, every `--chaos-every` seconds a service process
//! picked at random (seeded) from `--chaos-services` is killed with SIGKILL (its pid read
//! from `<--chaos-pid-dir>/<service>.pid`, the files `deploy/local/services.sh` keeps) and
//! started again by `--chaos-restart` (a shell command, `{service}` replaced; e.g.
//! `deploy/local/services.sh restart {service}`, which waits for the service's /readyz).
//!
//! And the checks a chaos run ends with, beside the simulator's own (every contact terminal
//! by the sessions API, none accepted twice, no agent above capacity): every created contact
//! reached a terminal state exactly once on the contacts topic (read from the beginning by a
//! consumer group of its own, redeliveries of one event told apart by the event id), and
//! the reporting service's totals per tenant (offered, answered, abandoned) equal the
//! simulator's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use centralita_platform::auth::Role;
use centralita_platform::bus::{ConsumerSettings, Event, Handler, MemoryDedupe, Topics, FETCH_WAIT_DEFAULT};
use centralita_platform::shutdown::Shutdown;
use centralita_proto::reporting::v1 as rpb;
use centralita_proto::sessions::v1 as pb;
use rpb::reporting_service_client::ReportingServiceClient;
use tonic::transport::Channel;

use super::draw::Rng;
use super::Setup;
use crate::req;

#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Chaos mode: kill -9 a random service every this many seconds while arrivals run,
    /// and start it again (see `--chaos-restart`). Also turns on the full conservation
    /// check (`--check-log-and-reporting`).
    #[arg(long)]
    pub chaos_every: Option<f64>,
    /// The services chaos picks from.
    #[arg(long, value_delimiter = ',', default_value = "sessions,routing,reporting,crm")]
    pub chaos_services: Vec<String>,
    /// Where `<service>.pid` files are (`$CENTRALITA_DATA/run/<run name>` for services.sh).
    #[arg(long)]
    pub chaos_pid_dir: Option<PathBuf>,
    /// Shell command that starts a killed service again and returns once it is ready;
    /// `{service}` is replaced by its name.
    #[arg(long)]
    pub chaos_restart: Option<String>,
    /// How long a killed service stays down before it is restarted.
    #[arg(long, default_value_t = 1.0)]
    pub chaos_down_seconds: f64,
    /// Kill -9 the broker once (`broker.pid` in `--chaos-pid-dir`, started again by
    /// `--chaos-restart` with `{service}` = `broker`): the first turn at or after this many
    /// seconds is the broker's instead of a service's. Its log must be durable (chaos.sh puts
    /// it on PostgreSQL) or the conservation check finds the topics empty.
    #[arg(long)]
    pub chaos_broker_at: Option<f64>,
    /// After the drain, read the contacts topic from the beginning (each created contact
    /// terminal exactly once) and compare the reporting service's totals with the
    /// simulator's.
    #[arg(long)]
    pub check_log_and_reporting: bool,
}

impl ChaosArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        let Some(every) = self.chaos_every else { return Ok(()) };
        if !(every.is_finite() && every >= 1.0) {
            anyhow::bail!("--chaos-every must be at least 1 second");
        }
        if !(self.chaos_down_seconds.is_finite() && (0.0..=600.0).contains(&self.chaos_down_seconds)) {
            anyhow::bail!("--chaos-down-seconds must be between 0 and 600");
        }
        if self.chaos_services.is_empty() || self.chaos_services.iter().any(|s| !valid_service_name(s)) {
            anyhow::bail!("--chaos-services must name services (lower-case letters, digits, '-')");
        }
        if self.chaos_pid_dir.is_none() || self.chaos_restart.is_none() {
            anyhow::bail!("chaos mode needs --chaos-pid-dir and --chaos-restart");
        }
        if self.chaos_broker_at.is_some_and(|at| !(at.is_finite() && at >= 0.0)) {
            anyhow::bail!("--chaos-broker-at must be a number of seconds, 0 or more");
        }
        Ok(())
    }

    pub fn full_check(&self) -> bool {
        self.check_log_and_reporting || self.chaos_every.is_some()
    }
}

fn valid_service_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// One kill and its restart.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Kill {
    pub at_seconds: f64,
    pub service: String,
    pub pid: Option<u32>,
    /// Seconds from the kill until the restart command returned (the service ready).
    pub back_after_seconds: Option<f64>,
    pub problem: Option<String>,
}

/// Reads a pid file: one positive decimal number.
pub fn read_pid(path: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let pid: u32 = text.trim().parse().with_context(|| format!("{} does not hold a pid", path.display()))?;
    if pid <= 1 {
        anyhow::bail!("{} holds pid {pid}, which is never a service", path.display());
    }
    Ok(pid)
}

/// Kills and restarts services until `stop` turns true, at `every`, `2 every`, ... after
/// `started` (once the broker, see `--chaos-broker-at`); returns what it did. The restart in
/// progress when `stop` turns true is finished first, so the drain meets every service up.
pub async fn run(
    args: ChaosArgs,
    seed: u64,
    started: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Kill> {
    let (Some(every), Some(dir), Some(restart)) = (args.chaos_every, args.chaos_pid_dir, args.chaos_restart) else {
        return Vec::new();
    };
    let mut rng = Rng(seed.max(1) ^ 0x00c4_a05c_4a05);
    let mut kills = Vec::new();
    // Kills on a fixed schedule (every, 2 every, ...) whatever a restart takes; one that
    // took longer than the interval is followed by the next kill at once.
    let mut next = tokio::time::Instant::from_std(started);
    let mut broker_at = args.chaos_broker_at;
    loop {
        next += Duration::from_secs_f64(every);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = stop.wait_for(|s| *s) => return kills,
        }
        let i = ((rng.next_f64() * args.chaos_services.len() as f64) as usize).min(args.chaos_services.len() - 1);
        let turn = next.into_std().saturating_duration_since(started).as_secs_f64();
        let service = match broker_at {
            Some(at) if turn >= at => {
                broker_at = None;
                "broker".to_owned()
            }
            _ => args.chaos_services[i].clone(),
        };
        let at = Instant::now();
        let mut kill = Kill {
            at_seconds: at.duration_since(started).as_secs_f64(),
            service: service.clone(),
            pid: None,
            back_after_seconds: None,
            problem: None,
        };
        match read_pid(&dir.join(format!("{service}.pid"))) {
            Ok(pid) => {
                kill.pid = Some(pid);
                let killed =
                    blocking(move || std::process::Command::new("kill").arg("-9").arg(pid.to_string()).output()).await;
                if !matches!(&killed, Ok(o) if o.status.success()) {
                    kill.problem = Some(format!("kill -9 {pid} failed ({killed:?}): the process was not running"));
                }
            }
            Err(e) => kill.problem = Some(format!("{e:#}")),
        }
        tokio::time::sleep(Duration::from_secs_f64(args.chaos_down_seconds)).await;
        let cmd = restart.replace("{service}", &service);
        let c = cmd.clone();
        let out = blocking(move || std::process::Command::new("sh").arg("-c").arg(&c).output()).await;
        match out {
            Ok(o) if o.status.success() => kill.back_after_seconds = Some(at.elapsed().as_secs_f64()),
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                let p = format!("`{cmd}` failed ({}): {}", o.status, err.trim().chars().take(400).collect::<String>());
                kill.problem = Some(kill.problem.map_or(p.clone(), |k| format!("{k}; {p}")));
            }
            Err(e) => kill.problem = Some(format!("`{cmd}` could not run: {e}")),
        }
        eprintln!(
            "[chaos] {:>6.1} s: killed {} (pid {}), back after {}{}",
            kill.at_seconds,
            kill.service,
            kill.pid.map_or_else(|| "?".to_owned(), |p| p.to_string()),
            kill.back_after_seconds.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s")),
            kill.problem.as_ref().map(|p| format!(" — {p}")).unwrap_or_default()
        );
        kills.push(kill);
    }
}

/// Runs a child process to its end off the async threads.
async fn blocking<F>(f: F) -> std::io::Result<std::process::Output>
where
    F: FnOnce() -> std::io::Result<std::process::Output> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Terminal transitions seen on the contacts topic, per contact.
#[derive(Debug, Default)]
struct LogTally {
    /// contact name → distinct event ids of transitions into a terminal state.
    terminal: HashMap<String, HashSet<uuid::Uuid>>,
    /// Records read, and records that repeated an event id already read.
    records: u64,
    redelivered: u64,
    seen: HashSet<uuid::Uuid>,
}

#[derive(Clone)]
struct LogReader {
    tenants: Arc<HashSet<String>>,
    tally: Arc<Mutex<LogTally>>,
}

fn terminal(state: i32) -> bool {
    [pb::ContactState::Closed as i32, pb::ContactState::Abandoned as i32, pb::ContactState::TimedOut as i32]
        .contains(&state)
}

impl Handler for LogReader {
    async fn handle(&mut self, event: &Event) -> Result<(), centralita_platform::error::Error> {
        if !self.tenants.contains(event.tenant.as_str()) {
            return Ok(());
        }
        let Ok(e) = event.payload::<pb::ContactEvent>() else { return Ok(()) };
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        t.records += 1;
        if !t.seen.insert(event.id) {
            t.redelivered += 1;
            return Ok(());
        }
        let Some(c) = e.contact else { return Ok(()) };
        if terminal(c.state) && !terminal(e.previous_state) {
            t.terminal.entry(c.name).or_default().insert(event.id);
        }
        Ok(())
    }
}

/// What the contacts topic says of the simulator's contacts.
pub struct LogCheck {
    pub json: serde_json::Value,
    pub problems: Vec<String>,
}

/// Reads the contacts topic from the beginning until every contact in `names` has reached a
/// terminal state on it (or nothing new came for 15 s, or 180 s passed), then judges:
/// exactly one terminal transition per contact.
pub async fn check_log(brokers: &str, topics: &Topics, tenants: HashSet<String>, names: &[String]) -> LogCheck {
    let tally = Arc::new(Mutex::new(LogTally::default()));
    let reader = LogReader { tenants: Arc::new(tenants), tally: tally.clone() };
    let group = format!("loadtest-conservation-{}", uuid::Uuid::now_v7().simple());
    let consumer = centralita_platform::bus::Consumer::new(
        ConsumerSettings {
            brokers: brokers.to_owned(),
            group_id: group,
            topics: vec![topics.contacts()],
            fetch_wait: FETCH_WAIT_DEFAULT,
            group_instance_id: None,
        },
        reader,
        MemoryDedupe::new(1),
        None,
    );
    let consumer = match consumer {
        Ok(c) => c,
        Err(e) => {
            let p = format!("the contacts topic could not be read: {e}");
            return LogCheck { json: serde_json::json!({ "error": p }), problems: vec![p] };
        }
    };
    let stop = Shutdown::new();
    let sd = stop.clone();
    let task = tokio::spawn(async move { consumer.run(sd).await });
    let started = Instant::now();
    let (mut last_records, mut last_change) = (0u64, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (records, done) = {
            let t = tally.lock().unwrap_or_else(|p| p.into_inner());
            (t.records, names.iter().all(|n| t.terminal.contains_key(n)))
        };
        if records != last_records {
            (last_records, last_change) = (records, Instant::now());
        }
        // A little longer once all are in: a duplicate terminal event would come after.
        if done && last_change.elapsed() > Duration::from_secs(3) {
            break;
        }
        if last_change.elapsed() > Duration::from_secs(15) || started.elapsed() > Duration::from_secs(180) {
            break;
        }
    }
    stop.trigger();
    let _ = task.await;
    let t = tally.lock().unwrap_or_else(|p| p.into_inner());
    let missing: Vec<&String> = names.iter().filter(|n| !t.terminal.contains_key(*n)).collect();
    let twice: Vec<&String> = names.iter().filter(|n| t.terminal.get(*n).is_some_and(|s| s.len() > 1)).collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "{} created contacts never reached a terminal state on the contacts topic, e.g. {}",
            missing.len(),
            missing.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    if !twice.is_empty() {
        problems.push(format!(
            "{} contacts reached a terminal state more than once on the contacts topic, e.g. {}",
            twice.len(),
            twice.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    eprintln!(
        "[sim] contacts topic: {} records of our tenants ({} redeliveries of an event already read), {} of {} contacts terminal exactly once, {} never, {} more than once",
        t.records,
        t.redelivered,
        names.len() - missing.len() - twice.len(),
        names.len(),
        missing.len(),
        twice.len()
    );
    LogCheck {
        json: serde_json::json!({
            "records": t.records, "redelivered_records": t.redelivered,
            "contacts": names.len(), "terminal_exactly_once": names.len() - missing.len() - twice.len(),
            "never_terminal": missing.len(), "terminal_more_than_once": twice.len(),
            "never_terminal_contacts": missing, "terminal_more_than_once_contacts": twice,
        }),
        problems,
    }
}

/// The simulator's totals of one tenant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub offered: u64,
    pub answered: u64,
    pub abandoned: u64,
}

/// Compares, per tenant, the reporting service's totals over the run with the simulator's
/// (polling up to 90 s for reporting to catch up); returns the JSON and the problems.
pub async fn check_reporting(
    setup: &Setup,
    reports: &mut ReportingServiceClient<Channel>,
    expected: &BTreeMap<String, Totals>,
    from: chrono::DateTime<chrono::Utc>,
) -> (serde_json::Value, Vec<String>) {
    let mut problems = Vec::new();
    let mut json = serde_json::Map::new();
    let ts = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 };
    let deadline = Instant::now() + Duration::from_secs(90);
    for (tenant, want) in expected {
        let query = rpb::QueryHistoryRequest {
            tenant: String::new(),
            start_time: Some(ts(from - chrono::Duration::seconds(120))),
            end_time: Some(ts(chrono::Utc::now() + chrono::Duration::seconds(120))),
            granularity: rpb::Granularity::Month as i32,
            group_by: vec![rpb::Dimension::Queue as i32],
            queue: String::new(),
            service_level_definition: String::new(),
        };
        let mut got = Totals::default();
        let mut error: Option<String>;
        loop {
            let sup = match setup.auth.token(Some(tenant), Role::Supervisor, None) {
                Ok(t) => t,
                Err(e) => {
                    error = Some(format!("{e:#}"));
                    break;
                }
            };
            let answer = match req(query.clone(), &sup) {
                Ok(r) => reports.query_history(r).await,
                Err(e) => Err(tonic::Status::internal(e.to_string())),
            };
            match answer {
                Ok(h) => {
                    got = h.into_inner().rows.iter().filter_map(|r| r.figures.as_ref()).fold(
                        Totals::default(),
                        |acc, f| Totals {
                            offered: acc.offered + f.offered,
                            answered: acc.answered + f.answered,
                            abandoned: acc.abandoned + f.abandoned,
                        },
                    );
                    error = None;
                }
                Err(s) => error = Some(format!("QueryHistory: {:?} {}", s.code(), s.message())),
            }
            if (error.is_none() && got == *want) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Some(e) = &error {
            problems.push(format!("{tenant}: reporting could not be read: {e}"));
        } else if got != *want {
            problems.push(format!(
                "{tenant}: reporting says offered {} / answered {} / abandoned {}; the simulator {} / {} / {}",
                got.offered, got.answered, got.abandoned, want.offered, want.answered, want.abandoned
            ));
        }
        eprintln!(
            "[sim] reporting {tenant}: offered {} answered {} abandoned {} (simulator {} / {} / {}){}",
            got.offered,
            got.answered,
            got.abandoned,
            want.offered,
            want.answered,
            want.abandoned,
            if got == *want { ", equal" } else { ", DIFFERENT" }
        );
        json.insert(
            tenant.clone(),
            serde_json::json!({ "reporting": got, "simulator": want, "equal": got == *want, "error": error }),
        );
    }
    (serde_json::Value::Object(json), problems)
}

/// CRM's word for a contact state (its interactions' `state`).
fn crm_state(state: i32) -> &'static str {
    match pb::ContactState::try_from(state).unwrap_or(pb::ContactState::Unspecified) {
        pb::ContactState::Unspecified => "unspecified",
        pb::ContactState::Queued => "queued",
        pb::ContactState::Offered => "offered",
        pb::ContactState::Connected => "connected",
        pb::ContactState::AfterContactWork => "after_contact_work",
        pb::ContactState::Closed => "closed",
        pb::ContactState::Abandoned => "abandoned",
        pb::ContactState::TimedOut => "timed_out",
    }
}

/// One customer's timeline against the simulator: the contacts it should hold (name →
/// final state by sessions) and what it holds (name → states of its interactions).
fn judge_timeline(
    who: &str,
    expected: &BTreeMap<String, i32>,
    found: &HashMap<String, Vec<String>>,
    problems: &mut Vec<String>,
) {
    for (name, state) in expected {
        match found.get(name).map(Vec::as_slice) {
            None | Some([]) => problems.push(format!("{who}: {name} is not on the timeline")),
            Some([s]) if s == crm_state(*state) => {}
            Some([s]) => {
                problems.push(format!("{who}: {name} is `{s}` on the timeline, `{}` in sessions", crm_state(*state)))
            }
            Some(more) => problems.push(format!("{who}: {name} is on the timeline {} times", more.len())),
        }
    }
    for name in found.keys().filter(|n| !expected.contains_key(*n)) {
        problems.push(format!("{who}: {name} is on the timeline but was not the simulator's"));
    }
}

/// Checks every customer's CRM timeline (found by the phone number the simulator gave its
/// contacts): one profile per number, each of its contacts on it exactly once in the state
/// sessions ended it in, nothing else. Polls up to 90 s for CRM to catch up.
pub async fn check_crm(
    setup: &Setup,
    channel: Channel,
    contacts: &HashMap<String, super::state::ContactRec>,
    final_state: &HashMap<String, i32>,
) -> (serde_json::Value, Vec<String>) {
    use centralita_proto::crm::v1 as cpb;
    let mut by_customer: BTreeMap<(String, String), BTreeMap<String, i32>> = BTreeMap::new();
    for (name, c) in contacts {
        if let Some(phone) = &c.phone {
            by_customer
                .entry((c.tenant.clone(), phone.clone()))
                .or_default()
                .insert(name.clone(), final_state.get(name).copied().unwrap_or_default());
        }
    }
    let mut client = cpb::customer_service_client::CustomerServiceClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut problems;
    let mut entries;
    loop {
        problems = Vec::new();
        entries = 0;
        for ((tenant, phone), expected) in &by_customer {
            let who = format!("{tenant} {phone}");
            let sup = match setup.auth.token(Some(tenant), Role::Supervisor, None) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{who}: {e:#}"));
                    continue;
                }
            };
            let identity =
                cpb::Identity { kind: cpb::IdentityKind::Phone as i32, value: phone.clone(), network: String::new() };
            let found = match req(
                cpb::FindCustomersRequest { identity: Some(identity), default_country_code: String::new() },
                &sup,
            ) {
                Ok(r) => client.find_customers(r).await,
                Err(e) => Err(tonic::Status::internal(e.to_string())),
            };
            let customers = match found {
                Ok(f) => f.into_inner().customers,
                Err(s) => {
                    problems.push(format!("{who}: FindCustomers {:?} {}", s.code(), s.message()));
                    continue;
                }
            };
            let [customer] = customers.as_slice() else {
                problems.push(format!("{who}: {} customer profiles carry the number", customers.len()));
                continue;
            };
            let mut on_timeline: HashMap<String, Vec<String>> = HashMap::new();
            let mut page_token = String::new();
            loop {
                let r = req(
                    cpb::ListTimelineRequest {
                        customer: customer.name.clone(),
                        page_size: 200,
                        page_token: page_token.clone(),
                    },
                    &sup,
                );
                let page = match r {
                    Ok(r) => client.list_timeline(r).await,
                    Err(e) => Err(tonic::Status::internal(e.to_string())),
                };
                match page {
                    Ok(p) => {
                        let p = p.into_inner();
                        for e in p.entries {
                            if let Some(cpb::timeline_entry::Entry::Interaction(i)) = e.entry {
                                entries += 1;
                                on_timeline.entry(i.contact).or_default().push(i.state);
                            }
                        }
                        if p.next_page_token.is_empty() {
                            break;
                        }
                        page_token = p.next_page_token;
                    }
                    Err(s) => {
                        problems.push(format!("{who}: ListTimeline {:?} {}", s.code(), s.message()));
                        break;
                    }
                }
            }
            judge_timeline(&who, expected, &on_timeline, &mut problems);
        }
        if problems.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let contacts_checked: usize = by_customer.values().map(BTreeMap::len).sum();
    eprintln!(
        "[sim] CRM: {} customers, {contacts_checked} contacts, {entries} interactions on their timelines; {} problem(s)",
        by_customer.len(),
        problems.len()
    );
    for p in problems.iter().take(10) {
        eprintln!("[sim]   {p}");
    }
    let json = serde_json::json!({
        "customers": by_customer.len(), "contacts": contacts_checked, "interactions": entries,
        "problems": problems.len(), "examples": problems.iter().take(20).collect::<Vec<_>>(),
    });
    let summary = if problems.is_empty() {
        Vec::new()
    } else {
        vec![format!("CRM timelines: {} problem(s), e.g. {}", problems.len(), problems[0])]
    };
    (json, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files_are_read_strictly() {
        let dir = std::env::temp_dir().join(format!("chaos-pid-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("sessions.pid");
        std::fs::write(&p, "12345\n").expect("write");
        assert_eq!(read_pid(&p).expect("pid"), 12345);
        for bad in ["", "abc", "-4", "1", "0", "12 34"] {
            std::fs::write(&p, bad).expect("write");
            assert!(read_pid(&p).is_err(), "{bad:?} accepted");
        }
        assert!(read_pid(&dir.join("missing.pid")).is_err());
        std::fs::remove_dir_all(&dir).expect("rm");
    }

    #[test]
    fn chaos_arguments_are_validated() {
        let ok = ChaosArgs {
            chaos_every: Some(20.0),
            chaos_services: vec!["sessions".into(), "routing".into()],
            chaos_pid_dir: Some("/tmp".into()),
            chaos_restart: Some("true".into()),
            chaos_down_seconds: 1.0,
            chaos_broker_at: Some(30.0),
            check_log_and_reporting: false,
        };
        assert!(ok.validate().is_ok());
        assert!(ok.full_check());
        let off = ChaosArgs { chaos_every: None, ..ok.clone() };
        assert!(off.validate().is_ok());
        assert!(!off.full_check());
        for bad in [
            ChaosArgs { chaos_every: Some(0.5), ..ok.clone() },
            ChaosArgs { chaos_every: Some(f64::NAN), ..ok.clone() },
            ChaosArgs { chaos_down_seconds: -1.0, ..ok.clone() },
            ChaosArgs { chaos_services: vec![], ..ok.clone() },
            ChaosArgs { chaos_services: vec!["sessions; rm -rf /".into()], ..ok.clone() },
            ChaosArgs { chaos_pid_dir: None, ..ok.clone() },
            ChaosArgs { chaos_restart: None, ..ok.clone() },
            ChaosArgs { chaos_broker_at: Some(-1.0), ..ok.clone() },
            ChaosArgs { chaos_broker_at: Some(f64::INFINITY), ..ok.clone() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn a_kill_restarts_the_service_with_the_command() {
        // A real process to kill, its pid in a pid file; the restart command records the
        // service it was given.
        let dir = std::env::temp_dir().join(format!("chaos-run-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut victim = std::process::Command::new("sleep").arg("60").spawn().expect("sleep");
        let pid = victim.id();
        std::fs::write(dir.join("routing.pid"), pid.to_string()).expect("write");
        let marker = dir.join("restarted");
        let args = ChaosArgs {
            chaos_every: Some(1.0),
            chaos_services: vec!["routing".into()],
            chaos_pid_dir: Some(dir.clone()),
            chaos_restart: Some(format!("echo {{service}} >> {}", marker.display())),
            chaos_down_seconds: 0.0,
            chaos_broker_at: None,
            check_log_and_reporting: false,
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(args, 7, Instant::now(), rx));
        let status = tokio::time::timeout(Duration::from_secs(10), tokio::task::spawn_blocking(move || victim.wait()))
            .await
            .expect("killed")
            .expect("join")
            .expect("wait");
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(9));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tx.send_replace(true);
        let kills = task.await.expect("chaos");
        assert!(!kills.is_empty());
        assert_eq!(kills[0].service, "routing");
        assert_eq!(kills[0].pid, Some(pid));
        assert!(kills[0].problem.is_none(), "{kills:?}");
        assert!(kills[0].back_after_seconds.is_some());
        // The second kill finds the process gone and says so.
        if let Some(k) = kills.get(1) {
            assert!(k.problem.as_deref().is_some_and(|p| p.contains("not running")), "{k:?}");
        }
        let restarted = std::fs::read_to_string(&marker).expect("marker");
        assert!(restarted.lines().all(|l| l == "routing") && restarted.lines().count() == kills.len());
        std::fs::remove_dir_all(&dir).expect("rm");
    }

    #[tokio::test]
    async fn the_broker_takes_one_turn_at_its_time() {
        // No pid files: each kill says so, and the restart command runs all the same.
        let dir = std::env::temp_dir().join(format!("chaos-broker-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let marker = dir.join("restarted");
        let args = ChaosArgs {
            chaos_every: Some(1.0),
            chaos_services: vec!["routing".into()],
            chaos_pid_dir: Some(dir.clone()),
            chaos_restart: Some(format!("echo {{service}} >> {}", marker.display())),
            chaos_down_seconds: 0.0,
            chaos_broker_at: Some(1.5),
            check_log_and_reporting: false,
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(args, 7, Instant::now(), rx));
        tokio::time::sleep(Duration::from_millis(3600)).await;
        tx.send_replace(true);
        let kills = task.await.expect("chaos");
        let order: Vec<&str> = kills.iter().map(|k| k.service.as_str()).collect();
        assert_eq!(order, ["routing", "broker", "routing"], "{kills:?}");
        assert!(kills[1].problem.as_deref().is_some_and(|p| p.contains("broker.pid")), "{kills:?}");
        let restarted = std::fs::read_to_string(&marker).expect("marker");
        assert_eq!(restarted.lines().collect::<Vec<_>>(), order);
        std::fs::remove_dir_all(&dir).expect("rm");
    }

    #[test]
    fn a_timeline_holds_each_contact_once_in_its_final_state() {
        let expected: BTreeMap<String, i32> = [
            ("c/1".to_owned(), pb::ContactState::Closed as i32),
            ("c/2".to_owned(), pb::ContactState::Abandoned as i32),
        ]
        .into();
        let good: HashMap<String, Vec<String>> =
            [("c/1".to_owned(), vec!["closed".to_owned()]), ("c/2".to_owned(), vec!["abandoned".to_owned()])].into();
        let mut problems = Vec::new();
        judge_timeline("t", &expected, &good, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let cases: [(&str, HashMap<String, Vec<String>>); 4] = [
            ("not on the timeline", [("c/1".to_owned(), vec!["closed".to_owned()])].into()),
            (
                "2 times",
                [
                    ("c/1".to_owned(), vec!["closed".to_owned(), "closed".to_owned()]),
                    ("c/2".to_owned(), vec!["abandoned".to_owned()]),
                ]
                .into(),
            ),
            (
                "`connected` on the timeline",
                [("c/1".to_owned(), vec!["connected".to_owned()]), ("c/2".to_owned(), vec!["abandoned".to_owned()])]
                    .into(),
            ),
            ("was not the simulator's", {
                let mut m = good.clone();
                m.insert("c/9".to_owned(), vec!["closed".to_owned()]);
                m
            }),
        ];
        for (what, found) in cases {
            let mut problems = Vec::new();
            judge_timeline("t", &expected, &found, &mut problems);
            assert!(problems.iter().any(|p| p.contains(what)), "{what}: {problems:?}");
        }
    }

    #[test]
    fn customers_phone_numbers_are_e164_and_a_few_per_tenant() {
        use super::super::floor::{phone_of, CUSTOMERS};
        let numbers: HashSet<String> = (1..=500).map(|n| phone_of(2, 0, n)).collect();
        assert_eq!(numbers.len() as u64, CUSTOMERS);
        for p in &numbers {
            assert!(p.starts_with("+349102") && p.len() == 12 && p[1..].bytes().all(|b| b.is_ascii_digit()), "{p}");
        }
        assert_eq!(phone_of(2, 0, 7), phone_of(2, 0, 7));
        assert!(phone_of(1, 0, 7) != phone_of(2, 0, 7));
    }

    #[test]
    fn only_transitions_into_a_terminal_state_count() {
        assert!(terminal(pb::ContactState::Closed as i32));
        assert!(terminal(pb::ContactState::Abandoned as i32));
        assert!(terminal(pb::ContactState::TimedOut as i32));
        assert!(!terminal(pb::ContactState::Connected as i32));
        assert!(!terminal(pb::ContactState::Queued as i32));
    }
}
