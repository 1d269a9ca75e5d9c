"""The ACD survives `kill -9`.

One `centralita-sessions` and one `centralita-routing` serve two tenants while simulated
agents (Python threads with their own gRPC streams) and customers (a channel adapter
creating contacts) keep working. In the middle of the traffic sessions is killed with
SIGKILL and restarted on the same ports, later routing is. The clients ride the outages
out as real ones would: they retry on UNAVAILABLE (CreateContact with the same request_id,
its idempotency key) and agents reconnect their stream, which re-sends their current
offers and contacts.

Afterwards, with nothing but the public APIs and the contacts topic:
  * every created contact reached a terminal state (nothing stuck queued or offered);
  * no event was lost: per contact, the events on `<prefix>contacts` (deduplicated by
    event id) form an unbroken chain from QUEUED to the state GetContact reports;
  * no agent was ever booked beyond its capacity (per channel, exclusive voice alone),
    reconstructed from the events' `occurred_at`;
  * every agent's GetAgent lists no contact any more.

Run it against the local stack (see deploy/local/README.md), e.g.
  source deploy/local/env.sh
  $CENTRALITA_VENV/bin/python -m pytest -q -p no:cacheprovider deploy/local/e2e/test_acd_crash.py -x -s
"""
import collections
import datetime
import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from kafka import KafkaConsumer, TopicPartition

from conftest import BIN, BROKERS, DEV_PUB, LOGS, auth, cli, free_port, http_get, mint, tenant_manifest, wait_for

# Traffic.
CONTACTS = 150
RATE = 17.0  # contacts created per second
VOICE_SHARE = 0.35
ABANDON_NOW = 6  # customers who hang up right after their contact is created (still queued)
ABANDON_LATER = 4  # customers who hang up within a second (queued, offered or connected)
# Agent behaviour: a declined offer is rejected or left to ring out (RONA). At most one
# agent declines any one contact, so no contact runs out of eligible agents because of the
# simulation itself (routing never re-offers a contact to an agent that declined it).
P_DECLINE = 0.15
RONA_SHARE = 0.3
# Queue settings of both tenants.
OFFER_TIMEOUT_S = 3
ACW_S = 1
DISPOSITION = "resolved"
# Crashes, in seconds after the first contact is created.
KILL_SESSIONS_AT = 3.0
KILL_ROUTING_AT = 7.0
DOWN_FOR = 1.0
READY_TIMEOUT = 60
DRAIN_TIMEOUT = 60
# How long one client call keeps retrying while a service is down or restarting.
PATIENCE = 45.0

TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
NOT_RESPONDING = "not_responding"


class P:
    """Generated protobuf modules (filled by the `proto` fixture)."""


@pytest.fixture(scope="module")
def proto(pb):
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    P.s = sessions_pb2
    P.sg = sessions_pb2_grpc
    P.t = pb.tenancy
    P.env = pb.envelope
    s = sessions_pb2
    P.TERMINAL = {s.CONTACT_STATE_CLOSED, s.CONTACT_STATE_ABANDONED, s.CONTACT_STATE_TIMED_OUT}
    P.HELD = {s.CONTACT_STATE_OFFERED, s.CONTACT_STATE_CONNECTED, s.CONTACT_STATE_AFTER_CONTACT_WORK}
    return P


def state_name(v):
    return P.s.ContactState.Name(v).removeprefix("CONTACT_STATE_") if v in P.s.ContactState.values() else str(v)


def kind_name(v):
    return P.s.ContactEvent.Kind.Name(v).removeprefix("KIND_")


def channel_name(v):
    return P.t.Channel.Name(v).removeprefix("CHANNEL_").lower()


def ts_ns(t):
    return t.seconds * 1_000_000_000 + t.nanos


def clock(ns):
    if ns == float("inf"):
        return "never"
    return datetime.datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S.%f")[:-3]


def tenant_yaml(tenant):
    queue = f"id: support, offerTimeoutSeconds: {OFFER_TIMEOUT_S}, afterContactWorkSeconds: {ACW_S}"
    return tenant_manifest(tenant, queue, recording="all", max_concurrent=500)


