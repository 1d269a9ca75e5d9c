"""The services ride out a broker restart.

A broker of this test's own (tansu on `postgres://` storage in a schema of its own in the
stack's broker database, as `CENTRALITA_BROKER_STORAGE=postgres` runs it; never the shared
broker) serves one `centralita-sessions` and one `centralita-routing`. With an agent signed
in, contacts are created; then the broker is killed with SIGKILL, and for a while:
  * every sessions call answers within its deadline: CreateContact, GetContact and
    ListQueueStats keep working on Redis (a contact is written with its outbox), nothing
    hangs until DEADLINE_EXCEEDED;
  * the contacts' events wait in sessions' outboxes (centralita_sessions_outbox_pending_records
    above zero).
The broker is started again on the same storage, and then:
  * the outboxes drain to zero, and every contact created during the outage has its QUEUED
    event on the contacts topic (read with kafka-python, deduplicated by event id), as do
    the ones created before (the log survived the SIGKILL);
  * routing, which consumed nothing while the broker was down, offers the contacts created
    during the outage to the agent: the pipeline resumed from where it was.

Run it against the local stack (the broker database comes from `deploy/local/stack.sh up`):
  source deploy/local/env.sh
  $CENTRALITA_VENV/bin/python -m pytest -q -p no:cacheprovider deploy/local/e2e/test_broker_restart.py -s
"""
import os
import pathlib
import re
import subprocess
import time
import uuid

import grpc
from kafka import KafkaConsumer, TopicPartition

from conftest import BIN, DEV_PUB, LOGS, REPO, auth, cli, free_port, http_get, mint, tenant_manifest, wait_for

PG_PORT = os.environ.get("CENTRALITA_PG_PORT", "5440")
BROKER_DB = os.environ.get("CENTRALITA_BROKER_DATABASE_URL", f"postgres://tansu:tansu@127.0.0.1:{PG_PORT}/tansu")
TANSU = os.environ.get("TANSU_BIN", str(pathlib.Path.home() / ".cache/centralita/tools/bin/tansu"))
DDL = REPO / "deploy/local/tansu-postgres.sql"
BEFORE, DURING = 3, 8  # contacts created before the kill, and while the broker is down
DEADLINE = 5.0  # every call's gRPC deadline


def psql(sql):
    subprocess.run(["psql", BROKER_DB, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True,
                   capture_output=True, timeout=60)


class Broker:
    """tansu on postgres storage in its own schema; killed with SIGKILL, started again."""

    def __init__(self, spawn, logs):
        self.spawn, self.log = spawn, logs / "tansu.log"
        self.schema = f"broker_e2e_{uuid.uuid4().hex[:12]}"
        self.port = free_port()
        self.proc = None
        psql(f"create schema {self.schema}; set search_path = {self.schema}; {DDL.read_text()}")

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        sep = "&" if "?" in BROKER_DB else "?"
        storage = f"{BROKER_DB}{sep}sslmode=disable&options=-csearch_path%3D{self.schema}"
        env = {k: v for k, v in os.environ.items() if k != "OTEL_EXPORTER_OTLP_ENDPOINT"}
        self.proc = self.spawn([TANSU, "broker", "--listener-url", f"tcp://{self.addr}",
                                "--advertised-listener-url", f"tcp://{self.addr}", "--storage-engine", storage],
                               env, self.log)
        assert wait_for(self.listening, 10), f"tansu did not listen on {self.addr}; log: {self.log}"

    def listening(self):
        import socket
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def kill(self):
        self.proc.kill()  # SIGKILL
        self.proc.wait(10)

    def drop(self):
        psql(f"drop schema {self.schema} cascade")


class Service:
    def __init__(self, spawn, name, prefix, brokers, logs, extra_env=None):
        self.spawn, self.name = spawn, name
        self.grpc_port, self.admin_port = free_port(), free_port()
        self.env = {
            "CENTRALITA_GRPC_ADDR": f"127.0.0.1:{self.grpc_port}",
            "CENTRALITA_ADMIN_ADDR": f"127.0.0.1:{self.admin_port}",
            "CENTRALITA_JWT_PUBLIC_KEY_FILE": str(DEV_PUB),
            "CENTRALITA_KAFKA_TOPIC_PREFIX": prefix,
            "CENTRALITA_KAFKA_BROKERS": brokers,
            "CENTRALITA_REDIS_URL": os.environ.get("CENTRALITA_REDIS_URL", "redis://127.0.0.1:6390"),
            "CENTRALITA_SHUTDOWN_TIMEOUT": "2s",
            "CENTRALITA_KAFKA_GROUP_INSTANCE_ID": f"{name}-1",
            **(extra_env or {}),
        }
        self.log = logs / f"{name}.log"

    @property
    def addr(self):
        return f"127.0.0.1:{self.grpc_port}"

    def start(self):
        self.proc = self.spawn([str(BIN / f"centralita-{self.name}")], self.env, self.log)
        ok = wait_for(lambda: self.proc.poll() is None and http_get(self.admin_port, "/readyz")[0] == 200, 60)
        assert ok, f"{self.name} not ready: {http_get(self.admin_port, '/readyz')}; log: {self.log}"

    def gauge(self, name):
        status, text = http_get(self.admin_port, "/metrics")
        m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M) if status == 200 else None
        return float(m.group(1)) if m else None


