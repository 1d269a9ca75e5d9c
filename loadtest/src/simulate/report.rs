//! The run's results: the conservation checks, queue figures in simulated time with their
//! confidence intervals, the Erlang C comparison against the reporting service's figures,
//! the ramp's steps and knee, as JSON and as lines on stderr.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use centralita_platform::auth::Role;
use centralita_proto::reporting::v1 as rpb;
use centralita_proto::sessions::v1 as pb;
use pb::contact_service_client::ContactServiceClient;
use rpb::reporting_service_client::ReportingServiceClient;
use tonic::transport::Channel;

use super::state::{lock, ContactRec};
use super::Setup;
use crate::pool::{replica_intervals, Replica};
use crate::scenario;
use crate::{quantiles, req};

/// The checks of a chaos run (or `--check-log-and-reporting`) and what chaos did.
pub(super) struct FullCheck {
    pub(super) on: bool,
    pub(super) crm: Option<Channel>,
    pub(super) kills: Vec<super::chaos::Kill>,
    pub(super) brokers: String,
    pub(super) topics: centralita_platform::bus::Topics,
    pub(super) wall_started: chrono::DateTime<chrono::Utc>,
}

pub(super) struct Report {
    pub(super) json: serde_json::Value,
    pub(super) problems: Vec<String>,
}

/// Mean and 95 % half-width by batch means over consecutive batches (autocorrelation-safe
/// where a plain binomial interval would be too narrow).
fn batch_means(values: &[f64], batches: usize) -> Option<(f64, f64)> {
    if values.len() < batches * 5 || batches < 2 {
        return None;
    }
    let size = values.len() / batches;
    let means: Vec<f64> =
        (0..batches).map(|b| values[b * size..(b + 1) * size].iter().sum::<f64>() / size as f64).collect();
    let mean = means.iter().sum::<f64>() / batches as f64;
    let var = means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (batches - 1) as f64;
    // Student t, 97.5 % quantile, for batches - 1 degrees of freedom (10 batches: 2.262).
    let t = match batches - 1 {
        1 => 12.706,
        2..=4 => 2.776,
        5..=9 => 2.262,
        _ => 2.0,
    };
    Some((mean, t * (var / batches as f64).sqrt()))
}

