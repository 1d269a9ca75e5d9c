//! `StaffingService`: Erlang C staffing ([`crate::erlang`]) over gRPC.
//!
//! The average handle time and the service-level threshold of a request come as
//! `google.protobuf.Duration`s (`average_handle_time`, `service_level_threshold`) or, from
//! clients older than those, as the deprecated seconds they replaced (`aht_seconds`,
//! `threshold_seconds`). A Duration that is set wins; a refusal names the field the value
//! came from.

use centralita_platform::auth::caller;
use centralita_platform::error::Error;
use centralita_proto::reporting::v1::{self as pb, staffing_service_server::StaffingService};
use tonic::{Request, Response};

use super::R;
use crate::erlang;

#[derive(Debug, Clone, Copy)]
pub struct Staffing;

fn staffing_figures(e: &erlang::Expected) -> pb::StaffingFigures {
    pb::StaffingFigures {
        agents: e.agents,
        load_erlangs: e.load_erlangs,
        probability_of_waiting: e.p_wait,
        asa_seconds: e.asa_seconds,
        service_level_percent: e.service_level * 100.0,
        occupancy_percent: e.occupancy * 100.0,
    }
}

/// A staffing request in Erlang C's terms, with the request fields its two spans came from.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ask {
    question: erlang::Question,
    aht_field: &'static str,
    threshold_field: &'static str,
}

/// Seconds of the `Duration` field `field` when it is set, else of the deprecated seconds
/// field it replaced; with the name of the field used.
fn seconds(
    d: Option<&prost_types::Duration>,
    field: &'static str,
    deprecated: f64,
    deprecated_field: &'static str,
) -> Result<(f64, &'static str), Error> {
    let Some(d) = d else { return Ok((deprecated, deprecated_field)) };
    let opposite_signs = (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0);
    if opposite_signs || d.nanos.unsigned_abs() >= 1_000_000_000 {
        return Err(Error::invalid(field, "is not a well-formed duration"));
    }
    Ok((d.seconds as f64 + f64::from(d.nanos) / 1e9, field))
}

impl Ask {
    // Reads the deprecated `aht_seconds` and `threshold_seconds` of older clients.
    #[allow(deprecated)]
    fn of(q: &pb::ComputeStaffingRequest) -> Result<Self, Error> {
        let (aht, aht_field) =
            seconds(q.average_handle_time.as_ref(), "average_handle_time", q.aht_seconds, "aht_seconds")?;
        let (threshold, threshold_field) = seconds(
            q.service_level_threshold.as_ref(),
            "service_level_threshold",
            q.threshold_seconds,
            "threshold_seconds",
        )?;
        let question = erlang::Question {
            arrivals_per_second: q.arrivals_per_second,
            aht_seconds: aht,
            threshold_seconds: threshold,
            target_service_level: q.target_service_level_percent / 100.0,
            max_occupancy: (q.max_occupancy_percent != 0.0).then_some(q.max_occupancy_percent / 100.0),
        };
        Ok(Ask { question, aht_field, threshold_field })
    }

    /// `e` at the wire: Erlang C names its inputs `aht_seconds` and `threshold_seconds`,
    /// which a caller who sent Durations did not set, so those become the fields it did.
    fn error(&self, e: erlang::ErlangError) -> Error {
        match e {
            erlang::ErlangError::Invalid { field, reason } => {
                let field = match field {
                    "aht_seconds" => self.aht_field,
                    "threshold_seconds" => self.threshold_field,
                    other => other,
                };
                Error::invalid(field, reason)
            }
            erlang::ErlangError::Unreachable => Error::FailedPrecondition(e.to_string()),
        }
    }
}

