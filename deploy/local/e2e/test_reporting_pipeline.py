"""Contacts handled through sessions and routing show up in reporting's figures.

The full pipeline with the service binaries `deploy/local/test.sh` started: a tenant
applied with the CLI, an agent signed in over gRPC, contacts created by a channel,
accepted, ended and wrapped up by the agent, one hung up while queued; reporting consumes
the contacts topic and its QueryHistory and GetRealtimeMetrics (read with grpcio, an
independent client) count them. The Erlang C API answers the worked example of
docs/metrics.md.
"""
import threading
import time
import uuid

import grpc
import pytest

from conftest import auth, cli, endpoints, mint, tenant_manifest, wait_for


@pytest.fixture(scope="module")
def rp(pb):
    from centralita.reporting.v1 import reporting_pb2, reporting_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        r = reporting_pb2
        rg = reporting_pb2_grpc
        s = sessions_pb2
        sg = sessions_pb2_grpc
        t = pb.tenancy

    return M


def tenant_yaml(tenant):
    queue = "id: support, offerTimeoutSeconds: 20, afterContactWorkSeconds: 60"
    return tenant_manifest(tenant, queue, display=f"Reporting pipeline {tenant}", time_zone="America/New_York")


def test_handled_contacts_reach_the_reports(rp, tmp_path):
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    tenant, agent_id = f"rep-{run}", f"rep-agent-{run}"
    manifest = tmp_path / "tenant.yaml"
    manifest.write_text(tenant_yaml(tenant))
    cli("admin", "tenant", "apply", "-f", str(manifest))
    admin, channel = mint("--role", "bpo_admin"), mint("--tenant", tenant, "--role", "channel")
    supervisor = mint("--tenant", tenant, "--role", "supervisor")
    agent_token = mint("--tenant", tenant, "--role", "agent", "--agent-id", agent_id)
    sessions = grpc.insecure_channel(eps["sessions"])
    reporting = grpc.insecure_channel(eps["reporting"])
    agents, contacts = rp.sg.AgentServiceStub(sessions), rp.sg.ContactServiceStub(sessions)
    reports = rp.rg.ReportingServiceStub(reporting)
    s = rp.s

    def tenant_known():
        try:
            contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(supervisor), timeout=5)
            reports.GetRealtimeMetrics(rp.r.GetRealtimeMetricsRequest(), metadata=auth(supervisor), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(tenant_known, 60), "sessions or reporting never saw the tenant"
    name = f"agents/{agent_id}"
    agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
        name=name, display_name=agent_id, queues=[s.QueueAssignment(tenant=tenant, queue="support")],
        capacity=[s.ChannelCapacity(channel=rp.t.CHANNEL_CHAT, max_contacts=3, exclusive=False)])),
        metadata=auth(admin), timeout=10)
    agents.SignIn(s.SignInRequest(name=name, available=True), metadata=auth(agent_token), timeout=10)

    # The agent accepts every offer at once, talks briefly, ends and wraps up.
    handled, errors = [], []
    stream = agents.StreamAgentEvents(s.StreamAgentEventsRequest(name=name), metadata=auth(agent_token))

    def work():
        try:
            for ev in stream:
                if ev.WhichOneof("event") != "offer":
                    continue
                c = ev.offer
                contacts.AcceptContact(s.AcceptContactRequest(name=c.name, offer_id=c.offer_id),
                                       metadata=auth(agent_token), timeout=10)
                time.sleep(0.3)
                contacts.EndContact(s.EndContactRequest(name=c.name), metadata=auth(agent_token), timeout=10)
                contacts.WrapUpContact(s.WrapUpContactRequest(name=c.name, disposition="resolved"),
                                       metadata=auth(agent_token), timeout=10)
                handled.append(c.name)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                errors.append(e)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    for i in range(3):
        contacts.CreateContact(s.CreateContactRequest(
            contact=s.Contact(channel=rp.t.CHANNEL_CHAT, queue="support"), request_id=f"{run}-{i}"),
            metadata=auth(channel), timeout=10)
    assert wait_for(lambda: len(handled) == 3 or errors, 60), f"only {len(handled)} contacts handled"
    assert not errors, errors
    # A customer who hangs up while queued: the agent is away so nobody takes it.
    agents.SetAgentState(s.SetAgentStateRequest(name=name, state=s.AGENT_STATE_AWAY, away_reason="break"),
                         metadata=auth(agent_token), timeout=10)
    gone = contacts.CreateContact(s.CreateContactRequest(
        contact=s.Contact(channel=rp.t.CHANNEL_CHAT, queue="support"), request_id=f"{run}-gone"),
        metadata=auth(channel), timeout=10)
    time.sleep(0.5)
    ended = contacts.EndContact(s.EndContactRequest(name=gone.name), metadata=auth(channel), timeout=10)
    assert ended.state == s.CONTACT_STATE_ABANDONED
    stream.cancel()

    now = int(time.time())
    query = rp.r.QueryHistoryRequest(
        start_time={"seconds": now - 3600}, end_time={"seconds": now + 60},
        granularity=rp.r.GRANULARITY_DAY, group_by=[rp.r.DIMENSION_QUEUE, rp.r.DIMENSION_CHANNEL])

    def figures():
        rows = reports.QueryHistory(query, metadata=auth(supervisor), timeout=10).rows
        return rows[0].figures if len(rows) == 1 else None

    def complete():
        f = figures()
        return f is not None and f.offered == 4 and f.handled == 3 and f.abandoned == 1

    assert wait_for(complete, 30), f"reporting never counted the contacts: {figures()}"
    f = figures()
    assert (f.answered, f.abandoned, f.waiting) == (3, 1, 0)
    assert f.service_level_definition == "default" and f.abandon_rate_definition == "default"
    assert f.HasField("asa_seconds") and 0 <= f.asa_seconds < 20
    assert f.HasField("aht_seconds") and 0.2 < f.aht_seconds < 20
    assert f.abandon_rate_percent == pytest.approx(25.0)
    rows = reports.QueryHistory(query, metadata=auth(supervisor), timeout=10).rows
    assert (rows[0].queue, rows[0].channel) == ("support", "chat")

    live = reports.GetRealtimeMetrics(rp.r.GetRealtimeMetricsRequest(queue="support"),
                                      metadata=auth(supervisor), timeout=10)
    assert live.queues[0].rolling_15m.offered == 4 and live.queues[0].waiting == 0

    # Another tenant's token cannot read these figures.
    with pytest.raises(grpc.RpcError) as denied:
        reports.QueryHistory(rp.r.QueryHistoryRequest(
            tenant=tenant, start_time=query.start_time, end_time=query.end_time,
            granularity=rp.r.GRANULARITY_DAY), metadata=auth(mint("--tenant", "acme", "--role", "supervisor")),
            timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_staffing_answers_the_erlang_c_example(rp):
    staffing = rp.rg.StaffingServiceStub(grpc.insecure_channel(endpoints()["reporting"]))
    r = staffing.ComputeStaffing(rp.r.ComputeStaffingRequest(
        arrivals_per_second=0.2, aht_seconds=240, threshold_seconds=15, target_service_level_percent=80),
        metadata=auth(mint("--tenant", "acme", "--role", "supervisor")), timeout=10)
    assert r.required.agents == 55
    assert f"{r.required.probability_of_waiting:.4f} {r.required.asa_seconds:.2f}" == "0.2387 8.18"
    # The same question with Durations, which replace the deprecated seconds above.
    from google.protobuf.duration_pb2 import Duration
    r = staffing.ComputeStaffing(rp.r.ComputeStaffingRequest(
        arrivals_per_second=0.2, average_handle_time=Duration(seconds=240),
        service_level_threshold=Duration(seconds=15), target_service_level_percent=80),
        metadata=auth(mint("--tenant", "acme", "--role", "supervisor")), timeout=10)
    assert r.required.agents == 55
    with pytest.raises(grpc.RpcError) as bad:
        staffing.ComputeStaffing(rp.r.ComputeStaffingRequest(arrivals_per_second=0.2, aht_seconds=240,
                                                             threshold_seconds=15, target_service_level_percent=120),
                                 metadata=auth(mint("--tenant", "acme", "--role", "supervisor")), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "target_service_level" in bad.value.details()