class Service:
    """One service binary on fixed ports, which can be killed and started again."""

    def __init__(self, spawn, name, prefix, logs, extra_env=None):
        self.spawn, self.name = spawn, name
        self.grpc_port, self.admin_port = free_port(), free_port()
        self.env = {
            "CENTRALITA_GRPC_ADDR": f"127.0.0.1:{self.grpc_port}",
            "CENTRALITA_ADMIN_ADDR": f"127.0.0.1:{self.admin_port}",
            "CENTRALITA_JWT_PUBLIC_KEY_FILE": str(DEV_PUB),
            "CENTRALITA_KAFKA_TOPIC_PREFIX": prefix,
            "CENTRALITA_KAFKA_BROKERS": BROKERS,
            "CENTRALITA_REDIS_URL": os.environ.get("CENTRALITA_REDIS_URL", "redis://127.0.0.1:6390"),
            "CENTRALITA_SHUTDOWN_TIMEOUT": "2s",
            # Static group membership: the restarted replica takes its partitions back at
            # once (tansu never expires a SIGKILLed dynamic member).
            "CENTRALITA_KAFKA_GROUP_INSTANCE_ID": f"{name}-1",
            **(extra_env or {}),
        }
        self.log = logs / f"{name}.log"
        self.proc = None

    @property
    def addr(self):
        return f"127.0.0.1:{self.grpc_port}"

    def start(self):
        self.proc = self.spawn([str(BIN / f"centralita-{self.name}")], self.env, self.log)

    def kill(self):
        self.proc.kill()  # SIGKILL: no drain, no final commit, no snapshot
        self.proc.wait(10)

    def ready(self):
        return http_get(self.admin_port, "/readyz")[0] == 200

    def wait_ready(self, what):
        t0 = time.monotonic()
        ok = wait_for(lambda: self.proc.poll() is None and self.ready(), READY_TIMEOUT)
        assert ok, (f"{self.name} not ready {READY_TIMEOUT}s after {what} (exit code {self.proc.poll()}): "
                    f"/readyz says {http_get(self.admin_port, '/readyz')}; log: {self.log}")
        return time.monotonic() - t0


class Harness:
    """What the simulated clients share: stubs, tokens, counters, problems found on the way."""

    def __init__(self, channel, rng, run):
        self.agents = P.sg.AgentServiceStub(channel)
        self.contacts = P.sg.ContactServiceStub(channel)
        self.rng = rng
        self.run = run
        self.lock = threading.Lock()
        self.stats = collections.Counter()
        self.problems = []
        self.stopping = threading.Event()
        self.threads = []
        self.declined = set()  # contacts some agent already declined
        self.reject_started = {}  # offer id -> wall clock (ns) of the first RejectContact attempt

    def count(self, key, n=1):
        with self.lock:
            self.stats[key] += n

    def problem(self, text):
        with self.lock:
            self.problems.append(text)

    def claim_decline(self, contact):
        with self.lock:
            if contact in self.declined:
                return False
            self.declined.add(contact)
            return True

    def spawn(self, label, fn, *args):
        def guarded():
            try:
                fn(*args)
            except grpc.RpcError as e:
                self.problem(f"client error: {label}: unexpected {e.code().name}: {e.details()}")
            except Exception as e:  # noqa: BLE001 - reported as a test failure
                self.problem(f"client error: {label}: {type(e).__name__}: {e}")

        t = threading.Thread(target=guarded, name=label, daemon=True)
        with self.lock:
            self.threads.append(t)
        t.start()
        return t

    def rpc(self, method, request, token, tolerate=(), patience=PATIENCE):
        """Calls until it succeeds, retrying while the service is down or restarting.

        Returns (response, None), or (None, error) for a status in `tolerate`; raises on
        any other status, or when the service stays away longer than `patience`.
        """
        end = time.monotonic() + patience
        md = auth(token)
        while True:
            try:
                return method(request, metadata=md, timeout=5), None
            except grpc.RpcError as e:
                code = e.code()
                if code in tolerate:
                    return None, e
                # A restarted replica answers before it has read the tenants topic again.
                unknown_tenant = code == grpc.StatusCode.PERMISSION_DENIED and "not onboarded" in (e.details() or "")
                if (code in TRANSIENT or unknown_tenant) and time.monotonic() < end:
                    self.count("retries: " + ("tenant not yet known" if unknown_tenant else code.name))
                    time.sleep(0.2)
                    continue
                raise


