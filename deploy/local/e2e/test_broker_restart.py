"""The services ride out a broker restart.

A broker of this test's own (tansu on `postgres://` storage in a schema of its own in the
stack's broker database, as `CENTRALITA_BROKER_STORAGE=postgres` runs it; never the shared
broker) serves one `centralita-sessions`, one `centralita-routing` and one
`centralita-reporting`. With an agent signed in, contacts are created; then the broker is
killed with SIGKILL, and for 3 seconds:
  * every call answers within its deadline: sessions' CreateContact, GetContact and
    ListQueueStats keep working on Redis (a contact is written with its outbox), reporting's
    GetRealtimeMetrics on what it holds, or any of them UNAVAILABLE; nothing hangs until
    DEADLINE_EXCEEDED;
  * the contacts' events wait in sessions' outboxes (centralita_sessions_outbox_pending_records
    above zero).
The broker is started again on the same storage, and then:
  * the outboxes drain to zero, and every contact created during the outage has its QUEUED
    event on the contacts topic (read with kafka-python, deduplicated by event id), as do
    the ones created before (the log survived the SIGKILL);
  * routing, which consumed nothing while the broker was down, offers the contacts created
    during the outage to the agent: the pipeline resumed from where it was.
A second test stops the services and the broker with SIGTERM and starts them again on the
same storage, as `run.sh stop` and `run.sh` do: the tenant is still there (CLI and
services, without applying it again), so is the contacts' history, and a new contact is
offered.

Run it against the local stack (the broker database comes from `deploy/local/stack.sh up`):
  source deploy/local/env.sh
  $CENTRALITA_VENV/bin/python -m pytest -q -p no:cacheprovider deploy/local/e2e/test_broker_restart.py -s
"""
import json
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
# How long the broker stays down (at least): well under the consumers' 10 s session timeout.
# A longer outage leaves groups stuck (tansu 0.6 on postgres storage: after the restart
# the group sits in Forming under a leader member id the rejoined member no longer has;
# seen with 14 s, not with 8 s; restarting the service unsticks it). Override to see it.
# Sessions stays ready through it: its broker check fails (shown `tolerated`) but readiness
# holds for CENTRALITA_KAFKA_READINESS_GRACE (120 s), as its API keeps serving.
OUTAGE = float(os.environ.get("CENTRALITA_E2E_BROKER_OUTAGE", "3"))


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


