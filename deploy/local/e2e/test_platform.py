"""The foundation's promises, checked from outside the Rust code."""
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaConsumer, TopicPartition

from conftest import (BROKERS, CLI, DEV_PUB, LOGS, OTHER_KEY, PREFIX, REPO, BIN, cli, endpoints,
                      free_port, http_get, mint, wait_for)

DEMO = REPO / "deploy/examples/tenants/acme.yaml"
TENANTS_TOPIC = PREFIX + "tenants"


def call_get_tenant(pb, addr, name, token):
    with grpc.insecure_channel(addr) as ch:
        stub = pb.tenancy_grpc.TenantServiceStub(ch)
        md = [("authorization", f"Bearer {token}")] if token else []
        return stub.GetTenant(pb.tenancy.GetTenantRequest(name=name), metadata=md, timeout=5)


def grpc_code(fn):
    try:
        fn()
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def test_every_service_is_serving_and_sees_the_demo_tenant(pb):
    admin = mint("--role", "bpo_admin")
    eps = endpoints()
    assert len(eps) == 6
    for name, addr in eps.items():
        with grpc.insecure_channel(addr) as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING, name
        t = call_get_tenant(pb, addr, "tenants/acme", admin)
        assert t.display_name == "Acme Insurance", name
        assert t.business_hours.time_zone == "Europe/Madrid"
        assert t.service_level.threshold.seconds == 20