class Agent:
    """A simulated agent frontend: one stream, one thread per offer or contact it works on."""

    def __init__(self, h, aid, tenants, capacity, tokens):
        self.h, self.id, self.name = h, aid, f"agents/{aid}"
        self.tenants = tenants
        self.capacity = capacity  # channel -> (max contacts, exclusive)
        self.tokens = tokens  # tenant -> agent token scoped to it
        self.token = tokens[tenants[0]]
        self.rng = random.Random(h.rng.random())
        self.lock = threading.Lock()
        self.seen_offers = set()
        self.busy = set()  # contacts a thread of this agent is working on
        self.finished = set()  # contacts this agent wrapped up (or saw closed)
        self.coming_back = False
        self.call = None
        self.thread = None

    def upsert(self, admin):
        s = P.s
        agent = s.Agent(
            name=self.name, display_name=self.id,
            queues=[s.QueueAssignment(tenant=t, queue="support") for t in self.tenants],
            languages=["en"],
            capacity=[s.ChannelCapacity(channel=c, max_contacts=n, exclusive=x) for c, (n, x) in self.capacity.items()],
        )
        self.h.rpc(self.h.agents.UpsertAgent, s.UpsertAgentRequest(agent=agent), admin)
        a, _ = self.h.rpc(self.h.agents.SignIn, s.SignInRequest(name=self.name, available=True), self.token)
        assert a.state == s.AGENT_STATE_AVAILABLE, a

    def start(self):
        self.thread = self.h.spawn(f"agent {self.id} stream", self.stream_loop)

    def stop(self):
        call = self.call
        if call is not None:
            call.cancel()

    def stream_loop(self):
        h, s = self.h, P.s
        while not h.stopping.is_set():
            try:
                self.call = h.agents.StreamAgentEvents(
                    s.StreamAgentEventsRequest(name=self.name), metadata=auth(self.token))
                if h.stopping.is_set():
                    self.call.cancel()
                    return
                for ev in self.call:
                    self.on_event(ev)
                h.count("agent streams closed by the server")
            except grpc.RpcError as e:
                if h.stopping.is_set():
                    return
                h.count(f"agent stream errors: {e.code().name}")
            time.sleep(0.3)
            h.count("agent stream reconnects")

    def on_event(self, ev):
        s = P.s
        kind = ev.WhichOneof("event")
        if kind == "offer":
            self.on_offer(ev.offer)
        elif kind == "contact":
            c = ev.contact
            if c.agent_id == self.id and c.state in (s.CONTACT_STATE_CONNECTED, s.CONTACT_STATE_AFTER_CONTACT_WORK):
                self.resume(c, "stream")
        elif kind == "agent":
            self.on_agent(ev.agent)

    def on_offer(self, c):
        with self.lock:
            if c.offer_id in self.seen_offers or c.name in self.busy:
                return False
            self.seen_offers.add(c.offer_id)
            self.busy.add(c.name)
        self.h.spawn(f"agent {self.id} offer {c.name}", self.handle_offer, c)
        return True

    def resume(self, c, how):
        """A contact it holds that no thread works on (after a reconnect): finish it."""
        with self.lock:
            if c.name in self.busy or c.name in self.finished:
                return False
            self.busy.add(c.name)
        self.h.count(f"contacts resumed from the {how}")
        self.h.spawn(f"agent {self.id} resume {c.name}", self.finish, c, c.state == P.s.CONTACT_STATE_CONNECTED)
        return True

    def on_agent(self, a):
        if a.state != P.s.AGENT_STATE_AWAY or a.away_reason != NOT_RESPONDING:
            return False
        with self.lock:
            if self.coming_back:
                return False
            self.coming_back = True
        self.h.spawn(f"agent {self.id} back", self.come_back)
        return True

    def come_back(self):
        try:
            time.sleep(self.rng.uniform(0.3, 0.8))
            s = P.s
            self.h.rpc(self.h.agents.SetAgentState,
                       s.SetAgentStateRequest(name=self.name, state=s.AGENT_STATE_AVAILABLE), self.token)
            self.h.count("agents available again after RONA")
        finally:
            with self.lock:
                self.coming_back = False

    def handle_offer(self, c):
        h, s = self.h, P.s
        token = self.tokens[c.tenant]
        try:
            decline = None
            if self.rng.random() < P_DECLINE and h.claim_decline(c.name):
                decline = "ring" if self.rng.random() < RONA_SHARE else "reject"
            if decline == "ring":
                h.count("offers left to ring out")
                return
            time.sleep(self.rng.uniform(0.05, 0.3))
            if decline == "reject":
                with h.lock:
                    h.reject_started.setdefault(c.offer_id, time.time_ns())
                _, err = h.rpc(h.contacts.RejectContact, s.RejectContactRequest(name=c.name, offer_id=c.offer_id),
                               token, tolerate=(grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND))
                h.count("offers rejected" if err is None else "rejects refused (offer gone)")
                return
            _, err = h.rpc(h.contacts.AcceptContact, s.AcceptContactRequest(name=c.name, offer_id=c.offer_id), token,
                           tolerate=(grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND))
            if err is not None:
                # The offer is gone (expired, customer hung up), or an earlier attempt of ours
                # went through just before a crash and only the answer was lost.
                cur, _ = h.rpc(h.contacts.GetContact, s.GetContactRequest(name=c.name), token,
                               tolerate=(grpc.StatusCode.NOT_FOUND,))
                mine = cur is not None and cur.agent_id == self.id
                if not (mine and cur.state in (s.CONTACT_STATE_CONNECTED, s.CONTACT_STATE_AFTER_CONTACT_WORK)):
                    h.count("accepts refused (offer gone)")
                    return
                h.count("accepts that went through before a crash")
            h.count("offers accepted")
            self.finish(c, True, keep_busy=True)
        finally:
            with self.lock:
                self.busy.discard(c.name)

    def finish(self, c, connected, keep_busy=False):
        """Talks, ends the conversation and wraps up."""
        h, s = self.h, P.s
        token = self.tokens[c.tenant]
        try:
            if connected:
                time.sleep(self.rng.uniform(0.1, 0.4))
                _, err = h.rpc(h.contacts.EndContact, s.EndContactRequest(name=c.name), token,
                               tolerate=(grpc.StatusCode.FAILED_PRECONDITION,))
                if err is not None:
                    h.count("ends refused (customer hung up first, or an earlier attempt went through)")
            time.sleep(self.rng.uniform(0.05, 0.2))
            _, err = h.rpc(h.contacts.WrapUpContact,
                           s.WrapUpContactRequest(name=c.name, disposition=DISPOSITION), token,
                           tolerate=(grpc.StatusCode.FAILED_PRECONDITION,))
            h.count("wrap-ups" if err is None else "wrap-ups refused (after-contact work had run out)")
            with self.lock:
                self.finished.add(c.name)
        finally:
            if not keep_busy:
                with self.lock:
                    self.busy.discard(c.name)

    def watchdog(self, now_ns):
        """What a frontend's periodic refresh would catch if a stream notice went missing."""
        h, s = self.h, P.s
        a, _ = h.rpc(h.agents.GetAgent, s.GetAgentRequest(name=self.name), self.token)
        if (a.state == s.AGENT_STATE_AWAY and a.away_reason == NOT_RESPONDING
                and now_ns - ts_ns(a.state_time) > 2_000_000_000 and self.on_agent(a)):
            h.count("watchdog: away (not_responding) unnoticed on the stream for 2 s")
        for name in a.contacts:
            tenant = name.split("/")[1]
            c, _ = h.rpc(h.contacts.GetContact, s.GetContactRequest(name=name), self.tokens.get(tenant, self.token),
                         tolerate=(grpc.StatusCode.NOT_FOUND,))
            if c is None or c.agent_id != self.id:
                continue
            if c.state == s.CONTACT_STATE_OFFERED:
                offered_ns = ts_ns(c.offer_expire_time) - OFFER_TIMEOUT_S * 1_000_000_000
                if now_ns - offered_ns > 1_500_000_000 and self.on_offer(c):
                    h.count("watchdog: offer not on the stream after 1.5 s")
            elif c.state in (s.CONTACT_STATE_CONNECTED, s.CONTACT_STATE_AFTER_CONTACT_WORK):
                self.resume(c, "watchdog")


