//! `StaffingService`: Erlang C staffing ([`crate::erlang`]) over gRPC.

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

fn erlang_error(e: erlang::ErlangError) -> Error {
    match e {
        erlang::ErlangError::Invalid { field, reason } => Error::invalid(field, reason),
        erlang::ErlangError::Unreachable => Error::FailedPrecondition(e.to_string()),
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
        let answer = erlang::required(&erlang::Question {
            arrivals_per_second: q.arrivals_per_second,
            aht_seconds: q.aht_seconds,
            threshold_seconds: q.threshold_seconds,
            target_service_level: q.target_service_level_percent / 100.0,
            max_occupancy: (q.max_occupancy_percent != 0.0).then_some(q.max_occupancy_percent / 100.0),
        })
        .map_err(erlang_error)?;
        let mut evaluated = Vec::new();
        for (i, n) in q.evaluate_agents.iter().enumerate() {
            let e = erlang::expected(q.arrivals_per_second, q.aht_seconds, q.threshold_seconds, *n).map_err(
                |e| match e {
                    erlang::ErlangError::Invalid { reason, .. } => {
                        Error::invalid(format!("evaluate_agents[{i}]"), reason)
                    }
                    other => erlang_error(other),
                },
            )?;
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