pub(super) async fn conclude(
    setup: &Arc<Setup>,
    reports: &mut ReportingServiceClient<Channel>,
    agent_ids: &[String],
    arrivals_started: Instant,
    arrivals_ended: Instant,
    segment: bool,
    full: FullCheck,
) -> anyhow::Result<Report> {
    let sc = &setup.sc;
    let mut problems = Vec::new();

    // Conservation: every created contact is in a terminal state (read back with GetContact).
    let names: Vec<(String, String)> =
        lock(&setup.shared).contacts.iter().map(|(n, c)| (n.clone(), c.tenant.clone())).collect();
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    let mut stuck = Vec::new();
    let mut final_state: HashMap<String, i32> = HashMap::new();
    let mut checks = tokio::task::JoinSet::new();
    for (i, (name, tenant)) in names.into_iter().enumerate() {
        let mut client = ContactServiceClient::new(setup.channels[i % setup.channels.len()].clone());
        let token = setup.auth.token(Some(&tenant), Role::Supervisor, None)?;
        checks.spawn(async move {
            // As a frontend would: an overloaded or restarting sessions answers UNAVAILABLE
            // for a moment (a chaos run's machine is saturated), so ask again for up to 30 s.
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut backoff = Duration::from_millis(200);
            loop {
                let r = client.get_contact(req(pb::GetContactRequest { name: name.clone() }, &token)?).await;
                match r {
                    Err(e)
                        if matches!(e.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
                            && Instant::now() + backoff < deadline =>
                    {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                    r => return anyhow::Ok((name, r.map(|c| c.into_inner().state))),
                }
            }
        });
        if checks.len() >= 16 {
            if let Some(r) = checks.join_next().await {
                let (name, state) = r??;
                if let Ok(s) = &state {
                    final_state.insert(name.clone(), *s);
                }
                tally(&mut states, &mut stuck, name, state);
            }
        }
    }
    while let Some(r) = checks.join_next().await {
        let (name, state) = r??;
        if let Ok(s) = &state {
            final_state.insert(name.clone(), *s);
        }
        tally(&mut states, &mut stuck, name, state);
    }
    // The floor is quiet now: take the state (anything still running writes to a fresh one).
    let st = std::mem::take(&mut *lock(&setup.shared));
    if !stuck.is_empty() {
        problems.push(format!(
            "{} contacts not in a terminal state after the drain: {}",
            stuck.len(),
            stuck.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let twice: Vec<&String> = st.contacts.iter().filter(|(_, c)| c.accepts > 1).map(|(n, _)| n).collect();
    if !twice.is_empty() {
        problems.push(format!("{} contacts accepted more than once", twice.len()));
    }
    if !st.capacity_violations.is_empty() {
        problems.push(format!(
            "agents above capacity {} times, e.g. {}",
            st.capacity_violations.len(),
            st.capacity_violations[0]
        ));
    }
    if !stuck.is_empty() {
        eprintln!("[sim] {} contacts still open at the end of the drain:", stuck.len());
        for s in stuck.iter().take(50) {
            eprintln!("[sim]   {s}");
        }
    }

    // The full check: the contacts topic read back, and reporting's totals.
    let mut full_json = serde_json::Value::Null;
    if full.on {
        let tenants: HashSet<String> = sc.tenants.iter().map(|t| setup.tenant_id(&t.id)).collect();
        let mut names: Vec<String> = st.contacts.keys().cloned().collect();
        names.sort_unstable();
        let log = super::chaos::check_log(&full.brokers, &full.topics, tenants, &names).await;
        problems.extend(log.problems);
        let mut expected: BTreeMap<String, super::chaos::Totals> =
            sc.tenants.iter().map(|t| (setup.tenant_id(&t.id), super::chaos::Totals::default())).collect();
        for (name, c) in &st.contacts {
            let e = expected.entry(c.tenant.clone()).or_default();
            e.offered += 1;
            if c.accepted.is_some() {
                e.answered += 1;
            }
            if final_state.get(name) == Some(&(pb::ContactState::Abandoned as i32)) {
                e.abandoned += 1;
            }
        }
        let (reporting_json, p) = super::chaos::check_reporting(setup, reports, &expected, full.wall_started).await;
        problems.extend(p);
        let crm_json = match &full.crm {
            Some(channel) => {
                let (j, p) = super::chaos::check_crm(setup, channel.clone(), &st.contacts, &final_state).await;
                problems.extend(p);
                j
            }
            None => serde_json::Value::Null,
        };
        let failed_restarts: Vec<&super::chaos::Kill> = full.kills.iter().filter(|k| k.problem.is_some()).collect();
        if !failed_restarts.is_empty() {
            problems.push(format!(
                "{} of {} chaos kills/restarts went wrong, e.g. {:?}",
                failed_restarts.len(),
                full.kills.len(),
                failed_restarts[0]
            ));
        }
        let mut by_service: BTreeMap<&str, u64> = BTreeMap::new();
        for k in &full.kills {
            *by_service.entry(k.service.as_str()).or_default() += 1;
        }
        eprintln!("[chaos] {} kills: {by_service:?}", full.kills.len());
        full_json = serde_json::json!({
            "kills": full.kills, "kills_by_service": by_service,
            "contacts_topic": log.json, "reporting_totals": reporting_json, "crm_timelines": crm_json,
        });
    }

    // Queue figures from the simulator, in simulated time, over contacts that arrived
    // after the warm-up and before arrivals stopped.
    let scale = sc.time_scale;
    let warm = arrivals_started + Duration::from_secs_f64(sc.warmup_seconds / scale);
    let mut per_queue = serde_json::Map::new();
    let mut erlang = serde_json::Value::Null;
    // Replicas of a tenant are measured together.
    for t in sc.tenants.iter().filter(|t| t.id == t.group) {
        let members: Vec<&scenario::TenantSpec> = sc.tenants.iter().filter(|m| m.group == t.group).collect();
        let tenants: HashSet<String> = members.iter().map(|m| setup.tenant_id(&m.id)).collect();
        let replicas = members.len();
        for q in &t.queues {
            let mine: Vec<&ContactRec> = st
                .contacts
                .values()
                .filter(|c| {
                    tenants.contains(&c.tenant) && c.queue == q.id && c.created >= warm && c.created < arrivals_ended
                })
                .collect();
            let mut ordered: Vec<&ContactRec> = mine.iter().copied().filter(|c| c.accepted.is_some()).collect();
            ordered.sort_by_key(|c| c.created);
            let waits: Vec<f64> = ordered.iter().filter_map(|c| c.wait_sim(scale)).collect();
            let within: Vec<f64> = waits.iter().map(|w| f64::from(u8::from(*w <= q.service_level_seconds))).collect();
            let answered = waits.len();
            let abandoned = mine.iter().filter(|c| c.abandoned).count();
            let sl = (answered > 0).then(|| 100.0 * within.iter().sum::<f64>() / answered as f64);
            let asa = (answered > 0).then(|| waits.iter().sum::<f64>() / answered as f64);
            // 95 % intervals: from the replicas' means when there are replicas (independent
            // by construction), else by batch means over time.
            // Each replica's sums over the measured window: the intervals below, and the
            // record that lets segments run on fresh brokers be pooled (`pool-erlang-c`).
            let replica_sums: Vec<Replica> = tenants
                .iter()
                .map(|tid| {
                    let arrived: Vec<&ContactRec> = mine.iter().copied().filter(|c| &c.tenant == tid).collect();
                    let waits: Vec<f64> = arrived.iter().filter_map(|c| c.wait_sim(scale)).collect();
                    Replica {
                        arrived: arrived.len() as u64,
                        answered: waits.len() as u64,
                        answered_within_threshold: waits.iter().filter(|w| **w <= q.service_level_seconds).count()
                            as u64,
                        wait_seconds_sum: waits.iter().sum(),
                        handle_seconds_sum: arrived.iter().map(|c| c.handle_sim).sum(),
                    }
                })
                .collect();
            let (sl_ci, asa_ci) = if replicas >= 2 {
                replica_intervals(&replica_sums)
            } else {
                (batch_means(&within, 10).map(|(_, h)| 100.0 * h), batch_means(&waits, 10).map(|(_, h)| h))
            };
            let key = format!("{}/{}", t.group, q.id);
            let n_agents = scenario::agents_on(t, &q.id);
            // Occupancy of the agents serving this queue over the measured window.
            let window = (warm, arrivals_ended);
            let prefixes: Vec<String> = members.iter().map(|m| format!("sim{}-{}-", setup.run, m.id)).collect();
            let ids: Vec<&String> =
                agent_ids.iter().filter(|a| prefixes.iter().any(|p| a.starts_with(p.as_str()))).collect();
            let overlap = |(a, b): (Instant, Instant)| {
                let s = a.max(window.0);
                let e = b.min(window.1);
                e.checked_duration_since(s).unwrap_or_default().as_secs_f64()
            };
            let busy: f64 =
                ids.iter().flat_map(|a| st.busy.get(*a).into_iter().flatten()).map(|iv| overlap(*iv)).sum::<f64>()
                    + ids.iter().filter_map(|a| st.busy_since.get(*a)).map(|s| overlap((*s, window.1))).sum::<f64>();
            let away: f64 = ids.iter().flat_map(|a| st.away.get(*a).into_iter().flatten()).map(|iv| overlap(*iv)).sum();
            let span = window.1.checked_duration_since(window.0).unwrap_or_default().as_secs_f64();
            let available = ids.len() as f64 * span - away;
            let occupancy = (available > 0.0).then(|| 100.0 * busy / available);
            per_queue.insert(
                key.clone(),
                serde_json::json!({
                    "arrived": mine.len(), "answered": answered, "abandoned": abandoned,
                    "service_level_percent": sl, "service_level_ci95_points": sl_ci,
                    "asa_seconds": asa, "asa_ci95_seconds": asa_ci,
                    "occupancy_percent": occupancy, "agents": n_agents, "replicas": replicas,
                }),
            );
            if let Some(check) = sc.erlang_c.as_ref().filter(|e| e.tenant == t.group && e.queue == q.id) {
                let expected = centralita_reporting_erlang(
                    q.arrivals_per_second,
                    q.handle.mean_seconds,
                    q.service_level_seconds,
                    n_agents,
                );
                // Erlang C at the load this run actually drew (arrivals counted, handle times
                // averaged over the measured window): the Poisson count and the drawn handle
                // times vary from run to run, and that variation is not the platform's.
                let window_sim = span * scale;
                let lambda_hat = mine.len() as f64 / (replicas as f64 * window_sim).max(f64::MIN_POSITIVE);
                let aht_hat = mine.iter().map(|c| c.handle_sim).sum::<f64>() / mine.len().max(1) as f64;
                let realized = centralita_reporting_erlang(lambda_hat, aht_hat, q.service_level_seconds, n_agents);
                // The reporting service's figures for the same tenants (all contacts of the run).
                let ts = |i: Instant| {
                    let ago = Instant::now().duration_since(i).as_secs() as i64;
                    Some(prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() - ago, nanos: 0 })
                };
                let query = rpb::QueryHistoryRequest {
                    tenant: String::new(),
                    start_time: ts(arrivals_started).map(|mut t| {
                        t.seconds -= 60;
                        t
                    }),
                    end_time: ts(Instant::now()).map(|mut t| {
                        t.seconds += 60;
                        t
                    }),
                    granularity: rpb::Granularity::Month as i32,
                    group_by: vec![rpb::Dimension::Queue as i32],
                    queue: q.id.clone(),
                    service_level_definition: "answered".into(),
                };
                let (mut rep_answered, mut rep_within, mut rep_wait) = (0u64, 0u64, 0.0f64);
                let (mut handling, mut idle, mut handling_window, mut idle_window) = (0i64, 0i64, 0i64, 0i64);
                for tenant in &tenants {
                    let sup = setup.auth.token(Some(tenant), Role::Supervisor, None)?;
                    let mut query = query.clone();
                    for _ in 0..60 {
                        let h = reports.query_history(req(query.clone(), &sup)?).await?.into_inner();
                        let f =
                            h.rows.iter().filter_map(|r| r.figures.as_ref()).fold((0u64, 0u64, 0.0f64), |acc, f| {
                                (
                                    acc.0 + f.answered,
                                    acc.1 + f.answered_within_threshold,
                                    acc.2 + f.asa_seconds.unwrap_or(0.0) * f.answered as f64,
                                )
                            });
                        let expected_answered = st
                            .contacts
                            .values()
                            .filter(|c| &c.tenant == tenant && c.queue == q.id && c.accepted.is_some())
                            .count();
                        if f.0 as usize >= expected_answered {
                            rep_answered += f.0;
                            rep_within += f.1;
                            rep_wait += f.2;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    query.group_by = vec![rpb::Dimension::Agent as i32];
                    query.queue.clear();
                    let h = reports.query_history(req(query.clone(), &sup)?).await?.into_inner();
                    for t in h.rows.iter().filter_map(|r| r.agent_time) {
                        handling += t.handling_ms;
                        idle += t.idle_ms;
                    }
                    // The same agents over the simulator's measured window (after warm-up,
                    // until the last arrival), which the reporting service clips spans to.
                    query.start_time = ts(window.0);
                    query.end_time = ts(window.1);
                    let h = reports.query_history(req(query, &sup)?).await?.into_inner();
                    for t in h.rows.iter().filter_map(|r| r.agent_time) {
                        handling_window += t.handling_ms;
                        idle_window += t.idle_ms;
                    }
                }
                let rep_sl = (rep_answered > 0).then(|| 100.0 * rep_within as f64 / rep_answered as f64);
                let rep_asa = (rep_answered > 0).then(|| rep_wait / rep_answered as f64 * scale);
                let occupancy_of = |handling: i64, idle: i64| {
                    (handling + idle > 0).then(|| 100.0 * handling as f64 / (handling + idle) as f64)
                };
                let rep_occ = occupancy_of(handling, idle);
                let rep_occ_window = occupancy_of(handling_window, idle_window);
                if let (Some(r), Some(o)) = (rep_occ_window, occupancy) {
                    if (r - o).abs() > check.service_level_points {
                        problems.push(format!(
                            "{key}: reporting says occupancy {r:.1} % over the measured window; the simulator {o:.1} %"
                        ));
                    }
                }
                let sim_answered_all = st
                    .contacts
                    .values()
                    .filter(|c| tenants.contains(&c.tenant) && c.queue == q.id && c.accepted.is_some())
                    .count();
                let sim_all: Vec<f64> = st
                    .contacts
                    .values()
                    .filter(|c| tenants.contains(&c.tenant) && c.queue == q.id)
                    .filter_map(|c| c.wait_sim(scale))
                    .collect();
                let sim_sl_all = 100.0 * sim_all.iter().filter(|w| **w <= q.service_level_seconds).count() as f64
                    / sim_all.len().max(1) as f64;
                let sim_asa_all = sim_all.iter().sum::<f64>() / sim_all.len().max(1) as f64;
                let sl_ok = sl.is_some_and(|v| (v - realized.1).abs() <= check.service_level_points);
                let asa_ok = asa.is_some_and(|v| (v - realized.2).abs() <= realized.2 * check.asa_percent / 100.0);
                if segment {
                    eprintln!("[sim] a segment: the Erlang C verdict is left to pool-erlang-c");
                }
                if !sl_ok && !segment {
                    problems.push(format!(
                        "{key}: service level {:.1} % is not within {} points of Erlang C's {:.1} % at the drawn load",
                        sl.unwrap_or(f64::NAN),
                        check.service_level_points,
                        realized.1
                    ));
                }
                if !asa_ok && !segment {
                    problems.push(format!(
                        "{key}: ASA {:.2} s is not within {} % of Erlang C's {:.2} s at the drawn load",
                        asa.unwrap_or(f64::NAN),
                        check.asa_percent,
                        realized.2
                    ));
                }
                let rep_sl_ok = rep_sl.is_some_and(|v| (v - sim_sl_all).abs() <= check.service_level_points);
                if !rep_sl_ok || rep_answered as usize != sim_answered_all {
                    problems.push(format!(
                        "{key}: reporting says {rep_answered} answered, SL {:.1} %; the simulator {sim_answered_all} answered, SL {sim_sl_all:.1} %",
                        rep_sl.unwrap_or(f64::NAN)
                    ));
                }
                erlang = serde_json::json!({
                    "queue": key, "agents": n_agents, "replicas": replicas,
                    "load_erlangs": q.arrivals_per_second * q.handle.mean_seconds,
                    "erlang_c": { "service_level_percent": expected.1, "asa_seconds": expected.2, "occupancy_percent": expected.3, "p_wait": expected.0 },
                    "erlang_c_at_drawn_load": { "arrivals_per_second": lambda_hat, "aht_seconds": aht_hat, "load_erlangs": lambda_hat * aht_hat,
                        "service_level_percent": realized.1, "asa_seconds": realized.2, "occupancy_percent": realized.3 },
                    "simulator_steady_state": { "contacts": answered, "service_level_percent": sl, "service_level_ci95_points": sl_ci, "asa_seconds": asa, "asa_ci95_seconds": asa_ci, "occupancy_percent": occupancy },
                    "simulator_all_contacts": { "contacts": sim_answered_all, "service_level_percent": sim_sl_all, "asa_seconds": sim_asa_all },
                    "reporting_service_all_contacts": { "contacts": rep_answered, "service_level_percent": rep_sl, "asa_seconds": rep_asa, "occupancy_percent": rep_occ },
                    "reporting_service_measured_window": { "occupancy_percent": rep_occ_window },
                    "within_tolerance": sl_ok && asa_ok,
                    "segment": {
                        "window_simulated_seconds": window_sim,
                        "service_level_seconds": q.service_level_seconds,
                        "tolerance": { "service_level_points": check.service_level_points, "asa_percent": check.asa_percent },
                        "replica_figures": replica_sums,
                    },
                });
                eprintln!(
                    "[sim] Erlang C {key} (N = {n_agents}, A = {:.1}): SL {:.1} % / ASA {:.2} s / occupancy {:.1} %",
                    q.arrivals_per_second * q.handle.mean_seconds,
                    expected.1,
                    expected.2,
                    expected.3
                );
                eprintln!(
                    "[sim] Erlang C at the drawn load (λ {lambda_hat:.4}/s, AHT {aht_hat:.1} s, A = {:.2}): SL {:.1} % / ASA {:.2} s / occupancy {:.1} %",
                    lambda_hat * aht_hat, realized.1, realized.2, realized.3
                );
                eprintln!(
                    "[sim]   simulator ({answered} contacts after warm-up): SL {:.1} % (±{:.1}) / ASA {:.2} s (±{:.2}) / occupancy {:.1} %",
                    sl.unwrap_or(f64::NAN), sl_ci.unwrap_or(f64::NAN), asa.unwrap_or(f64::NAN), asa_ci.unwrap_or(f64::NAN), occupancy.unwrap_or(f64::NAN)
                );
                eprintln!(
                    "[sim]   reporting ({rep_answered} contacts, whole run): SL {:.1} % / ASA {:.2} s / occupancy {:.1} %; simulator, whole run: SL {sim_sl_all:.1} % / ASA {sim_asa_all:.2} s",
                    rep_sl.unwrap_or(f64::NAN), rep_asa.unwrap_or(f64::NAN), rep_occ.unwrap_or(f64::NAN)
                );
                eprintln!(
                    "[sim]   reporting, agents over the measured window: occupancy {:.1} %",
                    rep_occ_window.unwrap_or(f64::NAN)
                );
            }
        }
    }

    // Steps (one, or the ramp's) and the knee.
    let mut steps_json = Vec::new();
    let mut knee = None;
    for s in &st.steps {
        let h = s.enqueue_to_offer.as_ref();
        let secs = match (s.started, s.ended) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let p99 = h.map(|h| h.value_at_quantile(0.99) as f64 / 1000.0).unwrap_or(f64::NAN);
        let ok = s.errors.is_empty() && p99 <= sc.target_p99_ms;
        if ok {
            knee = Some(knee.map_or(s.offered_rate, |k: f64| k.max(s.offered_rate)));
        }
        steps_json.push(serde_json::json!({
            "multiplier": s.multiplier, "offered_per_second": s.offered_rate,
            "achieved_per_second": if secs > 0.0 { s.created as f64 / secs } else { 0.0 },
            "created": s.created,
            "enqueue_to_offer_ms": h.map(quantiles),
            "errors": s.errors, "within_target": ok,
        }));
        eprintln!(
            "[sim] step x{}: {:.1}/s offered, {:.1}/s achieved; enqueue→offer p50 {:.1} ms p99 {:.1} ms p99.9 {:.1} ms; errors {:?}",
            s.multiplier,
            s.offered_rate,
            if secs > 0.0 { s.created as f64 / secs } else { 0.0 },
            h.map(|h| h.value_at_quantile(0.5) as f64 / 1000.0).unwrap_or(f64::NAN),
            p99,
            h.map(|h| h.value_at_quantile(0.999) as f64 / 1000.0).unwrap_or(f64::NAN),
            s.errors
        );
    }
    if sc.ramp.is_some() {
        match knee {
            Some(k) => {
                eprintln!("[sim] knee: {k:.1} contacts/s (p99 enqueue→offer ≤ {} ms, no errors)", sc.target_p99_ms)
            }
            None => eprintln!("[sim] no step met p99 ≤ {} ms with no errors", sc.target_p99_ms),
        }
    }
    let calls: serde_json::Map<String, serde_json::Value> =
        st.calls.iter().filter_map(|(k, h)| h.as_ref().map(|h| ((*k).to_owned(), quantiles(h)))).collect();
    eprintln!(
        "[sim] {} contacts created; final states {states:?}; {} offers ({} rejected, {} left to ring out); errors {:?}; {} problem(s)",
        st.contacts.len(), st.offers, st.rejects, st.ignored, st.errors, problems.len()
    );
    Ok(Report {
        json: serde_json::json!({
            "scenario": sc.name, "run": setup.run, "seed": sc.seed, "time_scale": sc.time_scale,
            "contacts_created": st.contacts.len(), "final_states": states,
            "offers": st.offers, "rejected": st.rejects, "rang_out": st.ignored, "offers_gone": st.offers_gone,
            "queues": per_queue, "erlang_c": erlang, "steps": steps_json, "knee_contacts_per_second": knee,
            "api_calls_ms": calls, "errors": st.errors, "recovered": st.recovered,
            "conservation": { "not_terminal": stuck.len(), "accepted_twice": twice.len(), "capacity_violations": st.capacity_violations.len() },
            "open_contacts": stuck, "chaos": full_json,
            "problems": problems,
        }),
        problems,
    })
}

fn tally(states: &mut BTreeMap<String, u64>, stuck: &mut Vec<String>, name: String, state: Result<i32, tonic::Status>) {
    match state {
        Ok(s) => {
            let label =
                pb::ContactState::try_from(s).map(|s| s.as_str_name().to_owned()).unwrap_or_else(|_| s.to_string());
            let terminal = [
                pb::ContactState::Closed as i32,
                pb::ContactState::Abandoned as i32,
                pb::ContactState::TimedOut as i32,
            ];
            if !terminal.contains(&s) {
                stuck.push(format!("{name} ({label})"));
            }
            *states.entry(label).or_default() += 1;
        }
        Err(e) => {
            stuck.push(format!("{name} (GetContact: {:?})", e.code()));
        }
    }
}

/// Erlang C (P_wait, SL %, ASA s, occupancy %) of the reporting service's implementation.
pub(crate) fn centralita_reporting_erlang(lambda: f64, aht: f64, t: f64, n: u32) -> (f64, f64, f64, f64) {
    match centralita_reporting::erlang::expected(lambda, aht, t, n) {
        Ok(e) => (e.p_wait, e.service_level * 100.0, e.asa_seconds, e.occupancy * 100.0),
        Err(_) => (f64::NAN, f64::NAN, f64::NAN, f64::NAN),
    }
}