def read_contact_events(topic, tenants, deadline):
    """Every record of `topic` up to its current end, per partition in offset order."""
    consumer = KafkaConsumer(bootstrap_servers=BROKERS, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest")
    try:
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        assert parts, f"topic {topic} not found"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records = {tp.partition: [] for tp in tps}
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500).items():
                records[tp.partition].extend(batch)
        missing = {tp.partition: end[tp] - consumer.position(tp) for tp in tps if consumer.position(tp) < end[tp]}
        assert not missing, f"could not read {topic} to its end: records left per partition {missing}"
    finally:
        consumer.close()
    events = []
    for partition in sorted(records):
        for r in records[partition]:
            env = P.env.Envelope.FromString(r.value)
            if env.type != "centralita.sessions.v1.ContactEvent" or env.tenant_id not in tenants:
                continue
            events.append((r.key.decode() if r.key else "", partition, r.offset, env,
                           P.s.ContactEvent.FromString(env.payload)))
    return events


def group_lag(group, topic):
    """How far a consumer group is behind on a topic: (records not yet committed, committed
    offsets, end offsets), over the partitions that hold records."""
    consumer = KafkaConsumer(bootstrap_servers=BROKERS, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        end = {tp.partition: n for tp, n in consumer.end_offsets(tps).items() if n}
        committed = {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in end}
    finally:
        consumer.close()
    return sum(end[p] - committed[p] for p in end), committed, end


def dedupe(events):
    """Per contact id, its events in partition order, each event id once; and how many
    records were dropped as duplicates."""
    seen, duplicates, chains = set(), 0, collections.defaultdict(list)
    for key, partition, offset, env, ev in events:
        if env.event_id in seen:
            duplicates += 1
            continue
        seen.add(env.event_id)
        chains[key].append((partition, offset, env, ev))
    return chains, duplicates


def check_chains(chains, created, final, topic):
    """No event lost: each created contact's events form an unbroken chain from QUEUED to
    the state GetContact reports, and no contact appears that no CreateContact returned.
    Returns the problems and the ids of the contacts whose chain is broken."""
    s = P.s
    problems, broken = [], set()
    created_ids = {n.rsplit("/", 1)[1]: n for n in created}
    for cid in sorted(set(chains) - set(created_ids)):
        first = chains[cid][0][3]
        problems.append(f"unexpected contact: {first.contact.name} on {topic}, which no CreateContact returned "
                        f"(events: {', '.join(kind_name(e[3].kind) for e in chains[cid])})")
    for cid, name in sorted(created_ids.items()):
        chain = chains.get(cid, [])
        if not chain:
            problems.append(f"lost events: {name} has no event at all on {topic} "
                            f"(GetContact: {state_name(final[name].state)})")
            broken.add(cid)
            continue
        steps = " -> ".join(f"{kind_name(e[3].kind)}({state_name(e[3].previous_state)}>"
                            f"{state_name(e[3].contact.state)})" for e in chain)
        first = chain[0][3]
        if first.previous_state != s.CONTACT_STATE_UNSPECIFIED or first.contact.state != s.CONTACT_STATE_QUEUED:
            problems.append(f"lost events: {name}: the first event on {topic} is {kind_name(first.kind)} "
                            f"{state_name(first.previous_state)} -> {state_name(first.contact.state)}, expected "
                            f"QUEUED from UNSPECIFIED; chain: {steps}")
            broken.add(cid)
        for prev, cur in zip(chain, chain[1:]):
            was, ev = prev[3].contact.state, cur[3]
            if ev.previous_state != was:
                problems.append(f"lost events: {name}: {kind_name(ev.kind)} at partition {cur[0]} offset {cur[1]} "
                                f"starts from {state_name(ev.previous_state)} but the event before it left the "
                                f"contact {state_name(was)}: a transition in between was never published; "
                                f"chain: {steps}")
                broken.add(cid)
        last = chain[-1][3].contact.state
        if last != final[name].state:
            problems.append(f"lost events: {name}: the last event on {topic} leaves it {state_name(last)} but "
                            f"GetContact says {state_name(final[name].state)}: the final transition(s) were never "
                            f"published; chain: {steps}")
            broken.add(cid)
    return problems, broken


def holds_from_events(chains, reject_started):
    """Per agent, the intervals during which it held a contact: [start ns, end ns, channel,
    contact id]. A hold starts at the OFFERED event and ends at the event where the contact
    leaves the agent (rejected, not answered, abandoned, transferred, wrapped up, closed).
    A transition is written before its event is published, and after a reject or a
    ring-out routing may already re-offer the agent before that event is out; so those
    holds end at the earliest the release can have happened: the agent's first
    RejectContact call (`reject_started`, by offer id), or the offer's expiry. A hold the
    log never ends lasts forever."""
    s = P.s
    holds = collections.defaultdict(list)
    for cid, chain in chains.items():
        holder, start, prev = None, None, None
        for _, _, env, ev in chain:
            c = ev.contact
            now_holder = c.agent_id if c.state in P.HELD and c.agent_id else None
            if now_holder != holder:
                if holder is not None:
                    end = ts_ns(env.occurred_at)
                    if ev.kind == s.ContactEvent.KIND_REJECTED and prev.offer_id in reject_started:
                        end = min(end, reject_started[prev.offer_id])
                    elif ev.kind == s.ContactEvent.KIND_NOT_ANSWERED and prev.HasField("offer_expire_time"):
                        end = min(end, ts_ns(prev.offer_expire_time))
                    holds[holder].append((start, max(start, end), prev.channel, cid))
                if now_holder is not None:
                    start = ts_ns(env.occurred_at)
                holder = now_holder
            prev = c
        if holder is not None:
            holds[holder].append((start, float("inf"), prev.channel, cid))
    return holds


def check_capacity(holds, capacity, broken):
    """No double booking: at no instant does an agent hold more contacts of a channel than
    its capacity, nor anything beside a contact of an exclusive channel. `capacity`: agent
    id -> {channel: (max contacts, exclusive)}."""
    problems = []
    for aid, intervals in sorted(holds.items()):
        if aid not in capacity:
            problems.append(f"double booking: contacts {[x[3] for x in intervals]} went to unknown agent {aid}")
            continue
        cap = capacity[aid]
        caps = ", ".join(f"{channel_name(c)} {n}{' exclusive' if x else ''}" for c, (n, x) in cap.items())
        # Ends sort before starts at the same instant; a hold of no duration overlaps nothing.
        held_for_a_while = [i for i, (st, en, _, _) in enumerate(intervals) if en > st]
        points = sorted([(intervals[i][0], 1, i) for i in held_for_a_while]
                        + [(intervals[i][1], 0, i) for i in held_for_a_while])
        held, reported = set(), 0
        for when, is_start, i in points:
            if not is_start:
                held.discard(i)
                continue
            held.add(i)
            per = collections.Counter(intervals[j][2] for j in held)
            bad = [f"{per[ch]} {channel_name(ch)}" for ch in per if per[ch] > cap.get(ch, (0, False))[0]]
            bad += [f"{channel_name(ch)} (exclusive) beside other contacts" for ch in per
                    if cap.get(ch, (0, False))[1] and len(held) > per[ch]]
            if bad and reported < 3:
                reported += 1
                detail = ", ".join(
                    f"{intervals[j][3]} {channel_name(intervals[j][2])} {clock(intervals[j][0])}-{clock(intervals[j][1])}"
                    + (" [its event chain is broken]" if intervals[j][3] in broken else "") for j in sorted(held))
                problems.append(f"double booking: agent {aid} ({caps}) held {' and '.join(bad)} at {clock(when)}: "
                                f"{detail}")
    return problems


def test_acd_survives_kill_minus_9(proto, spawn):
    s, t = P.s, P.t
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]
    seed = int(os.environ.get("CENTRALITA_E2E_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    prefix = f"e2e-crash-{run}."
    tenants = [f"crash-a-{run}", f"crash-b-{run}"]
    logs = LOGS / f"acd-crash-{run}"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"\n[acd-crash] run {run}, seed {seed}, topic prefix {prefix}, logs {logs}")

    # 1. Tenants, then the two services under their own prefix.
    manifest = logs / "tenants.yaml"
    manifest.write_text("---\n".join(tenant_yaml(x) for x in tenants))
    cli("admin", "tenant", "apply", "-f", str(manifest),
        env={"CENTRALITA_KAFKA_TOPIC_PREFIX": prefix, "CENTRALITA_KAFKA_BROKERS": BROKERS})
    routing = Service(spawn, "routing", prefix, logs,
                      {"CENTRALITA_ROUTING_TICK": "100ms", "CENTRALITA_ROUTING_SNAPSHOT_EVERY": "500ms"})
    sessions = Service(spawn, "sessions", prefix, logs)
    routing.start()
    sessions.start()
    routing.wait_ready("start")
    sessions.wait_ready("start")

    # 2. Agents: some per tenant, some shared by both; voice is handled alone.
    chat, voice = t.CHANNEL_CHAT, t.CHANNEL_VOICE
    a, b = tenants
    roster = [
        ("a1", [a], {chat: (2, False), voice: (1, True)}),
        ("a2", [a], {chat: (2, False), voice: (1, True)}),
        ("a3", [a], {voice: (1, True)}),
        ("b1", [b], {chat: (2, False), voice: (1, True)}),
        ("b2", [b], {chat: (3, False)}),
        ("s1", [a, b], {chat: (2, False), voice: (1, True)}),
        ("s2", [a, b], {chat: (2, False), voice: (1, True)}),
        ("s3", [a, b], {chat: (2, False)}),
    ]
    admin = mint("--role", "bpo_admin")
    channel_tokens = {x: mint("--tenant", x, "--role", "channel") for x in tenants}
    channel = grpc.insecure_channel(sessions.addr, options=[
        ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 500)])
    h = Harness(channel, rng, run)
    agents = []
    for suffix, assigned, capacity in roster:
        aid = f"cr{run}-{suffix}"
        tokens = {x: mint("--tenant", x, "--role", "agent", "--agent-id", aid) for x in assigned}
        agent = Agent(h, aid, assigned, capacity, tokens)
        agent.upsert(admin)
        agents.append(agent)

    created = {}  # contact name -> (tenant, channel, request id, created at monotonic)
    timeline = []
    marks = {}  # what happened -> wall clock ns
    routing_log_at = 0
    plan = [(rng.choice(tenants), voice if rng.random() < VOICE_SHARE else chat) for _ in range(CONTACTS)]
    abandon = {i: 0.0 for i in rng.sample(range(CONTACTS), ABANDON_NOW)}
    for i in rng.sample([i for i in range(CONTACTS) if i not in abandon], ABANDON_LATER):
        abandon[i] = rng.uniform(0.05, 1.0)

    def customer(i):
        tenant, ch = plan[i]
        request_id = f"{run}-{i}"
        req = s.CreateContactRequest(contact=s.Contact(channel=ch, queue="support"), request_id=request_id)
        c, _ = h.rpc(h.contacts.CreateContact, req, channel_tokens[tenant])
        with h.lock:
            if c.name in created and created[c.name][2] != request_id:
                h.problems.append(f"idempotency: CreateContact {request_id} returned {c.name}, already returned for "
                                  f"{created[c.name][2]}")
            created[c.name] = (tenant, ch, request_id, time.monotonic())
        if i in abandon:
            time.sleep(abandon[i])
            r, err = h.rpc(h.contacts.EndContact, s.EndContactRequest(name=c.name), channel_tokens[tenant],
                           tolerate=(grpc.StatusCode.FAILED_PRECONDITION,))
            if err is not None:
                h.count("customer hang-ups refused (conversation already over)")
            else:
                h.count(f"customer hang-ups -> {state_name(r.state)}")

    def guarded_customer(i):
        try:
            customer(i)
        except grpc.RpcError as e:
            h.problem(f"client error: customer #{i} ({plan[i][0]}, {channel_name(plan[i][1])}, request_id {run}-{i}): "
                      f"{e.code().name}: {e.details()} (transient errors are retried for {PATIENCE:.0f}s)")

    stop_watchdog = threading.Event()

    def watchdog():
        while not stop_watchdog.wait(2.0):
            now_ns = time.time_ns()
            for ag in agents:
                ag.watchdog(now_ns)

    pool = ThreadPoolExecutor(max_workers=12, thread_name_prefix="customer")
    final = {}  # contact name -> its last GetContact
    pending = set()  # contacts not terminal yet
    try:
        for ag in agents:
            ag.start()
        h.spawn("watchdog", watchdog)
        # Let routing join its consumer group and take the partition over (the agents'
        # sign-ins are its first records) before the clock starts, so the kills land while
        # offers are flowing.
        assert wait_for(lambda: "partition taken over" in routing.log.read_text(errors="replace"), 60), \
            f"routing never took its partition over; log: {routing.log}"

        # 3 and 4. Customers at a steady rate; sessions, then routing, killed and restarted.
        t0 = time.monotonic()
        futures = []

        def feed():
            for i in range(CONTACTS):
                delay = t0 + i / RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(guarded_customer, i))

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()

        def at(when):
            delay = t0 + when - time.monotonic()
            if delay > 0:
                time.sleep(delay)

        at(KILL_SESSIONS_AT)
        with h.lock:
            n_before = len(created)
        sessions.kill()
        marks["sessions killed"] = time.time_ns()
        timeline.append(f"{time.monotonic() - t0:5.1f}s sessions killed (SIGKILL) after {n_before} contacts created")
        time.sleep(DOWN_FOR)
        sessions.start()
        took = sessions.wait_ready("its restart")
        marks["sessions ready again"] = time.time_ns()
        timeline.append(f"{time.monotonic() - t0:5.1f}s sessions ready again ({took:.1f}s after restart)")

        at(max(KILL_ROUTING_AT, time.monotonic() - t0 + 1.0))
        with h.lock:
            n_before = len(created)
        routing.kill()
        marks["routing killed"] = time.time_ns()
        routing_log_at = routing.log.stat().st_size
        timeline.append(f"{time.monotonic() - t0:5.1f}s routing killed (SIGKILL) after {n_before} contacts created")
        time.sleep(DOWN_FOR)
        routing.start()
        took = routing.wait_ready("its restart")
        marks["routing ready again"] = time.time_ns()
        timeline.append(f"{time.monotonic() - t0:5.1f}s routing ready again ({took:.1f}s after restart)")

        feeder.join()
        for f in futures:
            f.result()
        timeline.append(f"{time.monotonic() - t0:5.1f}s all {len(created)} contacts created")

        # 5. Drain: agents keep working until every contact is terminal.
        pending = set(created)

        def all_terminal():
            for name in sorted(pending):
                c, _ = h.rpc(h.contacts.GetContact, s.GetContactRequest(name=name), admin)
                final[name] = c
                if c.state in P.TERMINAL:
                    pending.discard(name)
            return not pending

        drained = wait_for(all_terminal, DRAIN_TIMEOUT, interval=0.5)
        timeline.append(f"{time.monotonic() - t0:5.1f}s " + (
            "every contact terminal" if drained else f"{len(pending)} contacts still open after {DRAIN_TIMEOUT}s"))
    finally:
        h.stopping.set()
        stop_watchdog.set()
        for ag in agents:
            ag.stop()
        pool.shutdown(wait=False, cancel_futures=True)
        for th in list(h.threads):
            th.join(timeout=PATIENCE + 10)

    problems = list(h.problems)

    # 6a. Nothing stuck.
    for name in sorted(pending):
        c = final[name]
        problems.append(f"stuck: {name} ({channel_name(c.channel)}) is still {state_name(c.state)}"
                        + (f" with agent {c.agent_id}" if c.agent_id else "") + f" after {DRAIN_TIMEOUT}s of draining")

    # 6b. No event lost: read the contacts topic and check each contact's chain.
    topic = prefix + "contacts"
    deadline = time.monotonic() + 10
    while True:
        events = read_contact_events(topic, set(tenants), deadline)
        chains, duplicates = dedupe(events)
        # The last transitions' events may still be on their way (a transition is written
        # before its event is published): read again until the topic caught up, 10 s at most.
        behind = [n for n, c in final.items()
                  if not chains.get(n.rsplit("/", 1)[1]) or chains[n.rsplit("/", 1)[1]][-1][3].contact.state != c.state]
        if not behind or time.monotonic() > deadline:
            break
        time.sleep(1.0)

    chain_problems, broken = check_chains(chains, created, final, topic)
    problems += chain_problems

    # 6c. No double booking, from the deduplicated events.
    holds = holds_from_events(chains, h.reject_started)
    problems += check_capacity(holds, {ag.id: ag.capacity for ag in agents}, broken)

    # 6d. Agents hold nothing once every contact is over (their lists are updated after the
    # contact's own transition, so give them a moment).
    leftovers = {}

    def agents_empty():
        leftovers.clear()
        for ag in agents:
            r, _ = h.rpc(h.agents.GetAgent, s.GetAgentRequest(name=ag.name), admin)
            if r.contacts:
                leftovers[ag.id] = list(r.contacts)
        return not leftovers

    wait_for(agents_empty, 10, interval=0.5)
    for aid, names in sorted(leftovers.items()):
        states = []
        for n in names:
            c, _ = h.rpc(h.contacts.GetContact, s.GetContactRequest(name=n), admin, tolerate=(grpc.StatusCode.NOT_FOUND,))
            states.append(f"{n} ({state_name(c.state) if c else 'gone'})")
        problems.append(f"agent still holding: {aid} still lists contacts after every contact ended: "
                        f"{', '.join(states)}")
    channel.close()

    # Summary, and what the services did after each restart (to tell a stall from a loss).
    kinds = collections.Counter(kind_name(e[3].kind) for chain in chains.values() for e in chain)
    terminal = collections.Counter(state_name(c.state) for c in final.values())
    offers = sorted(ts_ns(e[2].occurred_at) for chain in chains.values() for e in chain
                    if e[3].kind == s.ContactEvent.KIND_OFFERED)
    # Offers that expired before they were made: routing decisions applied late (after a
    # restart), which ring out at once and make their agent not_responding.
    stale = sum(1 for chain in chains.values() for e in chain if e[3].kind == s.ContactEvent.KIND_OFFERED
                and ts_ns(e[3].contact.offer_expire_time) <= ts_ns(e[2].occurred_at))
    windows = [("before the sessions kill", 0, marks.get("sessions killed")),
               ("between sessions' restart and the routing kill", marks.get("sessions ready again"),
                marks.get("routing killed")),
               ("after routing's restart", marks.get("routing ready again"), None)]
    progress = []
    for label, lo, hi in windows:
        if lo is None:
            continue
        n = sum(1 for x in offers if x >= lo and (hi is None or x < hi))
        progress.append(f"{n} offers {label}")
    takeovers = routing.log.read_bytes()[routing_log_at:].decode(errors="replace").count("routing partition taken over")
    lags = {}
    for group, topic_name in [(prefix + "routing", prefix + "routing.inputs"),
                              (prefix + "sessions.decisions", prefix + "routing.decisions")]:
        try:
            lags[group] = group_lag(group, topic_name)[0]
        except Exception as e:  # noqa: BLE001 - diagnosis only
            lags[group] = f"unknown ({e})"
    diagnosis = (f"{'; '.join(progress)}; last offer at {clock(offers[-1]) if offers else 'never'}; routing logged "
                 f"{takeovers} partition takeover(s) after its restart; records not consumed at the end: "
                 + ", ".join(f"{g} {n}" for g, n in lags.items()))
    print("[acd-crash] timeline:\n  " + "\n  ".join(timeline))
    print(f"[acd-crash] contacts created {len(created)}/{CONTACTS}; final states {dict(sorted(terminal.items()))}")
    print(f"[acd-crash] {topic}: {len(events)} events read, {duplicates} duplicates dropped by event id; "
          f"offers {kinds['OFFERED']}, accepted {kinds['ACCEPTED']}, rejected {kinds['REJECTED']}, "
          f"RONAs {kinds['NOT_ANSWERED']}, abandoned {kinds['ABANDONED']}, wrapped up {kinds['WRAPPED_UP']}, "
          f"timed out {kinds['TIMED_OUT']}; offers already expired when made {stale}")
    print(f"[acd-crash] after the restarts: {diagnosis}")
    print("[acd-crash] clients: " + ", ".join(f"{k} {v}" for k, v in sorted(h.stats.items())))
    print(f"[acd-crash] {len(problems)} problem(s); took {time.monotonic() - started:.1f}s")
    if problems:
        groups = collections.defaultdict(list)
        for text in problems:
            category, _, detail = text.partition(": ")
            groups[category].append(detail)
        lines = ["timeline: " + "; ".join(x.strip() for x in timeline)]
        if "stuck" in groups:
            lines.append("contacts stuck; what the services did after their restarts (a consumer group left with "
                         f"records it never consumed did not resume after the kill): {diagnosis}")
        for category in ["stuck", "lost events", "unexpected contact", "idempotency", "double booking",
                         "agent still holding", "client error"] + sorted(groups):
            details = groups.pop(category, [])
            if details:
                lines.append(f"{category} ({len(details)}):")
                lines += [f"  {d}" for d in details[:8]]
                if len(details) > 8:
                    lines.append(f"  ... and {len(details) - 8} more")
        pytest.fail(f"the ACD did not survive kill -9 cleanly: {len(problems)} problem(s) (run {run}, seed {seed}, "
                    f"logs {logs}):\n  " + "\n  ".join(lines), pytrace=False)