#[tonic::async_trait]
impl StaffingService for Staffing {
    async fn compute_staffing(&self, request: Request<pb::ComputeStaffingRequest>) -> R<pb::ComputeStaffingResponse> {
        caller(&request)?;
        let q = request.get_ref();
        if q.evaluate_agents.len() > 50 {
            return Err(Error::invalid("evaluate_agents", "at most 50 team sizes").into());
        }
        let ask = Ask::of(q)?;
        let Ask { question, .. } = ask;
        let answer = erlang::required(&question).map_err(|e| ask.error(e))?;
        let mut evaluated = Vec::new();
        for (i, n) in q.evaluate_agents.iter().enumerate() {
            let e =
                erlang::expected(question.arrivals_per_second, question.aht_seconds, question.threshold_seconds, *n)
                    .map_err(|e| match e {
                        erlang::ErlangError::Invalid { reason, .. } => {
                            Error::invalid(format!("evaluate_agents[{i}]"), reason)
                        }
                        other => ask.error(other),
                    })?;
            evaluated.push(staffing_figures(&e));
        }
        Ok(Response::new(pb::ComputeStaffingResponse {
            required: Some(staffing_figures(&answer.expected)),
            agents_for_service_level: answer.agents_for_service_level,
            occupancy_capped: answer.occupancy_capped,
            evaluated,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
        Some(prost_types::Duration { seconds, nanos })
    }

    /// The Erlang C example of docs/metrics.md: 0.2 contacts a second, 240 s AHT, 80 % in 15 s.
    fn example() -> pb::ComputeStaffingRequest {
        pb::ComputeStaffingRequest {
            arrivals_per_second: 0.2,
            target_service_level_percent: 80.0,
            average_handle_time: span(240, 0),
            service_level_threshold: span(15, 0),
            ..Default::default()
        }
    }

    fn agents(q: &pb::ComputeStaffingRequest) -> u32 {
        erlang::required(&Ask::of(q).unwrap().question).unwrap().expected.agents
    }

    fn refused_field(r: Result<Ask, Error>) -> String {
        match r {
            Err(Error::InvalidArgument(v)) => v[0].field.clone(),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn durations_are_read() {
        let ask = Ask::of(&example()).unwrap();
        assert_eq!((ask.question.aht_seconds, ask.question.threshold_seconds), (240.0, 15.0));
        assert_eq!((ask.aht_field, ask.threshold_field), ("average_handle_time", "service_level_threshold"));
        assert_eq!(agents(&example()), 55);
        let fine = pb::ComputeStaffingRequest { service_level_threshold: span(15, 500_000_000), ..example() };
        assert_eq!(Ask::of(&fine).unwrap().question.threshold_seconds, 15.5);
    }

    #[test]
    #[allow(deprecated)]
    fn a_request_of_an_older_client_still_reads() {
        let old = pb::ComputeStaffingRequest {
            average_handle_time: None,
            service_level_threshold: None,
            aht_seconds: 240.0,
            threshold_seconds: 15.0,
            ..example()
        };
        let ask = Ask::of(&old).unwrap();
        assert_eq!(ask.question, Ask::of(&example()).unwrap().question);
        assert_eq!((ask.aht_field, ask.threshold_field), ("aht_seconds", "threshold_seconds"));
        assert_eq!(agents(&old), 55);
    }

    #[test]
    #[allow(deprecated)]
    fn a_duration_that_is_set_wins_over_the_deprecated_seconds() {
        let both = pb::ComputeStaffingRequest { aht_seconds: 10.0, threshold_seconds: 99.0, ..example() };
        assert_eq!(Ask::of(&both).unwrap().question, Ask::of(&example()).unwrap().question);
        // A zero Duration is set: it is read as zero, not as "use the seconds".
        let zero = pb::ComputeStaffingRequest { service_level_threshold: span(0, 0), ..both };
        assert_eq!(Ask::of(&zero).unwrap().question.threshold_seconds, 0.0);
    }

    #[test]
    #[allow(deprecated)]
    fn refusals_name_the_field_the_value_came_from() {
        let malformed = pb::ComputeStaffingRequest { average_handle_time: span(1, -1), ..example() };
        assert_eq!(refused_field(Ask::of(&malformed)), "average_handle_time");
        let malformed = pb::ComputeStaffingRequest { service_level_threshold: span(0, 1_000_000_000), ..example() };
        assert_eq!(refused_field(Ask::of(&malformed)), "service_level_threshold");
        let field = |q: pb::ComputeStaffingRequest| {
            let ask = Ask::of(&q).unwrap();
            match erlang::required(&ask.question).map_err(|e| ask.error(e)) {
                Err(Error::InvalidArgument(v)) => v[0].field.clone(),
                other => panic!("not refused: {other:?}"),
            }
        };
        assert_eq!(
            field(pb::ComputeStaffingRequest { average_handle_time: span(-3, 0), ..example() }),
            "average_handle_time"
        );
        let negative = pb::ComputeStaffingRequest { service_level_threshold: span(-1, 0), ..example() };
        assert_eq!(field(negative), "service_level_threshold");
        let old = pb::ComputeStaffingRequest { average_handle_time: None, aht_seconds: -3.0, ..example() };
        assert_eq!(field(old), "aht_seconds");
    }
}
