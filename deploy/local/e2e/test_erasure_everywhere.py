"""After an erasure, no store holds the person (issue 23), against the running services.

Unique strings are planted through real contacts of tenant A: a customer known to the CRM
by name, phone number and email, with a note; a contact created by a channel carrying that
phone and email (and an attribute naming the account holder), offered to an agent who accepts, ends and
wraps it up with notes, and a post-resolution answer recorded for it; an SMS from the phone
(signed with PyPI `twilio`'s validator); a web chat message and a file (its name and bytes
planted) from a visitor whose chat customer is merged into the first, the chat taken and
ended by the agent so recording keeps its transcript (gone with the erasure, row and object). Tenant B has a
customer with the **same phone number** and its own SMS.

The tenant admin erases A's customer (CRM `EraseCustomer`) and the erasure's audit record
shows every store done. Then every store is searched for every planted string:
- every table of every schema of every database of the stack's PostgreSQL, as the
  superuser (no row-level security), each row cast to text and each bytea column as bytes;
- every Redis key (SCAN), with its value read by type;
- every Kafka topic of the run's prefix, from the beginning (keys, values, headers);
- the recording object store and spool directories;
- every log file of the run.
None holds any of A's strings. B's rows with the same phone number are still there (in
PostgreSQL and in Redis), told apart by B's tenant id in the row, key or envelope.

Replays: the contacts topic is searched whole too, so a replay has nothing to recreate A's
customer from; B's contact events (SMS contacts with B's customer's phone) carry no identity
either (references only). And the second test replays every topic of the run, from the
beginning, into a second set of every service with empty stores (its own database, Redis
database and topic prefix), then searches those stores, topics and logs the same way: the
replay rebuilds B's customer and both tenants' legs, and nothing of A's person.
"""
import hashlib
import os
import pathlib
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from types import SimpleNamespace

import grpc
import pytest
from kafka import KafkaConsumer, TopicPartition

from conftest import BROKERS, LOGS, PREFIX, REPO, auth, cli, endpoints, http_get, mint, second_run_env, wait_for
from test_sms import inbound, post_form, secrets_dir, sid, signed
from test_webchat import BASE, http, start_chat


@pytest.fixture(scope="module")
def m(pb):
    from centralita.crm.v1 import crm_pb2, crm_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        c = crm_pb2
        cg = crm_pb2_grpc
        s = sessions_pb2
        sg = sessions_pb2_grpc
        t = pb.tenancy
        env = pb.envelope

    return M


def tenant_yaml(tenant, account, secret, number, key, origin, retention_days=30, transcripts=False):
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: Erasure everywhere {tenant}
  channels: [email, sms, chat]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: {retention_days}
  recording: {{ voice: none, chatTranscripts: {str(transcripts).lower()} }}
  routing:
    dispositionCodes: [resolved]
    queues:
      - {{ id: support, offerTimeoutSeconds: 60, afterContactWorkSeconds: 60 }}
  sms:
    accountSid: {account}
    authTokenSecret: {secret}
    numbers:
      - {{ number: "{number}", queue: support }}
  webchat:
    widgetKey: {key}
    allowedOrigins: ["{origin}"]
    queue: support
"""


# --- PostgreSQL, as the superuser -------------------------------------------------------

def pg_socket_dir():
    """The stack's PostgreSQL socket directory (deploy/local/stack.sh `pg_dir`/sock)."""
    port = os.environ.get("CENTRALITA_PG_PORT", "5440")
    data = pathlib.Path(os.environ.get("CENTRALITA_DATA", REPO / ".local"))
    digest = hashlib.md5(f"{REPO}\n".encode()).hexdigest()[:10]
    candidates = [pathlib.Path(f"/var/lib/postgresql/centralita-{digest}/sock"), data / "postgres" / "sock",
                  *sorted(pathlib.Path("/var/lib/postgresql").glob("centralita-*/sock"))]
    for d in candidates:
        if (d / f".s.PGSQL.{port}").exists():
            return str(d)
    pytest.fail(f"no PostgreSQL socket of the stack found (port {port})")


