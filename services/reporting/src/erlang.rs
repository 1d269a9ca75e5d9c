//! Erlang C staffing (`docs/metrics.md#erlang-c`): Poisson arrivals, exponential handle
//! times, `n` agents, first come first served, no abandonment.
//!
//! Computed through the Erlang B recursion (`B_0 = 1`, `B_k = A·B_{k−1} / (k + A·B_{k−1})`,
//! then `C = n·B_n / (n − A·(1 − B_n))`): every step stays in (0, 1], so it is stable for
//! teams of thousands where the factorial form overflows.

use std::fmt;

/// Largest team the staffing search considers.
pub const MAX_AGENTS: u32 = 100_000;

/// Why a staffing question has no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ErlangError {
    /// A parameter outside its domain, with the field name.
    Invalid { field: &'static str, reason: String },
    /// No team up to [`MAX_AGENTS`] meets the target.
    Unreachable,
}

impl fmt::Display for ErlangError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid { field, reason } => write!(f, "{field}: {reason}"),
            Self::Unreachable => write!(f, "no team of up to {MAX_AGENTS} agents meets the target"),
        }
    }
}

impl std::error::Error for ErlangError {}

/// What a team of `agents` is expected to achieve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    pub agents: u32,
    /// Offered load `A = λ·AHT`, in Erlangs.
    pub load_erlangs: f64,
    /// Probability that a contact waits at all.
    pub p_wait: f64,
    /// Average speed of answer, seconds.
    pub asa_seconds: f64,
    /// Share answered within the threshold, 0 to 1.
    pub service_level: f64,
    /// `A / n`, 0 to 1.
    pub occupancy: f64,
}

/// A staffing question: arrivals per second, average handle time and the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Question {
    pub arrivals_per_second: f64,
    pub aht_seconds: f64,
    pub threshold_seconds: f64,
    /// Target share answered within the threshold, 0 to 1 (exclusive of 1).
    pub target_service_level: f64,
    /// Highest acceptable occupancy, 0 to 1; `None` means no cap.
    pub max_occupancy: Option<f64>,
}

/// The answer: the smallest team meeting both the service level and the occupancy cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer {
    pub expected: Expected,
    /// Agents needed for the service level alone (before the occupancy cap).
    pub agents_for_service_level: u32,
    /// Whether the occupancy cap, not the service level, set the team size.
    pub occupancy_capped: bool,
}

fn positive(field: &'static str, v: f64) -> Result<f64, ErlangError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(ErlangError::Invalid { field, reason: format!("must be a positive number, got {v}") })
    }
}

/// Erlang C probability of waiting for load `a` and `n` agents; 1 when `n <= a`.
pub fn p_wait(a: f64, n: u32) -> f64 {
    if f64::from(n) <= a {
        return 1.0;
    }
    let mut b = 1.0;
    for k in 1..=n {
        b = a * b / (f64::from(k) + a * b);
    }
    let n = f64::from(n);
    n * b / (n - a * (1.0 - b))
}

/// Expected figures of `n` agents facing `arrivals_per_second` with `aht_seconds`.
pub fn expected(
    arrivals_per_second: f64,
    aht_seconds: f64,
    threshold_seconds: f64,
    n: u32,
) -> Result<Expected, ErlangError> {
    let lambda = positive("arrivals_per_second", arrivals_per_second)?;
    let aht = positive("aht_seconds", aht_seconds)?;
    if !(threshold_seconds.is_finite() && threshold_seconds >= 0.0) {
        return Err(ErlangError::Invalid {
            field: "threshold_seconds",
            reason: format!("must be zero or more, got {threshold_seconds}"),
        });
    }
    let a = lambda * aht;
    if f64::from(n) <= a {
        return Err(ErlangError::Invalid {
            field: "agents",
            reason: format!("{n} agents cannot carry {a:.2} Erlangs: the queue grows without bound"),
        });
    }
    let pw = p_wait(a, n);
    let spare = f64::from(n) - a;
    Ok(Expected {
        agents: n,
        load_erlangs: a,
        p_wait: pw,
        asa_seconds: pw * aht / spare,
        service_level: 1.0 - pw * (-spare * threshold_seconds / aht).exp(),
        occupancy: a / f64::from(n),
    })
}