def test_an_independent_kafka_client_reads_the_tenant_config(pb):
    consumer = KafkaConsumer(bootstrap_servers=BROKERS, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=5000)
    tp = TopicPartition(TENANTS_TOPIC, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    found = None
    for record in consumer:
        if record.key == b"acme":
            found = record
    consumer.close()
    assert found is not None, f"no record for acme on {TENANTS_TOPIC}"
    env = pb.envelope.Envelope.FromString(found.value)
    assert env.tenant_id == "acme"
    assert env.type == "centralita.tenancy.v1.Tenant"
    uuid.UUID(env.event_id)
    headers = dict(found.headers)
    assert headers["ce_type"] == b"centralita.tenancy.v1.Tenant"
    assert headers["ce_id"].decode() == env.event_id
    tenant = pb.tenancy.Tenant.FromString(env.payload)
    assert tenant.name == "tenants/acme"
    assert tenant.quotas.max_concurrent_contacts == 500
    assert tenant.recording.voice == pb.tenancy.RECORDING_MODE_ALL


def end_offset():
    c = KafkaConsumer(bootstrap_servers=BROKERS)
    tp = TopicPartition(TENANTS_TOPIC, 0)
    end = c.end_offsets([tp])[tp]
    c.close()
    return end


def test_a_tenants_agent_pool_cannot_change_once_onboarded(tmp_path):
    manifest = tmp_path / "tenant.yaml"
    manifest.write_text(DEMO.read_text() + "  routing:\n    agentPool: default\n")
    cli("admin", "tenant", "apply", "-f", str(manifest))  # acme is in the default pool: unchanged
    manifest.write_text(DEMO.read_text() + "  routing:\n    agentPool: east\n")
    before = end_offset()
    proc = cli("admin", "tenant", "apply", "-f", str(manifest), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "spec.routing.agentPool" in proc.stderr and "nothing published" in proc.stderr, proc.stderr
    time.sleep(0.5)
    assert end_offset() == before


@pytest.mark.parametrize("edit,field", [
    (("dataRetentionDays: 395", "dataRetentionDays: 395\n  colour: blue"), "spec"),
    (("Europe/Madrid", "Europe/Atlantis"), "spec.businessHours.timeZone"),
    (("maxConcurrentContacts: 500", "maxConcurrentContacts: -5"), "spec.quotas.maxConcurrentContacts"),
])
def test_malformed_tenant_file_is_refused_and_nothing_is_published(tmp_path, edit, field):
    text = DEMO.read_text()
    assert edit[0] in text
    bad = tmp_path / "tenant.yaml"
    bad.write_text(text.replace(edit[0], edit[1]))
    before = end_offset()
    proc = cli("admin", "tenant", "apply", "-f", str(bad), check=False)
    assert proc.returncode == 2, proc.stderr
    assert field in proc.stderr, proc.stderr
    assert "nothing published" in proc.stderr
    if "colour" in edit[1]:
        assert "colour" in proc.stderr
    time.sleep(0.5)
    assert end_offset() == before


def test_bad_tokens_are_refused_and_never_logged(pb, tmp_path):
    globex = tmp_path / "globex.yaml"
    globex.write_text(DEMO.read_text().replace("name: acme", "name: globex").replace("Acme Insurance", "Globex"))
    cli("admin", "tenant", "apply", "-f", str(globex))
    eps = endpoints()
    admin = mint("--role", "bpo_admin")
    assert wait_for(lambda: all(grpc_code(lambda: call_get_tenant(pb, a, "tenants/globex", admin)) == grpc.StatusCode.OK
                                for a in eps.values()), 30)

    expired = mint("--tenant", "acme", "--role", "supervisor", "--ttl", "60s", "--issued-at", str(int(time.time()) - 3600))
    forged = mint("--role", "bpo_admin", key=OTHER_KEY)
    acme_agent = mint("--tenant", "acme", "--role", "agent", "--agent-id", "a-1")
    tokens = {"expired": expired, "forged": forged, "acme_agent": acme_agent}
    for name, addr in eps.items():
        assert grpc_code(lambda: call_get_tenant(pb, addr, "tenants/acme", expired)) == grpc.StatusCode.UNAUTHENTICATED, name
        assert grpc_code(lambda: call_get_tenant(pb, addr, "tenants/acme", forged)) == grpc.StatusCode.UNAUTHENTICATED, name
        assert grpc_code(lambda: call_get_tenant(pb, addr, "tenants/acme", None)) == grpc.StatusCode.UNAUTHENTICATED, name
        # A valid token of tenant acme cannot read tenant globex.
        assert grpc_code(lambda: call_get_tenant(pb, addr, "tenants/globex", acme_agent)) == grpc.StatusCode.PERMISSION_DENIED, name
        assert grpc_code(lambda: call_get_tenant(pb, addr, "tenants/acme", acme_agent)) == grpc.StatusCode.OK, name
    time.sleep(0.5)
    logs = "".join(p.read_text(errors="replace") for p in LOGS.glob("*.log"))
    assert "call refused by authentication" in logs
    for label, token in tokens.items():
        for part in token.split("."):
            assert part not in logs, f"{label} token material found in service logs"


def start_service(spawn, tmp_path, service, extra_env):
    grpc_port, admin_port = free_port(), free_port()
    env = {
        "CENTRALITA_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "CENTRALITA_ADMIN_ADDR": f"127.0.0.1:{admin_port}",
        "CENTRALITA_JWT_PUBLIC_KEY_FILE": str(DEV_PUB),
        "CENTRALITA_KAFKA_TOPIC_PREFIX": f"e2e-down-{uuid.uuid4().hex[:8]}.",
        **extra_env,
    }
    proc = spawn([str(BIN / f"centralita-{service}")], env, tmp_path / f"{service}.log")
    return proc, grpc_port, admin_port


def health(port):
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
    except grpc.RpcError:
        return None


def test_service_started_while_kafka_is_down_recovers_by_itself(spawn, tmp_path):
    kafka_port = free_port()
    # Its own SIP and web chat ports and RTP range: the defaults are a dev run's (run.sh).
    ports = {
        "CENTRALITA_KAFKA_BROKERS": f"127.0.0.1:{kafka_port}",
        "CENTRALITA_SIP_ADDR": f"127.0.0.1:{free_port()}",
        "CENTRALITA_WEBCHAT_ADDR": f"127.0.0.1:{free_port()}",
        "CENTRALITA_RTP_PORTS": "23000-23099",
    }
    proc, grpc_port, admin_port = start_service(spawn, tmp_path, "media", ports)
    assert wait_for(lambda: http_get(admin_port, "/livez")[0] == 200, 15)
    time.sleep(3)
    assert proc.poll() is None, "the service must not exit while Kafka is down"
    code, body = http_get(admin_port, "/readyz")
    assert code == 503 and json.loads(body)["checks"]["kafka"]["ok"] is False, body
    assert health(grpc_port) == health_pb2.HealthCheckResponse.NOT_SERVING
    tansu = os.environ["TANSU_BIN"]
    spawn([tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{kafka_port}",
           "--advertised-listener-url", f"tcp://127.0.0.1:{kafka_port}", "--storage-engine", "memory://tansu/"],
          {}, tmp_path / "tansu.log")
    assert wait_for(lambda: http_get(admin_port, "/readyz")[0] == 200, 60), http_get(admin_port, "/readyz")
    assert health(grpc_port) == health_pb2.HealthCheckResponse.SERVING
    assert proc.poll() is None


def as_postgres(args):
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def test_service_started_while_postgres_is_down_recovers_by_itself(spawn, tmp_path):
    pg_port = free_port()
    url = f"postgres://postgres@127.0.0.1:{pg_port}/postgres"
    proc, grpc_port, admin_port = start_service(spawn, tmp_path, "crm", {"CENTRALITA_DATABASE_URL": url})
    assert wait_for(lambda: http_get(admin_port, "/livez")[0] == 200, 15)
    assert wait_for(lambda: http_get(admin_port, "/readyz")[1].count('"postgres":{"ok":false') == 1, 15)
    time.sleep(2)
    assert proc.poll() is None, "the service must not exit while PostgreSQL is down"
    assert health(grpc_port) == health_pb2.HealthCheckResponse.NOT_SERVING
    # Bring a PostgreSQL up on that port.
    pg_bin = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    # pytest's tmp_path sits under a root-only directory; PostgreSQL runs as `postgres`.
    home = pathlib.Path(tempfile.mkdtemp(prefix="centralita-pg-"))
    data = home / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(as_postgres([str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
                   check=True, capture_output=True)
    spawn(as_postgres([str(pg_bin / "postgres"), "-D", str(data), "-p", str(pg_port), "-c", "listen_addresses=127.0.0.1",
                       "-k", str(home), "-c", "fsync=off"]), {}, tmp_path / "pg.log")
    assert wait_for(lambda: http_get(admin_port, "/readyz")[0] == 200, 60), http_get(admin_port, "/readyz")
    assert health(grpc_port) == health_pb2.HealthCheckResponse.SERVING
    # The migrations ran: the crm schema exists with every version (tenancy, customers, the
    # erasure's per-store progress, and the retention sweeper's age indexes).
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "postgres", "-Atc",
                          "SELECT string_agg(name, ',' ORDER BY version) FROM crm.schema_migrations"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "tenancy,customers,erasure_stores,retention"


def test_the_cli_manages_bpo_agents_through_sessions(pb, tmp_path):
    """`centralita admin agent upsert` creates and changes an agent (queues across tenants,
    capacity per channel, skills, languages) as sessions stores it; bad flags are each named
    (exit 2) and nothing is saved; a queue its tenant does not have is refused by sessions
    and nothing is saved either; `admin agent list` shows it."""
    import grpc
    import uuid
    from centralita.sessions.v1 import sessions_pb2 as s, sessions_pb2_grpc as sg
    from conftest import auth, endpoints, mint, tenant_manifest, wait_for

    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    manifest = tmp_path / "tenant.yaml"
    manifest.write_text(tenant_manifest(tenant, "id: support").replace(
        "      - { id: support }", "      - { id: support }\n      - { id: billing }"))
    cli("admin", "tenant", "apply", "-f", str(manifest))
    agent = f"cli-{uuid.uuid4().hex[:8]}"
    upsert = ("admin", "agent", "upsert", "--id", agent, "--display-name", "Carla", "--queue", f"{tenant}/support",
              "--capacity", "chat=2", "--capacity", "voice=1", "--skill", "es=5", "--language", "es")
    # Sessions learns the tenant from the tenants topic (UNAVAILABLE or unknown until then).
    assert wait_for(lambda: cli(*upsert, check=False).returncode == 0, 60), cli(*upsert, check=False).stderr
    agents = sg.AgentServiceStub(grpc.insecure_channel(endpoints()["sessions"]))
    got = agents.GetAgent(s.GetAgentRequest(name=f"agents/{agent}"), metadata=auth(mint("--role", "bpo_admin")),
                          timeout=10)
    assert got.display_name == "Carla" and [(q.tenant, q.queue) for q in got.queues] == [(tenant, "support")]
    assert sorted((c.channel, c.max_contacts) for c in got.capacity) == sorted(
        [(pb.tenancy.CHANNEL_CHAT, 2), (pb.tenancy.CHANNEL_VOICE, 1)])
    assert dict(got.skills) == {"es": 5} and list(got.languages) == ["es"]

    # A change: one more queue, chat only.
    cli("admin", "agent", "upsert", "--id", agent, "--queue", f"{tenant}/support", "--queue", f"{tenant}/billing",
        "--capacity", "chat=3")
    got = agents.GetAgent(s.GetAgentRequest(name=f"agents/{agent}"), metadata=auth(mint("--role", "bpo_admin")),
                          timeout=10)
    assert [(q.queue) for q in got.queues] == ["support", "billing"] and [c.max_contacts for c in got.capacity] == [3]

    bad = cli("admin", "agent", "upsert", "--id", "Not Valid", "--queue", "acme", "--capacity", "fax=1",
              "--skill", "es=9", check=False)
    assert bad.returncode == 2, bad
    for flag in ("--id", "--queue", "--capacity", "--skill"):
        assert flag in bad.stderr, bad.stderr
    # A queue the tenant does not have: refused by sessions, the agent left as it was.
    nowhere = cli("admin", "agent", "upsert", "--id", agent, "--queue", f"{tenant}/nosuchqueue", "--capacity", "chat=1",
                  check=False)
    assert nowhere.returncode != 0 and "nosuchqueue" in nowhere.stderr, nowhere
    listed = cli("admin", "agent", "list").stdout
    assert any(line.startswith(agent) and f"{tenant}/support,{tenant}/billing" in line for line in listed.splitlines()), listed
    assert "Not Valid" not in listed