def queued_events(brokers, topic, tenant, pb_env, pb_s):
    """The contact ids with a QUEUED event on `topic` (each event id counted once), and how
    many records were duplicates of an event already read."""
    consumer = KafkaConsumer(bootstrap_servers=brokers, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert tps, f"topic {topic} not found"
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        deadline = time.monotonic() + 30
        records = []
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    seen, duplicates, queued = set(), 0, set()
    for r in records:
        env = pb_env.Envelope.FromString(r.value)
        if env.tenant_id != tenant or env.type != "centralita.sessions.v1.ContactEvent":
            continue
        if env.event_id in seen:
            duplicates += 1
            continue
        seen.add(env.event_id)
        ev = pb_s.ContactEvent.FromString(env.payload)
        if ev.kind == pb_s.ContactEvent.KIND_QUEUED:
            queued.add(ev.contact.name)
    return queued, duplicates


def test_sessions_and_routing_ride_out_a_broker_kill(pb, spawn):
    from centralita.sessions.v1 import sessions_pb2 as s, sessions_pb2_grpc as sg

    run = uuid.uuid4().hex[:8]
    prefix = f"e2e-broker-{run}."
    tenant = f"broker-{run}"
    logs = LOGS / f"broker-restart-{run}"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"\n[broker-restart] run {run}, logs {logs}")

    broker = Broker(spawn, logs)
    broker.start()
    manifest = logs / "tenant.yaml"
    manifest.write_text(tenant_manifest(tenant, "id: support, offerTimeoutSeconds: 600"))
    cli("admin", "tenant", "apply", "-f", str(manifest),
        env={"CENTRALITA_KAFKA_TOPIC_PREFIX": prefix, "CENTRALITA_KAFKA_BROKERS": broker.addr})
    routing = Service(spawn, "routing", prefix, broker.addr, logs, {"CENTRALITA_ROUTING_TICK": "100ms"})
    sessions = Service(spawn, "sessions", prefix, broker.addr, logs)
    routing.start()
    sessions.start()

    channel = grpc.insecure_channel(sessions.addr)
    contacts, agents = sg.ContactServiceStub(channel), sg.AgentServiceStub(channel)
    admin = mint("--role", "bpo_admin")
    supervisor = mint("--tenant", tenant, "--role", "supervisor")
    channel_token = mint("--tenant", tenant, "--role", "channel")
    agent_id = f"ana-{run}"  # agents are BPO-wide (not under the topic prefix): one per run
    agent_token = mint("--tenant", tenant, "--role", "agent", "--agent-id", agent_id)
    assert wait_for(lambda: _ok(lambda: contacts.ListQueueStats(
        s.ListQueueStatsRequest(), metadata=auth(supervisor), timeout=DEADLINE)), 60), "sessions never knew the tenant"
    chat = pb.tenancy.CHANNEL_CHAT
    agent = s.Agent(name=f"agents/{agent_id}", display_name=agent_id,
                    capacity=[s.ChannelCapacity(channel=chat, max_contacts=BEFORE + DURING, exclusive=False)],
                    queues=[s.QueueAssignment(tenant=tenant, queue="support")])
    agents.UpsertAgent(s.UpsertAgentRequest(agent=agent), metadata=auth(admin), timeout=DEADLINE)
    agents.SignIn(s.SignInRequest(name=f"agents/{agent_id}", available=True), metadata=auth(agent_token),
                  timeout=DEADLINE)

    def create(i):
        req = s.CreateContactRequest(contact=s.Contact(channel=chat, queue="support"), request_id=f"{run}-{i}")
        return contacts.CreateContact(req, metadata=auth(channel_token), timeout=DEADLINE)

    before = [create(i).name for i in range(BEFORE)]

    # The broker dies.
    broker.kill()
    slowest, during, refused = 0.0, [], []
    for i in range(BEFORE, BEFORE + DURING):
        t0 = time.monotonic()
        try:
            during.append(create(i).name)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, f"CreateContact while the broker is down: {e.code()} {e.details()}"
            refused.append(i)
        slowest = max(slowest, time.monotonic() - t0)
        for call in (lambda: contacts.GetContact(s.GetContactRequest(name=before[0]), metadata=auth(supervisor),
                                                 timeout=DEADLINE),
                     lambda: contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(supervisor),
                                                     timeout=DEADLINE)):
            t0 = time.monotonic()
            try:
                call()
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, f"a read while the broker is down: {e.code()}"
            slowest = max(slowest, time.monotonic() - t0)
    print(f"[broker-restart] broker down: {len(during)} contacts created, {len(refused)} refused UNAVAILABLE, "
          f"slowest call {slowest * 1000:.0f} ms")
    assert slowest < DEADLINE, "a call waited out its deadline while the broker was down"
    assert during, "sessions keeps taking contacts on Redis while the broker is down"
    assert wait_for(lambda: (sessions.gauge("centralita_sessions_outbox_pending_records") or 0) > 0, 15), \
        "the contacts' events wait in their outboxes"
    pending = sessions.gauge("centralita_sessions_outbox_pending_records")
    down_for = time.monotonic()

    # The broker comes back on the same storage.
    broker.start()
    assert wait_for(lambda: sessions.gauge("centralita_sessions_outbox_pending_records") == 0, 90), \
        f"outboxes still pending: {sessions.gauge('centralita_sessions_outbox_pending_records')}"
    drained = time.monotonic() - down_for
    queued, duplicates = queued_events(broker.addr, f"{prefix}contacts", tenant, pb.envelope, s)
    missing = [c for c in before + during if c not in queued]
    assert not missing, f"contacts without their QUEUED event on the log: {missing}"
    print(f"[broker-restart] {pending:.0f} outboxes pending at the kill drained {drained:.1f} s after the restart; "
          f"{len(queued)} QUEUED events, {duplicates} duplicate records")

    def offered(name):
        c = contacts.GetContact(s.GetContactRequest(name=name), metadata=auth(supervisor), timeout=DEADLINE)
        return c.state != s.CONTACT_STATE_QUEUED

    assert wait_for(lambda: all(offered(c) for c in during), 60), \
        "routing offered the contacts created while the broker was down"

    channel.close()
    for svc in (sessions, routing):
        svc.proc.terminate()
        svc.proc.wait(15)
    broker.kill()
    broker.drop()


def _ok(f):
    try:
        f()
        return True
    except grpc.RpcError:
        return False