/// The smallest team that meets the target service level and the occupancy cap.
pub fn required(q: &Question) -> Result<Answer, ErlangError> {
    let lambda = positive("arrivals_per_second", q.arrivals_per_second)?;
    let aht = positive("aht_seconds", q.aht_seconds)?;
    if !(q.target_service_level > 0.0 && q.target_service_level < 1.0) {
        return Err(ErlangError::Invalid {
            field: "target_service_level",
            reason: format!("must be above 0 and below 100 %, got {}", q.target_service_level * 100.0),
        });
    }
    if let Some(cap) = q.max_occupancy {
        if !(cap > 0.0 && cap <= 1.0) {
            return Err(ErlangError::Invalid {
                field: "max_occupancy",
                reason: format!("must be above 0 and at most 100 %, got {}", cap * 100.0),
            });
        }
    }
    let a = lambda * aht;
    if a >= f64::from(MAX_AGENTS) {
        return Err(ErlangError::Unreachable);
    }
    // The first team that can carry the load at all, then upwards: the service level
    // grows with every agent added.
    let mut n = (a.floor() as u32) + 1;
    let mut b = 1.0;
    for k in 1..n {
        b = a * b / (f64::from(k) + a * b);
    }
    loop {
        if n > MAX_AGENTS {
            return Err(ErlangError::Unreachable);
        }
        b = a * b / (f64::from(n) + a * b);
        let nf = f64::from(n);
        let pw = nf * b / (nf - a * (1.0 - b));
        let sl = 1.0 - pw * (-(nf - a) * q.threshold_seconds / aht).exp();
        if sl >= q.target_service_level {
            break;
        }
        n += 1;
    }
    let for_sl = n;
    let for_cap = q.max_occupancy.map_or(0, |cap| {
        let min = (a / cap).ceil();
        // `a / cap` exactly integral means occupancy equals the cap, which is allowed.
        if min > f64::from(MAX_AGENTS) {
            MAX_AGENTS + 1
        } else {
            min as u32
        }
    });
    if for_cap > MAX_AGENTS {
        return Err(ErlangError::Unreachable);
    }
    let agents = for_sl.max(for_cap);
    Ok(Answer {
        expected: expected(lambda, aht, q.threshold_seconds, agents)?,
        agents_for_service_level: for_sl,
        occupancy_capped: for_cap > for_sl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of `docs/metrics.md#erlang-c`: λ = 0.2/s, AHT = 240 s, T = 15 s.
    #[test]
    fn reproduces_the_reference_table() {
        let table = [
            (53, 0.3765, 18.07, 72.5, 90.6),
            (54, 0.3013, 12.05, 79.3, 88.9),
            (55, 0.2387, 8.18, 84.6, 87.3),
            (56, 0.1872, 5.61, 88.6, 85.7),
            (57, 0.1452, 3.87, 91.7, 84.2),
        ];
        for (n, pw, asa, sl, occ) in table {
            let e = expected(0.2, 240.0, 15.0, n).expect("valid");
            assert_eq!(e.load_erlangs, 48.0);
            assert_eq!(format!("{:.4}", e.p_wait), format!("{pw:.4}"), "P_wait at N={n}");
            assert_eq!(format!("{:.2}", e.asa_seconds), format!("{asa:.2}"), "ASA at N={n}");
            assert_eq!(format!("{:.1}", e.service_level * 100.0), format!("{sl:.1}"), "SL at N={n}");
            assert_eq!(format!("{:.1}", e.occupancy * 100.0), format!("{occ:.1}"), "occupancy at N={n}");
        }
    }

    #[test]
    fn staffing_finds_the_smallest_team() {
        let q = Question {
            arrivals_per_second: 0.2,
            aht_seconds: 240.0,
            threshold_seconds: 15.0,
            target_service_level: 0.80,
            max_occupancy: None,
        };
        let a = required(&q).expect("reachable");
        assert_eq!((a.expected.agents, a.agents_for_service_level, a.occupancy_capped), (55, 55, false));
        // 84.6 % at 55 meets 84 %; 85 % needs 56.
        assert_eq!(required(&Question { target_service_level: 0.85, ..q }).expect("ok").expected.agents, 56);
        // An occupancy cap of 85 % needs ceil(48 / 0.85) = 57 agents.
        let capped = required(&Question { max_occupancy: Some(0.85), ..q }).expect("ok");
        assert_eq!((capped.expected.agents, capped.agents_for_service_level, capped.occupancy_capped), (57, 55, true));
    }

    #[test]
    fn large_teams_stay_finite() {
        // 2,000 Erlangs: the factorial form overflows long before this.
        let e = expected(10.0, 200.0, 20.0, 2_050).expect("valid");
        assert!(e.p_wait.is_finite() && (0.0..=1.0).contains(&e.p_wait));
        assert!(e.service_level > 0.9 && e.service_level <= 1.0);
        let a = required(&Question {
            arrivals_per_second: 10.0,
            aht_seconds: 200.0,
            threshold_seconds: 20.0,
            target_service_level: 0.8,
            max_occupancy: Some(0.99),
        })
        .expect("reachable");
        assert!(a.expected.agents > 2_000 && a.expected.agents < 2_100);
        assert!(a.expected.service_level >= 0.8);
        // One agent fewer misses the target (it is the smallest team).
        let fewer = expected(10.0, 200.0, 20.0, a.agents_for_service_level - 1).expect("valid");
        assert!(fewer.service_level < 0.8);
    }

    #[test]
    fn bad_questions_name_the_field() {
        let q = Question {
            arrivals_per_second: 0.2,
            aht_seconds: 240.0,
            threshold_seconds: 15.0,
            target_service_level: 0.8,
            max_occupancy: None,
        };
        let field = |r: Result<Answer, ErlangError>| match r {
            Err(ErlangError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        assert_eq!(field(required(&Question { arrivals_per_second: -1.0, ..q })), "arrivals_per_second");
        assert_eq!(field(required(&Question { aht_seconds: f64::NAN, ..q })), "aht_seconds");
        assert_eq!(field(required(&Question { target_service_level: 1.0, ..q })), "target_service_level");
        assert_eq!(field(required(&Question { max_occupancy: Some(1.5), ..q })), "max_occupancy");
        assert!(matches!(expected(0.2, 240.0, 15.0, 48), Err(ErlangError::Invalid { field: "agents", .. })));
        assert_eq!(required(&Question { arrivals_per_second: 1e6, ..q }), Err(ErlangError::Unreachable));
    }
}