class Platform:
    """A broker of the test's own, a tenant on it, routing and sessions, and an agent of the
    tenant signed in with room for every contact the test creates."""

    def __init__(self, pb, spawn, name, with_reporting=False):
        from centralita.sessions.v1 import sessions_pb2 as s, sessions_pb2_grpc as sg

        self.s, self.run = s, uuid.uuid4().hex[:8]
        self.prefix = f"e2e-{name}-{self.run}."
        self.tenant = f"{name}-{self.run}"
        self.logs = LOGS / f"{name}-{self.run}"
        self.logs.mkdir(parents=True, exist_ok=True)
        print(f"\n[{name}] run {self.run}, logs {self.logs}")
        self.broker = Broker(spawn, self.logs)
        self.broker.start()
        manifest = self.logs / "tenant.yaml"
        manifest.write_text(tenant_manifest(self.tenant, "id: support, offerTimeoutSeconds: 600"))
        cli("admin", "tenant", "apply", "-f", str(manifest),
            env={"CENTRALITA_KAFKA_TOPIC_PREFIX": self.prefix, "CENTRALITA_KAFKA_BROKERS": self.broker.addr})
        self.routing = Service(spawn, "routing", self.prefix, self.broker.addr, self.logs,
                               {"CENTRALITA_ROUTING_TICK": "100ms", "CENTRALITA_ROUTING_SNAPSHOT_EVERY": "500ms"})
        self.sessions = Service(spawn, "sessions", self.prefix, self.broker.addr, self.logs)
        self.reporting = Service(spawn, "reporting", self.prefix, self.broker.addr, self.logs) if with_reporting else None
        self.routing.start()
        self.sessions.start()
        if self.reporting:
            self.reporting.start()
        self.channel = grpc.insecure_channel(self.sessions.addr)
        self.contacts, agents = sg.ContactServiceStub(self.channel), sg.AgentServiceStub(self.channel)
        admin = mint("--role", "bpo_admin")
        self.supervisor = mint("--tenant", self.tenant, "--role", "supervisor")
        self.channel_token = mint("--tenant", self.tenant, "--role", "channel")
        agent_id = f"ana-{self.run}"  # agents are BPO-wide (not under the topic prefix): one per run
        agent_token = mint("--tenant", self.tenant, "--role", "agent", "--agent-id", agent_id)
        assert self.knows_tenant(), "sessions never knew the tenant"
        self.chat = pb.tenancy.CHANNEL_CHAT
        agent = s.Agent(name=f"agents/{agent_id}", display_name=agent_id,
                        capacity=[s.ChannelCapacity(channel=self.chat, max_contacts=20, exclusive=False)],
                        queues=[s.QueueAssignment(tenant=self.tenant, queue="support")])
        agents.UpsertAgent(s.UpsertAgentRequest(agent=agent), metadata=auth(admin), timeout=DEADLINE)
        agents.SignIn(s.SignInRequest(name=f"agents/{agent_id}", available=True), metadata=auth(agent_token),
                      timeout=DEADLINE)

    def knows_tenant(self):
        s = self.s
        return wait_for(lambda: _ok(lambda: self.contacts.ListQueueStats(
            s.ListQueueStatsRequest(), metadata=auth(self.supervisor), timeout=DEADLINE)), 60)

    def create(self, i):
        s = self.s
        req = s.CreateContactRequest(contact=s.Contact(channel=self.chat, queue="support"), request_id=f"{self.run}-{i}")
        return self.contacts.CreateContact(req, metadata=auth(self.channel_token), timeout=DEADLINE)

    def offered(self, name):
        s = self.s
        c = self.contacts.GetContact(s.GetContactRequest(name=name), metadata=auth(self.supervisor), timeout=DEADLINE)
        return c.state != s.CONTACT_STATE_QUEUED

    def stop(self):
        self.channel.close()
        for svc in (self.sessions, self.routing, self.reporting):
            if svc:
                svc.proc.terminate()
                try:
                    svc.proc.wait(15)
                except subprocess.TimeoutExpired:
                    # Known and open (issue 22): after a broker kill a service can overrun its
                    # 2 s shutdown deadline (seen once with reporting); this test is about
                    # riding out the outage, so the process is killed and the hang reported.
                    print(f"[broker-kill] {svc.name} did not stop within 15 s of SIGTERM; killed")
                    svc.proc.kill()
                    svc.proc.wait(5)
        self.broker.kill()
        self.broker.drop()