def superuser_psql(database, sql):
    """psql as the `postgres` superuser over the stack's socket; rows as lists of fields."""
    port = os.environ.get("CENTRALITA_PG_PORT", "5440")
    out = subprocess.run(["psql", "-h", pg_socket_dir(), "-p", port, "-U", "postgres", "-d", database,
                          "-X", "-At", "-F", "\x1f", "-v", "ON_ERROR_STOP=1"],
                         input=sql, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [line.split("\x1f") for line in out.stdout.splitlines() if line]


def sql_literal(s):
    return "'" + s.replace("'", "''") + "'"


def postgres_hits(needles, tenant_b, databases=None):
    """{needle: [(database, table, rows)]} of rows (outside tenant B) holding a needle: each
    row cast to text, and each bytea column searched as bytes; also B's hits, apart. Every
    database of the stack unless `databases` names some."""
    databases = databases or [r[0] for r in superuser_psql(
        "postgres", "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate")]
    hits, b_hits = {n: [] for n in needles}, {n: [] for n in needles}
    for db in databases:
        tables = superuser_psql(db, """
            SELECT quote_ident(table_schema) || '.' || quote_ident(table_name),
                   coalesce(string_agg(quote_ident(column_name), ',') FILTER (WHERE data_type = 'bytea'), '')
            FROM information_schema.columns c
            WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
              AND table_schema NOT LIKE 'pg_toast%'
              AND EXISTS (SELECT 1 FROM information_schema.tables t WHERE t.table_schema = c.table_schema
                          AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE')
            GROUP BY 1""")
        if not tables:
            continue
        not_b = f"position({sql_literal(tenant_b)} in x::text) = 0"
        for table, bytea_cols in tables:
            # One scan per table: for each needle, the rows outside and inside tenant B.
            counts = []
            for needle in needles:
                lit = sql_literal(needle)
                cond = " OR ".join([f"position({lit} in x::text) > 0"] + [
                    f"position(convert_to({lit}, 'UTF8') in coalesce(x.{col}, ''::bytea)) > 0"
                    for col in bytea_cols.split(",") if col])
                counts += [f"count(*) FILTER (WHERE ({cond}) AND {not_b})",
                           f"count(*) FILTER (WHERE ({cond}) AND NOT {not_b})"]
            row = superuser_psql(db, f"SELECT {', '.join(counts)} FROM {table} x;")[0]
            for i, needle in enumerate(needles):
                outside_b, in_b = int(row[2 * i]), int(row[2 * i + 1])
                if outside_b:
                    hits[needle].append((db, table, outside_b))
                if in_b:
                    b_hits[needle].append((db, table, in_b))
    return hits, b_hits


# --- Redis, every key --------------------------------------------------------------------

class Resp:
    """A minimal RESP2 client (no Redis library in the test requirements): pipelined
    commands, binary-safe replies."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            assert chunk, "redis closed the connection"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(1 << 20)
            assert chunk, "redis closed the connection"
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest
        if kind == b"-":
            return RuntimeError(rest.decode(errors="replace"))
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise AssertionError(f"unexpected RESP reply {line!r}")

    def pipeline(self, commands):
        out = b"".join(b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in c) for c in commands)
        self.sock.sendall(out)
        return [self._reply() for _ in commands]


def flatten(v):
    if v is None or isinstance(v, Exception):
        return b""
    if isinstance(v, list):
        return b"\x00".join(flatten(x) for x in v)
    return v


def redis_values(db=0):
    """{key: every byte of its value} of every key of the stack's Redis (database `db`)."""
    r = Resp(int(os.environ.get("CENTRALITA_REDIS_PORT", "6390")))
    assert r.pipeline([[b"SELECT", str(db).encode()]]) == [b"OK"]
    keys, cursor = [], b"0"
    while True:
        cursor, batch = r.pipeline([[b"SCAN", cursor, b"COUNT", b"1000"]])[0]
        keys += batch
        if cursor == b"0":
            break
    reads = {b"string": lambda k: [b"GET", k], b"hash": lambda k: [b"HGETALL", k],
             b"set": lambda k: [b"SMEMBERS", k], b"zset": lambda k: [b"ZRANGE", k, b"0", b"-1"],
             b"list": lambda k: [b"LRANGE", k, b"0", b"-1"], b"stream": lambda k: [b"XRANGE", k, b"-", b"+"]}
    values = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        types = r.pipeline([[b"TYPE", k] for k in chunk])
        readable = [(k, reads[t](k)) for k, t in zip(chunk, types) if t in reads]
        for (k, _), v in zip(readable, r.pipeline([c for _, c in readable])):
            values[k] = k + b"\x00" + flatten(v)
    return values


# --- Kafka, every topic of the run --------------------------------------------------------

def read_topics(prefix):
    """(topics, {topic: partitions}, records) of every topic named with `prefix`, every
    record from the beginning to the current end (kafka-python's ConsumerRecords)."""
    consumer = KafkaConsumer(bootstrap_servers=BROKERS, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest")
    try:
        topics = sorted(t for t in consumer.topics() if t.startswith(prefix))
        partitions = {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records, deadline = [], time.monotonic() + 120
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for _, batch in consumer.poll(timeout_ms=500, max_records=5000).items():
                records += batch
        left = {str(tp): end[tp] - consumer.position(tp) for tp in tps if consumer.position(tp) < end[tp]}
        assert not left, f"could not read every topic to its end: {left}"
    finally:
        consumer.close()
    return topics, partitions, records


def envelope_tenant(m, value):
    try:
        return m.env.Envelope.FromString(value or b"").tenant_id
    except Exception:  # noqa: BLE001 - a record that is not an envelope belongs to no tenant
        return ""


def kafka_records(m, prefix=PREFIX):
    """(topic, tenant of the envelope or '', every byte of key, value and headers) of every
    record of every topic of `prefix` (the run's), from the beginning to the current end."""
    topics, _, records = read_topics(prefix)
    out = []
    for r in records:
        tenant = envelope_tenant(m, r.value)
        raw = (r.key or b"") + b"\x00" + (r.value or b"") + b"\x00" + b"\x00".join(
            k.encode() + b"=" + (v or b"") for k, v in (r.headers or []))
        out.append((r.topic, tenant, raw))
    return topics, out


def files_under(*dirs):
    for d in dirs:
        p = pathlib.Path(d)
        if p.exists():
            yield from (f for f in p.rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def erased(m, tmp_path_factory):
    """Tenant A's customer planted through real contacts and erased (every store reports
    done); tenant B with the same phone number. What the tests below search for."""
    tmp_path = tmp_path_factory.mktemp("erasure")
    eps = endpoints()
    s, c = m.s, m.c
    run = uuid.uuid4().hex[:8]
    a, b = f"eea-{run}", f"eeb-{run}"
    num = int(run, 16) % 10_000_000
    phone = f"+3463{num:07d}"
    planted = {
        "phone": phone,
        "email": f"zoe.{run}@example.org",
        "name": f"Zoe Quintana{run}",
        "note": f"note-{run}: lives at 7 Elm Street",
        "wrap-up notes": f"wrap-{run}: promised a refund",
        "chat text": f"chat-{run}: my card ends 4242",
        "sms text": f"sms-{run}: call me after six",
        "attribute": f"attr-{run}-holder",
        "answer": f"answer-{run}: the refund arrived",
        "file name": f"dni-{run}-scan.pdf",
        "file bytes": f"DNI {run} 12345678Z",
    }
    b_text = f"sms-b-{run}: other company's customer"
    origin = f"https://shop-{run}.example"
    accounts, tokens, numbers, keys = {}, {}, {}, {}
    docs = []
    for t, prefix in ((a, "+1561"), (b, "+1562")):
        accounts[t], tokens[t], numbers[t], keys[t] = "AC" + uuid.uuid4().hex, uuid.uuid4().hex, \
            f"{prefix}{num:07d}", f"widget-key-{t}"
        d = secrets_dir() / f"{t}-twilio"
        d.mkdir(parents=True, exist_ok=True)
        (d / "authToken").write_text(tokens[t] + "\n")
        docs.append(tenant_yaml(t, accounts[t], f"{t}-twilio", numbers[t], keys[t], origin, transcripts=True))
    manifest = tmp_path / "tenants.yaml"
    manifest.write_text("---\n".join(docs))
    cli("admin", "tenant", "apply", "-f", str(manifest))

    sessions_ch, crm_ch = grpc.insecure_channel(eps["sessions"]), grpc.insecure_channel(eps["crm"])
    agents, contacts = m.sg.AgentServiceStub(sessions_ch), m.sg.ContactServiceStub(sessions_ch)
    crm = m.cg.CustomerServiceStub(crm_ch)
    admin = {t: mint("--tenant", t, "--role", "tenant_admin") for t in (a, b)}
    channel = mint("--tenant", a, "--role", "channel")
    bpo = mint("--role", "bpo_admin")

    def known(t):
        try:
            contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(admin[t]), timeout=5)
            crm.FindCustomers(c.FindCustomersRequest(identity=c.Identity(kind=c.IDENTITY_KIND_PHONE, value=phone)),
                              metadata=auth(admin[t]), timeout=5)
            return post_form(f"/sms/twilio/{t}", {"To": numbers[t]})[0] == 401
        except grpc.RpcError:
            return False

    assert wait_for(lambda: known(a) and known(b), 60), "the services never saw the tenants"

    # The CRM knows A's customer by name, phone and email, with a note.
    ids = [c.Identity(kind=c.IDENTITY_KIND_PHONE, value=phone),
           c.Identity(kind=c.IDENTITY_KIND_EMAIL, value=planted["email"])]
    zoe = crm.ResolveCustomer(c.ResolveCustomerRequest(identities=ids, display_name=planted["name"]),
                              metadata=auth(admin[a]), timeout=10).customer
    crm.AddNote(c.AddNoteRequest(customer=zoe.name, text=planted["note"]), metadata=auth(admin[a]), timeout=10)

    # A contact from a channel with the phone and email, offered, accepted, ended, wrapped up.
    agent_id = f"ee-agent-{run}"
    agent_token = mint("--tenant", a, "--role", "agent", "--agent-id", agent_id)
    agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
        name=f"agents/{agent_id}", display_name=agent_id, queues=[s.QueueAssignment(tenant=a, queue="support")],
        capacity=[s.ChannelCapacity(channel=ch, max_contacts=1, exclusive=False)
                  for ch in (m.t.CHANNEL_EMAIL, m.t.CHANNEL_CHAT)])),
        metadata=auth(bpo), timeout=10)
    agents.SignIn(s.SignInRequest(name=f"agents/{agent_id}", available=True), metadata=auth(agent_token), timeout=10)
    offers, errors = [], []
    stream = agents.StreamAgentEvents(s.StreamAgentEventsRequest(name=f"agents/{agent_id}"),
                                      metadata=auth(agent_token))

    def listen():
        try:
            for ev in stream:
                if ev.WhichOneof("event") == "offer":
                    offers.append(ev.offer)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                errors.append(e)

    threading.Thread(target=listen, daemon=True).start()
    first = contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
        channel=m.t.CHANNEL_EMAIL, queue="support", customer_identities=ids,
        attributes={"account_holder": planted["attribute"]}), request_id=f"{run}-1"),
        metadata=auth(channel), timeout=10)
    assert wait_for(lambda: offers or errors, 30) and not errors, errors
    o = offers[0]
    assert o.name == first.name
    contacts.AcceptContact(s.AcceptContactRequest(name=o.name, offer_id=o.offer_id), metadata=auth(agent_token),
                           timeout=10)
    contacts.EndContact(s.EndContactRequest(name=o.name), metadata=auth(agent_token), timeout=10)
    contacts.WrapUpContact(s.WrapUpContactRequest(name=o.name, disposition="resolved", notes=planted["wrap-up notes"]),
                           metadata=auth(agent_token), timeout=10)
    # The post-resolution answer, recorded against that contact.
    crm.RecordAnswer(c.RecordAnswerRequest(customer=zoe.name, contact=first.name, question="¿Se resolvió?",
                                           answer=planted["answer"]), metadata=auth(admin[a]), timeout=10)

    # An SMS from the same phone (A), and from the same phone to B.
    for t, text in ((a, planted["sms text"]), (b, b_text)):
        path = f"/sms/twilio/{t}"
        assert signed(tokens[t], path, inbound(accounts[t], sid(), phone, numbers[t], text))[0] == 200

    # A web chat visitor of A writes; its chat customer is merged into Zoe.
    status, chat = start_chat(a, keys[a], origin)
    assert status == 201, chat
    status, body = http("POST", f"/v1/tenants/{a}/webchat/messages", {"text": planted["chat text"]},
                        {"authorization": f"Bearer {chat['visitorToken']}", "origin": origin})
    assert status == 201, body
    # And sends a file: its name and its bytes carry the person.
    pdf = f"%PDF-1.4\n% {planted['file bytes']}\n%%EOF\n".encode()
    req = urllib.request.Request(
        f"{BASE}/v1/tenants/{a}/webchat/attachments?name={planted['file name']}&requestId=f-{run}", data=pdf,
        method="POST", headers={"content-type": "application/pdf", "authorization": f"Bearer {chat['visitorToken']}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
    # The agent takes the chat and ends it: recording keeps its transcript (encrypted).
    assert wait_for(lambda: any(x.name == chat["contact"] for x in offers) or errors, 30) and not errors, errors
    o = next(x for x in offers if x.name == chat["contact"])
    contacts.AcceptContact(s.AcceptContactRequest(name=o.name, offer_id=o.offer_id), metadata=auth(agent_token),
                           timeout=10)
    contacts.EndContact(s.EndContactRequest(name=o.name), metadata=auth(agent_token), timeout=10)
    contacts.WrapUpContact(s.WrapUpContactRequest(name=o.name, disposition="resolved"), metadata=auth(agent_token),
                           timeout=10)
    stream.cancel()
    database = os.environ.get("CENTRALITA_DATABASE_URL", "postgres://x@y/centralita").rsplit("/", 1)[1]
    chat_id = chat["contact"].rsplit("/", 1)[1]

    def transcript_objects():
        return [r[0] for r in superuser_psql(database, "SELECT object_key FROM recording.recordings WHERE "
                                                       f"contact_id = {sql_literal(chat_id)} AND kind = 'transcript'")]

    assert wait_for(transcript_objects, 60), "recording never kept the chat's transcript"
    data_dir = pathlib.Path(os.environ.get("CENTRALITA_DATA", REPO / ".local"))
    store = pathlib.Path(os.environ.get(
        "CENTRALITA_RECORDING_STORE_URL",
        f"file://{data_dir}/recordings/{os.environ.get('CENTRALITA_RUN_NAME', 'dev')}/objects").removeprefix("file://"))
    [transcript] = transcript_objects()
    assert (store / transcript).is_file(), f"the transcript's object is not in {store}"

    def timeline(customer):
        r = crm.ListTimeline(c.ListTimelineRequest(customer=customer), metadata=auth(admin[a]), timeout=5)
        return [e.interaction for e in r.entries if e.HasField("interaction")]

    def chat_customer():
        r = crm.FindCustomers(c.FindCustomersRequest(identity=c.Identity(kind=c.IDENTITY_KIND_CHAT,
                                                                         value=chat["visitorId"])),
                              metadata=auth(admin[a]), timeout=5)
        return r.customers[0].name if r.customers else None

    assert wait_for(lambda: chat_customer() is not None, 60), "the CRM never linked the chat contact"
    crm.MergeCustomers(c.MergeCustomersRequest(target=zoe.name, source=chat_customer(), reason="same person"),
                       metadata=auth(admin[a]), timeout=10)

    # Every contact is on Zoe's timeline (the SMS and email-channel ones through the phone,
    # the chat through the merge), the wrap-up notes read from sessions' record.
    def linked():
        items = timeline(zoe.name)
        return len(items) >= 3 and any(i.wrap_up_notes == planted["wrap-up notes"] for i in items)

    assert wait_for(linked, 60), timeline(zoe.name)
    contact_names = {i.contact for i in timeline(zoe.name)}
    assert first.name in contact_names and chat["contact"] in contact_names

    # Before: the strings are where they should be (so the search below can find them).
    before, _ = postgres_hits(list(planted.values()), b)
    for label in ("phone", "email", "name", "note", "wrap-up notes", "chat text", "sms text", "file name",
                  "file bytes", "answer"):
        assert before[planted[label]], f"{label} is not stored anywhere before the erasure: the search is blind"
    assert any(planted["phone"].encode() in v for v in redis_values().values()), "sessions' record holds the phone"

    def in_reporting_legs(names):
        hits, _ = postgres_hits(names, b)
        return sorted(n for n, where in hits.items() for w in where if w[1] == "reporting.legs")

    # Reporting's legs carry the contacts' ids (the link to the person that erasure cuts).
    assert wait_for(lambda: first.name in in_reporting_legs([first.name]), 30), "reporting never folded the call"

    erasure = crm.EraseCustomer(c.EraseCustomerRequest(name=zoe.name, reason="data subject request"),
                                metadata=auth(admin[a]), timeout=10)
    assert contact_names <= set(erasure.contacts)

    def stores():
        e = crm.GetErasure(c.GetErasureRequest(name=erasure.name), metadata=auth(admin[a]), timeout=5)
        return {x.store: x.state for x in e.stores}

    assert wait_for(lambda: stores() and set(stores().values()) == {c.ErasureStore.STATE_DONE}, 90), stores()
    assert {"media", "recording", "reporting", "sessions"} <= set(stores())
    # Recording: the chat's transcript, row and object, is gone.
    assert transcript_objects() == [] and not (store / transcript).exists(), "the chat's transcript outlived the erasure"
    # Reporting's legs of the erased customer's contacts carry a pseudonym now.
    assert in_reporting_legs(sorted(contact_names)) == [], "reporting's legs still name the erased customer's contacts"
    with pytest.raises(grpc.RpcError) as other:
        crm.GetErasure(c.GetErasureRequest(name=erasure.name), metadata=auth(admin[b]), timeout=5)
    assert other.value.code() == grpc.StatusCode.NOT_FOUND
    return SimpleNamespace(a=a, b=b, run=run, phone=phone, planted=planted, first=first, chat=chat,
                           contact_names=contact_names, eps=eps, admin=admin)


def test_an_erased_customer_is_in_no_store_and_the_other_tenants_same_number_stays(m, erased):
    a, b, phone, planted, first, chat = erased.a, erased.b, erased.phone, erased.planted, erased.first, erased.chat
    needles = list(planted.values())
    leaks = []
    # PostgreSQL: every table of every database, as the superuser.
    pg, pg_b = postgres_hits(needles, b)
    leaks += [("postgres", n, where) for n, where in pg.items() if where]
    assert pg_b[phone], "tenant B's rows with the same phone number went too"
    # Redis: every key.
    values = redis_values()
    b_tag = f"{{t:{b}}}".encode()
    for n in needles:
        keys = [k for k, v in values.items() if n.encode() in v and b_tag not in k and b.encode() not in v]
        if keys:
            leaks.append(("redis", n, keys[:5]))
    assert any(phone.encode() in v for k, v in values.items() if b_tag in k), \
        "tenant B's contact record with the same phone number went too"
    # Kafka: every topic of the run, from the beginning.
    topics, records = kafka_records(m)
    assert f"{PREFIX}contacts" in topics and f"{PREFIX}conversations" in topics, topics
    # The reading works: A's contacts and messages are on the topics, by reference.
    assert any(t == f"{PREFIX}contacts" and first.name.encode() in raw for t, _, raw in records)
    assert any(t == f"{PREFIX}conversations" and chat["contact"].encode() in raw for t, _, raw in records)
    for n in needles:
        where = sorted({t for t, tenant, raw in records if tenant != b and n.encode() in raw})
        if where:
            leaks.append(("kafka", n, where))
    # The recording object store and spool, and every log file of the run.
    run_name = os.environ.get("CENTRALITA_RUN_NAME", "dev")
    data = pathlib.Path(os.environ.get("CENTRALITA_DATA", REPO / ".local"))
    store = os.environ.get("CENTRALITA_RECORDING_STORE_URL", f"file://{data}/recordings/{run_name}/objects")
    recording_dirs = [store.removeprefix("file://"),
                      os.environ.get("CENTRALITA_RECORDING_SPOOL_DIR", f"{data}/recordings/{run_name}/spool")]
    for f in list(files_under(*recording_dirs)) + list(LOGS.rglob("*.log")):
        content = f.read_bytes()
        leaks += [("file", n, str(f)) for n in needles if n.encode() in content]
    assert list(LOGS.rglob("*.log")), f"no log files under {LOGS}"
    assert not leaks, "\n".join(map(str, leaks))

    # What a replay of the contacts topic could recreate the person from: no event of the run
    # carries identities, attributes or wrap-up notes (references only); the text of messages
    # is not on the conversations topic either.
    for topic, tenant, raw in records:
        if topic == f"{PREFIX}contacts" and tenant == b:
            assert phone.encode() not in raw, "B's contact events carry B's customer's phone"


# --- Replaying every topic into empty stores ----------------------------------------------

# The replay's own run (services.sh): gRPC 31451-31456, admin 9601-9606 (so SIP 5560, web
# chat 8980, SMTP 25925, playback 9690, RTP 25000-25999), clear of the suite's, the chaos
# test's and the dev run; its own database, Redis database and topic prefix.
REPLAY_GRPC_BASE, REPLAY_ADMIN_BASE, REPLAY_REDIS_DB = 31451, 9601, 13


def copy_topics(m, tenants, prefix):
    """Copies every record of every topic of the run that belongs to one of `tenants` (by its
    envelope, or naming one: an agent's events name its queues' tenants) to the same topic
    and partition under `prefix`, in order, with key, headers and time; {topic: copied}."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    topics, partitions, records = read_topics(PREFIX)
    admin = KafkaAdminClient(bootstrap_servers=BROKERS)
    try:
        admin.create_topics([NewTopic(prefix + t.removeprefix(PREFIX), num_partitions=partitions[t],
                                      replication_factor=1,
                                      topic_configs={"cleanup.policy": "compact" if t.endswith("tenants") else "delete"})
                             for t in topics if partitions[t]])
    finally:
        admin.close()
    names = [t.encode() for t in tenants]
    producer = KafkaProducer(bootstrap_servers=BROKERS, acks="all", linger_ms=5)
    copied = {}
    for r in records:
        if envelope_tenant(m, r.value) in tenants or any(n in (r.key or b"") + (r.value or b"") for n in names):
            topic = prefix + r.topic.removeprefix(PREFIX)
            producer.send(topic, value=r.value, key=r.key, headers=list(r.headers or []), partition=r.partition,
                          timestamp_ms=r.timestamp)
            copied[topic] = copied.get(topic, 0) + 1
    producer.flush(60)
    producer.close()
    return copied


def group_lag(prefix):
    """{group: records not yet consumed} of every consumer group named with `prefix`, over
    every partition of each topic the group has committed on."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=BROKERS)
    consumer = KafkaConsumer(bootstrap_servers=BROKERS, group_id=None, enable_auto_commit=False)
    try:
        lag = {}
        for g in admin.list_groups():
            group = g["group_id"]
            if not group.startswith(prefix):
                continue
            committed = admin.list_group_offsets(group).get(group, {})
            tps = [TopicPartition(t, p) for t in {tp.topic for tp in committed}
                   for p in consumer.partitions_for_topic(t) or ()]
            ends = consumer.end_offsets(tps) if tps else {}
            lag[group] = sum(max(0, ends[tp] - max(committed[tp].offset if tp in committed else 0, 0)) for tp in tps)
        return lag
    finally:
        consumer.close()
        admin.close()


def test_replaying_every_topic_into_empty_stores_does_not_bring_the_person_back(m, erased, tmp_path):
    """After the erasure, every topic of the run is replayed from the beginning into a second
    set of every service with empty stores (a database, a Redis database and a topic prefix of
    its own): the records of A and B are copied in order to the replay's prefix, and the
    replay's consumer groups read them from the start. Its services ask the suite's sessions
    for contacts, as a rebuilt consumer would in production (sessions holds the identities;
    the erasure cleared A's). When every group has caught up, the replay's stores, topics,
    recording directories and logs hold none of A's strings, while they did rebuild what
    the events carry: B's customer (the same phone number) in CRM, A's and B's legs in
    reporting."""
    a, b, phone, planted = erased.a, erased.b, erased.phone, erased.planted
    needles = list(planted.values())
    run = f"e2e-replay-{erased.run}"
    prefix = f"replay-{erased.run}."
    database = f"replay_{erased.run}"
    data = pathlib.Path(os.environ.get("CENTRALITA_DATA", REPO / ".local"))
    superuser_psql("postgres", f"CREATE DATABASE {database} OWNER centralita")
    redis = Resp(int(os.environ.get("CENTRALITA_REDIS_PORT", "6390")))
    assert redis.pipeline([[b"SELECT", str(REPLAY_REDIS_DB).encode()], [b"FLUSHDB"]]) == [b"OK", b"OK"]
    copied = copy_topics(m, {a, b}, prefix)
    assert copied.get(f"{prefix}contacts") and copied.get(f"{prefix}tenants", 0) >= 2, copied

    env = second_run_env(run, REPLAY_GRPC_BASE, REPLAY_ADMIN_BASE, prefix, database, REPLAY_REDIS_DB,
                         CENTRALITA_PEER_SESSIONS_ENDPOINT=f"http://{erased.eps['sessions']}",
                         CENTRALITA_SMS_SECRETS_DIR=str(secrets_dir()))
    services = str(REPO / "deploy/local/services.sh")
    log = tmp_path / "replay-services.log"
    try:
        with open(log, "w") as out:
            subprocess.run([services, "start"], env=env, stdout=out, stderr=subprocess.STDOUT, check=True,
                           timeout=300)

        def ready():
            return all(http_get(REPLAY_ADMIN_BASE + i, "/readyz")[0] == 200 for i in range(6))

        assert wait_for(ready, 120), log.read_text()[-3000:]
        replay_db = [database]

        def rebuilt():
            _, b_hits = postgres_hits([phone], b, replay_db)
            legs = superuser_psql(database, "SELECT DISTINCT tenant FROM reporting.legs")
            return any(w[1] == "crm.identities" for w in b_hits[phone]) and {(a,), (b,)} <= {tuple(r) for r in legs}

        assert wait_for(rebuilt, 120), "the replay never rebuilt B's customer and A's and B's legs"
        assert wait_for(lambda: (lag := group_lag(prefix)) and not any(lag.values()), 120), group_lag(prefix)
        print(f"replayed {sum(copied.values())} records of {len(copied)} topics; "
              f"{len(group_lag(prefix))} consumer groups caught up")

        leaks = []
        pg, pg_b = postgres_hits(needles, b, replay_db)
        leaks += [("postgres", n, where) for n, where in pg.items() if where]
        assert pg_b[phone], "the replay's CRM never resolved B's customer: the search is blind"
        values = redis_values(REPLAY_REDIS_DB)
        assert values, "the replay's services wrote nothing to their Redis database"
        for n in needles:
            keys = [k for k, v in values.items() if n.encode() in v]
            if keys:
                leaks.append(("redis", n, keys[:5]))
        topics, records = kafka_records(m, prefix)
        for n in needles:
            where = sorted({t for t, tenant, raw in records if tenant != b and n.encode() in raw})
            if where:
                leaks.append(("kafka", n, where))
        files = list(files_under(data / "recordings" / run, data / "logs" / run))
        assert any(f.suffix == ".log" for f in files), files
        for f in files:
            content = f.read_bytes()
            leaks += [("file", n, str(f)) for n in needles if n.encode() in content]
        assert not leaks, "\n".join(map(str, leaks))
    finally:
        subprocess.run([services, "stop"], env=env, capture_output=True, timeout=120)
        superuser_psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        redis.pipeline([[b"FLUSHDB"]])
