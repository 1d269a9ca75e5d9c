//! `pool-erlang-c`: one Erlang C comparison over several `simulate --segment` runs.
//!
//! tansu's memory storage lists every stored batch of a partition on each fetch, so the
//! platform's dispatch latency grows with how long a run has been going, and a long run
//! measures the broker's slowdown as much as the queue. Segments run on a freshly started
//! broker each keep that latency flat; their replicas are independent (own tenants, own
//! draws), so they pool into one set of replications: the service level and ASA are the
//! pooled ratios, the 95 % intervals come from the replicas' means, and Erlang C is taken
//! at the load all segments drew together.
//!
//! Alongside, a load-adjusted estimate (a control variate, as in Law & Kelton's simulation
//! texts): much of a replica's service level is explained by how much work it happened to
//! draw (arrivals × handle times), whose true mean the scenario fixes. Each replica's figure
//! is corrected by the fitted slope times its load's distance from that mean, which
//! estimates the figure at the scenario's load with a narrower interval; it is compared
//! with Erlang C at the scenario's load. It is reported, not judged: the verdict stays the
//! plain comparison.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::simulate::centralita_reporting_erlang;

#[derive(Debug, clap::Args)]
pub struct PoolArgs {
    /// The segments' JSON results (`simulate --segment --json`).
    #[arg(required = true, num_args = 2..)]
    segments: Vec<PathBuf>,
    /// Where to write the pooled JSON (stdout when absent).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct SegmentFile {
    run: String,
    seed: Option<u64>,
    contacts_created: u64,
    conservation: Conservation,
    problems: Vec<String>,
    erlang_c: Option<ErlangPart>,
    #[serde(default)]
    steps: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Conservation {
    not_terminal: u64,
    accepted_twice: u64,
    capacity_violations: u64,
}

#[derive(Debug, Deserialize)]
struct ErlangPart {
    queue: String,
    agents: u32,
    /// The scenario's offered load (λ × mean handle time).
    load_erlangs: f64,
    /// Erlang C at the scenario's load.
    erlang_c: Nominal,
    segment: Option<Segment>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Nominal {
    service_level_percent: f64,
    asa_seconds: f64,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Tolerance {
    service_level_points: f64,
    asa_percent: f64,
}

#[derive(Debug, Deserialize)]
struct Segment {
    window_simulated_seconds: f64,
    service_level_seconds: f64,
    tolerance: Tolerance,
    replica_figures: Vec<Replica>,
}

/// One replica's sums over the measured window (simulated seconds), as `simulate` writes
/// them for each replica of the Erlang C queue.
#[derive(Debug, Serialize, Deserialize, Clone, Copy)]
pub(crate) struct Replica {
    pub arrived: u64,
    pub answered: u64,
    pub answered_within_threshold: u64,
    pub wait_seconds_sum: f64,
    pub handle_seconds_sum: f64,
}

/// 95 % half-width of the mean of independent replications (Student t).
fn replica_ci(values: &[f64]) -> Option<f64> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = match n - 1 {
        1 => 12.706,
        2 => 4.303,
        3 => 3.182,
        4 => 2.776,
        5 => 2.571,
        6 => 2.447,
        7 => 2.365,
        8..=9 => 2.306,
        10..=14 => 2.228,
        15..=29 => 2.131,
        _ => 2.0,
    };
    Some(t * (var / n as f64).sqrt())
}

/// 95 % half-widths of the service level (points) and ASA (seconds) over the means of the
/// replicas that answered something.
pub(crate) fn replica_intervals<'a>(replicas: impl IntoIterator<Item = &'a Replica>) -> (Option<f64>, Option<f64>) {
    let (sls, asas): (Vec<f64>, Vec<f64>) = replicas.into_iter().filter_map(Replica::means).unzip();
    (replica_ci(&sls), replica_ci(&asas))
}

impl Replica {
    /// The replica's service level (percent) and ASA (seconds); `None` if it answered
    /// nothing.
    fn means(&self) -> Option<(f64, f64)> {
        (self.answered > 0).then(|| {
            let n = self.answered as f64;
            (100.0 * self.answered_within_threshold as f64 / n, self.wait_seconds_sum / n)
        })
    }
}

/// Control-variate estimate of the mean of `y` at `x`'s known mean `x_mean`: the mean of
/// `y_i - b (x_i - x_mean)`, `b` the least-squares slope of `y` on `x`, with the 95 %
/// half-width of that mean. `None` for fewer than 3 replicas or `x` without spread.
fn control_variate(y: &[f64], x: &[f64], x_mean: f64) -> Option<(f64, f64)> {
    let n = y.len();
    if n < 3 || x.len() != n {
        return None;
    }
    let (my, mx) = (y.iter().sum::<f64>() / n as f64, x.iter().sum::<f64>() / n as f64);
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let b = x.iter().zip(y).map(|(a, c)| (a - mx) * (c - my)).sum::<f64>() / sxx;
    let adjusted: Vec<f64> = x.iter().zip(y).map(|(a, c)| c - b * (a - x_mean)).collect();
    Some((adjusted.iter().sum::<f64>() / n as f64, replica_ci(&adjusted)?))
}

/// The pooled comparison, ready to print and write.
#[derive(Debug)]
struct Pooled {
    json: serde_json::Value,
    problems: Vec<String>,
    lines: Vec<String>,
}

pub fn run(args: PoolArgs) -> anyhow::Result<()> {
    let mut segments = Vec::new();
    for path in &args.segments {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let seg: SegmentFile =
            serde_json::from_str(&text).with_context(|| format!("{} is not a simulate result", path.display()))?;
        segments.push((path.display().to_string(), seg));
    }
    let pooled = pool(&segments)?;
    for line in &pooled.lines {
        eprintln!("[pool] {line}");
    }
    let text = serde_json::to_string_pretty(&pooled.json)?;
    match &args.json {
        Some(path) => std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?,
        None => println!("{text}"),
    }
    if !pooled.problems.is_empty() {
        bail!("the pooled run found {} problem(s):\n  {}", pooled.problems.len(), pooled.problems.join("\n  "));
    }
    Ok(())
}

fn pool(segments: &[(String, SegmentFile)]) -> anyhow::Result<Pooled> {
    let mut problems = Vec::new();
    let mut replicas: Vec<(Replica, f64)> = Vec::new();
    let mut first: Option<(&str, u32, f64, &Tolerance)> = None;
    let mut nominal: Option<(f64, &Nominal)> = None;
    let mut per_segment = Vec::new();
    let mut seeds: std::collections::BTreeMap<u64, &str> = std::collections::BTreeMap::new();
    for (path, seg) in segments {
        // The same seed draws the same arrivals and handle times: not an independent sample.
        let Some(seed) = seg.seed else { bail!("{path} does not record its seed") };
        if let Some(other) = seeds.insert(seed, path) {
            bail!("{path} and {other} used the same seed ({seed}), so the same draws: run segments with --seed");
        }
        let Some(erlang) = &seg.erlang_c else { bail!("{path} has no Erlang C check (the scenario needs erlangC)") };
        let Some(part) = &erlang.segment else {
            bail!("{path} was not run as a segment (simulate --segment records the replicas' sums)")
        };
        match nominal {
            None => nominal = Some((erlang.load_erlangs, &erlang.erlang_c)),
            Some((load, e)) if load != erlang.load_erlangs || *e != erlang.erlang_c => {
                bail!(
                    "{path} offers {} erlangs, the first segment {load}: only the same scenario pools",
                    erlang.load_erlangs
                )
            }
            Some(_) => {}
        }
        match first {
            None => first = Some((&erlang.queue, erlang.agents, part.service_level_seconds, &part.tolerance)),
            Some((queue, agents, threshold, tolerance)) => {
                if queue != erlang.queue
                    || agents != erlang.agents
                    || threshold != part.service_level_seconds
                    || *tolerance != part.tolerance
                {
                    bail!("{path} measures {} with {} agents and a {} s threshold; the first segment {queue} with {agents} agents and {threshold} s: only the same queue pools", erlang.queue, erlang.agents, part.service_level_seconds);
                }
            }
        }
        if !seg.problems.is_empty() {
            problems.push(format!("{path} (run {}): {}", seg.run, seg.problems.join("; ")));
        }
        let c = &seg.conservation;
        if c.not_terminal + c.accepted_twice + c.capacity_violations > 0 {
            problems.push(format!(
                "{path} (run {}): {} not terminal, {} accepted twice, {} capacity violations",
                seg.run, c.not_terminal, c.accepted_twice, c.capacity_violations
            ));
        }
        if part.window_simulated_seconds <= 0.0 || part.replica_figures.is_empty() {
            bail!("{path} has an empty measured window");
        }
        replicas.extend(part.replica_figures.iter().map(|r| (*r, part.window_simulated_seconds)));
        let p50 =
            seg.steps.first().and_then(|s| s.pointer("/enqueue_to_offer_ms/p50")).and_then(serde_json::Value::as_f64);
        per_segment.push(serde_json::json!({
            "file": path, "run": seg.run, "seed": seed, "contacts_created": seg.contacts_created,
            "replicas": part.replica_figures.len(), "enqueue_to_offer_p50_ms": p50,
        }));
    }
    let (Some((queue, agents, threshold, tolerance)), Some((nominal_load, at_nominal))) = (first, nominal) else {
        bail!("no segments")
    };

    let answered: u64 = replicas.iter().map(|(r, _)| r.answered).sum();
    let within: u64 = replicas.iter().map(|(r, _)| r.answered_within_threshold).sum();
    let arrived: u64 = replicas.iter().map(|(r, _)| r.arrived).sum();
    if answered == 0 {
        bail!("no contact was answered in any segment's measured window");
    }
    let sl = 100.0 * within as f64 / answered as f64;
    let asa = replicas.iter().map(|(r, _)| r.wait_seconds_sum).sum::<f64>() / answered as f64;
    let (sl_ci, asa_ci) = replica_intervals(replicas.iter().map(|(r, _)| r));

    // Erlang C at the load the segments drew together.
    let exposure: f64 = replicas.iter().map(|(_, window)| window).sum();
    let lambda = arrived as f64 / exposure;
    let aht = replicas.iter().map(|(r, _)| r.handle_seconds_sum).sum::<f64>() / arrived.max(1) as f64;
    let (_, e_sl, e_asa, e_occ) = centralita_reporting_erlang(lambda, aht, threshold, agents);
    // The load-adjusted figures at the scenario's load, against Erlang C there.
    let (loads, (sls, asas)): (Vec<f64>, (Vec<f64>, Vec<f64>)) =
        replicas.iter().filter_map(|(r, window)| Some((r.handle_seconds_sum / window, r.means()?))).unzip();
    let (adj_sl, adj_asa) = (control_variate(&sls, &loads, nominal_load), control_variate(&asas, &loads, nominal_load));
    let (n_sl, n_asa) = (at_nominal.service_level_percent, at_nominal.asa_seconds);
    let sl_ok = (sl - e_sl).abs() <= tolerance.service_level_points;
    let asa_ok = (asa - e_asa).abs() <= e_asa * tolerance.asa_percent / 100.0;
    if !sl_ok {
        problems.push(format!(
            "{queue}: pooled service level {sl:.1} % is not within {} points of Erlang C's {e_sl:.1} % at the drawn load",
            tolerance.service_level_points
        ));
    }
    if !asa_ok {
        problems.push(format!(
            "{queue}: pooled ASA {asa:.2} s is not within {} % of Erlang C's {e_asa:.2} s at the drawn load",
            tolerance.asa_percent
        ));
    }
    let lines = vec![
        format!("{} segments, {} replicas of {queue} (N = {agents}), {answered} contacts answered after warm-up", segments.len(), replicas.len()),
        format!("Erlang C at the drawn load (λ {lambda:.4}/s, AHT {aht:.1} s, A = {:.2}): SL {e_sl:.1} % / ASA {e_asa:.2} s / occupancy {e_occ:.1} %", lambda * aht),
        format!(
            "pooled: SL {sl:.1} % (±{:.1}) / ASA {asa:.2} s (±{:.2}); {}",
            sl_ci.unwrap_or(f64::NAN),
            asa_ci.unwrap_or(f64::NAN),
            if sl_ok && asa_ok { "within tolerance" } else { "outside tolerance" }
        ),
    ];
    let mut lines = lines;
    if let (Some((a_sl, a_sl_ci)), Some((a_asa, a_asa_ci))) = (adj_sl, adj_asa) {
        lines.push(format!(
            "load-adjusted to A = {nominal_load:.2} (reported, not judged): SL {a_sl:.1} % (±{a_sl_ci:.1}) / ASA {a_asa:.2} s (±{a_asa_ci:.2}); Erlang C there: SL {n_sl:.1} % / ASA {n_asa:.2} s"
        ));
    }
    let json = serde_json::json!({
        "queue": queue, "agents": agents, "segments": per_segment, "replicas": replicas.len(),
        "erlang_c_at_drawn_load": { "arrivals_per_second": lambda, "aht_seconds": aht, "load_erlangs": lambda * aht,
            "service_level_percent": e_sl, "asa_seconds": e_asa, "occupancy_percent": e_occ },
        "pooled": { "contacts": answered, "service_level_percent": sl, "service_level_ci95_points": sl_ci,
            "asa_seconds": asa, "asa_ci95_seconds": asa_ci },
        "load_adjusted": {
            "load_erlangs": nominal_load,
            "erlang_c_service_level_percent": n_sl, "erlang_c_asa_seconds": n_asa,
            "service_level_percent": adj_sl.map(|a| a.0), "service_level_ci95_points": adj_sl.map(|a| a.1),
            "asa_seconds": adj_asa.map(|a| a.0), "asa_ci95_seconds": adj_asa.map(|a| a.1),
        },
        "tolerance": { "service_level_points": tolerance.service_level_points, "asa_percent": tolerance.asa_percent },
        "within_tolerance": sl_ok && asa_ok,
        "problems": problems,
    });
    Ok(Pooled { json, problems, lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(run: &str, replicas: &[(u64, u64, u64, f64, f64)], problems: &[&str]) -> (String, SegmentFile) {
        let seed = u64::from(run.as_bytes()[0]);
        let figures: Vec<serde_json::Value> = replicas
            .iter()
            .map(|(arrived, answered, within, wait, handle)| {
                serde_json::json!({ "arrived": arrived, "answered": answered, "answered_within_threshold": within,
                    "wait_seconds_sum": wait, "handle_seconds_sum": handle })
            })
            .collect();
        let text = serde_json::json!({
            "run": run, "seed": seed, "contacts_created": 10, "problems": problems,
            "conservation": { "not_terminal": 0, "accepted_twice": 0, "capacity_violations": 0 },
            "erlang_c": { "queue": "erlang/support", "agents": 55, "load_erlangs": 48.0,
                "erlang_c": { "service_level_percent": 84.59, "asa_seconds": 8.18 }, "segment": {
                "window_simulated_seconds": 3600.0, "service_level_seconds": 15.0,
                "tolerance": { "service_level_points": 2.0, "asa_percent": 15.0 },
                "replica_figures": figures } },
            "steps": [{ "enqueue_to_offer_ms": { "p50": 20.0 } }],
        })
        .to_string();
        (format!("{run}.json"), serde_json::from_str(&text).unwrap())
    }

    /// 720 arrivals in an hour at AHT 240 s is the load of the `docs/metrics.md` worked
    /// example (A = 48, N = 55): Erlang C gives SL 84.6 % and ASA 8.18 s.
    #[test]
    fn replicas_of_all_segments_pool_into_one_comparison() {
        let a = segment("a", &[(720, 720, 612, 5_904.0, 172_800.0), (720, 720, 605, 5_800.0, 172_800.0)], &[]);
        let b = segment("b", &[(720, 720, 610, 5_900.0, 172_800.0), (720, 720, 611, 5_960.0, 172_800.0)], &[]);
        let pooled = pool(&[a, b]).unwrap();
        let j = &pooled.json;
        assert_eq!(j["replicas"], 4);
        assert_eq!(j["pooled"]["contacts"], 2880);
        let sl = j["pooled"]["service_level_percent"].as_f64().unwrap();
        assert!((sl - 100.0 * 2438.0 / 2880.0).abs() < 1e-9, "{sl}");
        let lambda = j["erlang_c_at_drawn_load"]["arrivals_per_second"].as_f64().unwrap();
        assert!((lambda - 0.2).abs() < 1e-12, "{lambda}");
        let e_sl = j["erlang_c_at_drawn_load"]["service_level_percent"].as_f64().unwrap();
        assert!((e_sl - 84.59).abs() < 0.05, "{e_sl}");
        assert!(j["pooled"]["service_level_ci95_points"].as_f64().unwrap() > 0.0);
        assert_eq!(j["within_tolerance"], true, "{:?}", pooled.problems);
        assert!(pooled.problems.is_empty());
    }

    #[test]
    fn a_segment_outside_erlang_c_or_with_a_problem_fails_the_pool() {
        let slow = segment("a", &[(720, 720, 500, 14_400.0, 172_800.0), (720, 720, 510, 14_000.0, 172_800.0)], &[]);
        let broken = segment("b", &[(720, 720, 612, 5_904.0, 172_800.0)], &["2 contacts accepted more than once"]);
        let pooled = pool(&[slow, broken]).unwrap();
        assert_eq!(pooled.json["within_tolerance"], false);
        assert!(pooled.problems.iter().any(|p| p.contains("pooled service level")), "{:?}", pooled.problems);
        assert!(pooled.problems.iter().any(|p| p.contains("accepted more than once")), "{:?}", pooled.problems);
    }

    #[test]
    fn the_control_variate_removes_what_the_load_explains() {
        // y falls 2 per unit of x exactly: at x's true mean 47 every replica says 88.
        let (mean, half) = control_variate(&[90.0, 86.0, 82.0], &[46.0, 48.0, 50.0], 47.0).unwrap();
        assert!((mean - 88.0).abs() < 1e-9 && half.abs() < 1e-9, "{mean} ± {half}");
        // Uncorrelated noise is left as it is; at the drawn mean the estimate is the plain mean.
        let (mean, half) = control_variate(&[1.0, 3.0, 1.0, 3.0], &[1.0, 1.0, 3.0, 3.0], 2.0).unwrap();
        assert!((mean - 2.0).abs() < 1e-9 && half > 0.0, "{mean} ± {half}");
        assert_eq!(control_variate(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0], 5.0), None);
        assert_eq!(control_variate(&[1.0, 2.0], &[1.0, 2.0], 1.5), None);
        // The pool reports it next to Erlang C at the scenario's load.
        let a = segment("a", &[(700, 700, 600, 5_000.0, 165_000.0), (740, 740, 612, 6_500.0, 180_000.0)], &[]);
        let b = segment("b", &[(720, 720, 610, 5_900.0, 172_800.0), (725, 725, 605, 6_100.0, 174_000.0)], &[]);
        let j = pool(&[a, b]).unwrap().json;
        assert_eq!(j["load_adjusted"]["load_erlangs"], 48.0);
        assert_eq!(j["load_adjusted"]["erlang_c_service_level_percent"], 84.59);
        assert!(j["load_adjusted"]["service_level_ci95_points"].as_f64().unwrap() > 0.0, "{j}");
        let (path, mut other) = segment("c", &[(720, 720, 612, 5_904.0, 172_800.0)], &[]);
        other.erlang_c.as_mut().unwrap().load_erlangs = 40.0;
        let err = pool(&[segment("a", &[(720, 720, 612, 5_904.0, 172_800.0)], &[]), (path, other)]).unwrap_err();
        assert!(err.to_string().contains("only the same scenario pools"), "{err}");
    }

    #[test]
    fn segments_of_different_queues_or_without_sums_are_refused() {
        let a = segment("a", &[(720, 720, 612, 5_904.0, 172_800.0)], &[]);
        let (path, mut other) = segment("b", &[(720, 720, 612, 5_904.0, 172_800.0)], &[]);
        other.erlang_c.as_mut().unwrap().agents = 56;
        let err = pool(&[a, (path, other)]).unwrap_err().to_string();
        assert!(err.contains("only the same queue pools"), "{err}");
        let (path, mut plain) = segment("c", &[(720, 720, 612, 5_904.0, 172_800.0)], &[]);
        plain.erlang_c.as_mut().unwrap().segment = None;
        let err = pool(&[(path, plain)]).unwrap_err().to_string();
        assert!(err.contains("was not run as a segment"), "{err}");
        let (path, mut twin) = segment("d", &[(720, 720, 612, 5_904.0, 172_800.0)], &[]);
        twin.seed = Some(u64::from(b'a'));
        let err =
            pool(&[segment("a", &[(720, 720, 612, 5_904.0, 172_800.0)], &[]), (path, twin)]).unwrap_err().to_string();
        assert!(err.contains("used the same seed"), "{err}");
    }
}