def test_sessions_and_routing_ride_out_a_broker_kill(pb, spawn):
    from centralita.reporting.v1 import reporting_pb2 as r, reporting_pb2_grpc as rg

    p = Platform(pb, spawn, "broker-kill", with_reporting=True)
    s, contacts, supervisor, broker, sessions = p.s, p.contacts, p.supervisor, p.broker, p.sessions
    prefix, tenant, create = p.prefix, p.tenant, p.create
    reporting_channel = grpc.insecure_channel(p.reporting.addr)
    reports = rg.ReportingServiceStub(reporting_channel)
    assert wait_for(lambda: _ok(lambda: reports.GetRealtimeMetrics(
        r.GetRealtimeMetricsRequest(), metadata=auth(supervisor), timeout=DEADLINE)), 60), "reporting never knew the tenant"

    before = [create(i).name for i in range(BEFORE)]
    # Offered: routing's and sessions' consumer groups have formed. A broker killed while a
    # group is still forming can leave it stuck (tansu 0.6 on postgres storage; seen with
    # sessions' decision group and reporting's groups after a 6 s outage during their first
    # join: the state kept a leader member id from before the kill; restarting the service
    # unstuck it). This test is about a broker dying under a running platform.
    assert wait_for(lambda: all(p.offered(c) for c in before), 60), "contacts offered before the kill"

    # The broker dies.
    broker.kill()
    killed = time.monotonic()
    slowest, during, refused = 0.0, [], []
    for i in range(BEFORE, BEFORE + DURING):
        t0 = time.monotonic()
        try:
            during.append(create(i).name)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, f"CreateContact while the broker is down: {e.code()} {e.details()}"
            refused.append(i)
        slowest = max(slowest, time.monotonic() - t0)
        time.sleep(max(0.0, killed + OUTAGE * (i - BEFORE + 1) / DURING - time.monotonic()))
        for call in (lambda: contacts.GetContact(s.GetContactRequest(name=before[0]), metadata=auth(supervisor),
                                                 timeout=DEADLINE),
                     lambda: contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(supervisor),
                                                     timeout=DEADLINE),
                     lambda: reports.GetRealtimeMetrics(r.GetRealtimeMetricsRequest(), metadata=auth(supervisor),
                                                        timeout=DEADLINE)):
            t0 = time.monotonic()
            try:
                call()
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, f"a read while the broker is down: {e.code()}"
            slowest = max(slowest, time.monotonic() - t0)
    readyz = http_get(sessions.admin_port, "/readyz")
    print(f"[broker-kill] broker down: {len(during)} contacts created, {len(refused)} refused UNAVAILABLE, "
          f"slowest call {slowest * 1000:.0f} ms; sessions /readyz {readyz[0]}: {readyz[1].strip()[:200]}")
    assert slowest < DEADLINE, "a call waited out its deadline while the broker was down"
    assert readyz[0] == 200, f"sessions left its Service during a short broker outage: {readyz}"
    kafka_check = json.loads(readyz[1])["checks"]["kafka"]
    assert kafka_check["ok"] or kafka_check.get("tolerated"), kafka_check
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
    print(f"[broker-kill] {pending:.0f} outboxes pending at the kill drained {drained:.1f} s after the restart; "
          f"{len(queued)} QUEUED events, {duplicates} duplicate records")

    assert wait_for(lambda: all(p.offered(c) for c in during), 60), \
        "routing offered the contacts created while the broker was down"
    reporting_channel.close()
    p.stop()


def _ok(f):
    try:
        f()
        return True
    except grpc.RpcError:
        return False


def test_a_platform_restarted_with_its_broker_keeps_tenants_and_history(pb, spawn):
    """Stopped and started again as `run.sh stop` and `run.sh` do (SIGTERM, then start), on
    the same storage and without applying the tenant again: the tenant is there for the CLI
    and the services, the contacts' history is on the log, and the pipeline works."""
    p = Platform(pb, spawn, "broker-restart")
    first = [p.create(i).name for i in range(3)]
    assert wait_for(lambda: all(p.offered(c) for c in first), 60), "contacts offered before the restart"

    for svc in (p.sessions, p.routing):
        svc.proc.terminate()
        svc.proc.wait(15)
    p.broker.proc.terminate()
    p.broker.proc.wait(15)
    p.broker.start()
    p.routing.start()
    p.sessions.start()

    env = {"CENTRALITA_KAFKA_TOPIC_PREFIX": p.prefix, "CENTRALITA_KAFKA_BROKERS": p.broker.addr}
    listed = cli("admin", "tenant", "list", "-o", "json", env=env).stdout
    assert p.tenant in listed, f"the CLI lists the tenant after the restart: {listed}"
    assert p.knows_tenant(), "sessions knows the tenant after the restart"
    queued, duplicates = queued_events(p.broker.addr, f"{p.prefix}contacts", p.tenant, pb.envelope, p.s)
    assert set(first) <= queued, f"the contacts' QUEUED events after the restart: {queued}"
    after = p.create(100).name
    assert wait_for(lambda: p.offered(after), 60), "a contact created after the restart is offered"
    print(f"[broker-restart] after the restart: tenant listed, {len(queued)} QUEUED events on the log "
          f"({duplicates} duplicate records), a new contact offered")
    p.stop()


def test_independent_clients_on_postgres_storage(spawn):
    """Every kind of request the services make, from confluent-kafka and kafka-python against
    a postgres-backed broker: topic creation (a compacted one too), metadata, topic configs,
    idempotent produce with headers, fetch, a consumer group with static membership (join,
    sync, heartbeat, offset commit and fetch, resuming from the committed offsets), and list
    offsets (earliest, latest at read_committed, by time)."""
    from confluent_kafka import Consumer, Producer, TopicPartition as TP
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

    logs = LOGS / f"broker-clients-{uuid.uuid4().hex[:8]}"
    logs.mkdir(parents=True, exist_ok=True)
    broker = Broker(spawn, logs)
    broker.start()
    bs = broker.addr
    admin = AdminClient({"bootstrap.servers": bs})
    topic, compacted = f"clients-{uuid.uuid4().hex[:8]}", f"clients-{uuid.uuid4().hex[:8]}-tenants"
    for f in admin.create_topics([NewTopic(topic, 3, 1),
                                  NewTopic(compacted, 1, 1, config={"cleanup.policy": "compact"})]).values():
        f.result(timeout=30)
    assert len(admin.list_topics(timeout=10).topics[topic].partitions) == 3
    configs = admin.describe_configs([ConfigResource("topic", compacted)])
    assert next(iter(configs.values())).result(timeout=10)["cleanup.policy"].value == "compact"

    producer = Producer({"bootstrap.servers": bs, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    acked, errors = [], []

    def delivered(err, msg):
        (errors if err else acked).append(err or (msg.partition(), msg.offset()))

    for i in range(300):
        producer.produce(topic, key=f"k{i % 17}", value=f"v{i}", headers=[("ce_id", str(i))], on_delivery=delivered)
    for i in range(3):
        producer.produce(compacted, key="tenant-a", value=f"config {i}", on_delivery=delivered)
    assert producer.flush(60) == 0 and not errors and len(acked) == 303, errors

    group = f"clients-{uuid.uuid4().hex[:8]}"

    def consume(n):
        c = Consumer({"bootstrap.servers": bs, "group.id": group, "group.instance.id": "member-1",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False,
                      "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000})
        c.subscribe([topic])
        got, end = [], time.monotonic() + 60
        while len(got) < n and time.monotonic() < end:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m)
                c.commit(message=m, asynchronous=False)
        c.close()
        return got

    first = consume(100)
    assert len(first) == 100 and first[0].headers()[0][0] == "ce_id"
    reader = Consumer({"bootstrap.servers": bs, "group.id": group})
    parts = [TP(topic, p) for p in range(3)]
    committed = {tp.partition: tp.offset for tp in reader.committed(parts, timeout=10)}
    highs = {p: reader.get_watermark_offsets(TP(topic, p), timeout=10) for p in range(3)}
    by_time = reader.offsets_for_times([TP(topic, p, 0) for p in range(3)], timeout=10)
    reader.close()
    assert sum(o for o in committed.values() if o >= 0) == 100, committed
    assert sum(high for _, high in highs.values()) == 300 and all(low == 0 for low, _ in highs.values()), highs
    assert all(tp.offset == 0 for tp in by_time if highs[tp.partition][1]), by_time

    # The same static member again: it resumes after what it committed.
    rest = consume(200)
    seen = [m.headers()[0][1] for m in first + rest]
    assert len(rest) == 200 and len(set(seen)) == 300, f"{len(rest)} after resuming, {len(set(seen))} distinct"

    # kafka-python: beginning and end offsets of the compacted topic, and its records.
    k = KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False)
    tp = TopicPartition(compacted, 0)
    assert k.beginning_offsets([tp])[tp] == 0 and k.end_offsets([tp])[tp] == 3
    k.assign([tp])
    k.seek_to_beginning(tp)
    values, end = [], time.monotonic() + 30
    while len(values) < 3 and time.monotonic() < end:
        for batch in k.poll(timeout_ms=500).values():
            values.extend(r.value for r in batch)
    k.close()
    assert values[-1] == b"config 2", values
    broker.kill()
    broker.drop()


STUCK_OUTAGE = float(os.environ.get("CENTRALITA_E2E_STUCK_OUTAGE", "14"))


def test_a_consumer_group_left_unsettled_after_a_long_broker_outage_is_reported(pb, spawn, monkeypatch):
    """The broker stays down longer than the consumers' session timeout (14 s: tansu 0.6 on
    postgres storage then leaves some groups forming forever — sessions' decision group in
    the runs so far, routing making no offers; issue 22). With the opt-in liveness timeout at
    15 s: nothing fails `/livez` while the broker is away, nor within the timeout after it is
    back (rejoining takes seconds). After that, either the platform works again (a contact
    created after the outage is offered, every service live) or the service whose group the
    broker left unsettled fails `/livez` naming that group, and its gauge
    `centralita_bus_consumer_group_unsettled_seconds` shows it. Which one happened is printed;
    the broker's bug itself is open (a restart does not mend sessions' decision group)."""
    monkeypatch.setenv("CENTRALITA_KAFKA_STUCK_GROUP_TIMEOUT", "15s")
    p = Platform(pb, spawn, "stuck-group")
    services = (p.routing, p.sessions)
    try:
        first = p.create(0).name
        assert wait_for(lambda: p.offered(first), 60), "not offered before the outage"
        assert all(http_get(svc.admin_port, "/livez")[0] == 200 for svc in services)
        p.broker.kill()
        down_until = time.monotonic() + STUCK_OUTAGE
        while time.monotonic() < down_until:
            for svc in services:
                status, body = http_get(svc.admin_port, "/livez")
                assert status == 200, f"{svc.name} not live while the broker is away: {body}"
            time.sleep(1)
        # Taken before the start: the services' broker check may pass as soon as the broker
        # listens, before start() returns (a suite run saw sessions report at 14.9 s after a
        # `back` taken after it).
        back = time.monotonic()
        p.broker.start()
        second = p.create(1).name
        not_live = {}

        def offered_now():
            try:
                return p.offered(second)
            except grpc.RpcError:
                return False

        def settled_or_reported():
            if offered_now():
                return True
            for svc in services:
                status, body = http_get(svc.admin_port, "/livez")
                if status == 503:
                    assert time.monotonic() - back >= 15, f"{svc.name} failed liveness too early: {body}"
                    not_live[svc.name] = body.strip()
            return bool(not_live)

        assert wait_for(settled_or_reported, 90, interval=1), \
            f"neither offered nor reported 90 s after the broker came back; logs {p.logs}"
        if not not_live:
            print(f"[stuck-group] offered {time.monotonic() - back:.1f} s after the broker came back; no group stuck")
            # Live, or reporting a group stuck only past its 15 s (offered at 15.3 s was seen
            # with sessions' report of the same moment).
            for svc in services:
                assert http_get(svc.admin_port, "/livez")[0] == 200 or time.monotonic() - back >= 15, svc.name
            return
        for name, body in not_live.items():
            svc = p.routing if name == "routing" else p.sessions
            groups = re.findall(r"consumer group (\S+) unsettled \((\S+)\) for (\d+) s", body)
            assert groups and all(g.startswith(p.prefix) for g, _, _ in groups), body
            _, text = http_get(svc.admin_port, "/metrics")
            for group, state, secs in groups:
                assert state != "up/steady" and int(secs) >= 15, body
                m = re.search(rf'^centralita_bus_consumer_group_unsettled_seconds{{[^}}]*group="{re.escape(group)}"[^}}]*}} (\d+)$',
                              text, re.M)
                # The gauge is as of the last statistics report (every 10 s): unsettled then.
                assert m and int(m.group(1)) >= 1, (group, m and m.group(0))
            print(f"[stuck-group] {name} reports (the broker left it unsettled): {body}")
    finally:
        p.stop()
