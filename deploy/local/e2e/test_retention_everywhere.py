"""A tenant's `dataRetentionDays` reaches every store (issue 23), against the running services.

Two tenants keep chat transcripts: A keeps data 1 day, B 30 days. In each, unique strings are
planted through real contacts: a CRM customer (name, phone, email) with a note and a
post-resolution answer; a contact from a channel carrying the phone, email and an attribute,
offered, accepted, ended and wrapped up with notes; an SMS from the phone (signed with PyPI
`twilio`'s validator), offered and handled too; a web chat with the customer's message, a file
and the agent's reply, ended, so recording keeps its transcript.

Then the clock of the sweepers is moved two days ahead: crm, media, recording and reporting
are restarted with `CENTRALITA_SWEEP_CLOCK_OFFSET=2d` and a 2 s sweep interval (and restarted
as they were at the end). Everything of A is then past its limit, nothing of B is. Shown:
- PostgreSQL (every table of every database, as the superuser) holds none of A's strings
  and every one of B's; the recording store holds no transcript of A and B's still;
- Redis holds A's strings only in sessions' records of closed contacts, each expiring
  within a day (the limit's floor; `CLOSED_TTL_MS`);
- no Kafka topic of the run and no log file holds any of A's strings (events carry
  references only);
- reporting keeps A's figures (offered, answered, handled per day) as they were, while its
  legs no longer name A's contacts (anonymised), and B's legs still do;
- each sweeper counted what it removed (its metrics).
"""
import os
import pathlib
import subprocess
import time
import urllib.request
import uuid

import grpc
import pytest

from conftest import LOGS, PREFIX, REPO, OfferedAgent, auth, cli, endpoints, http_get, mint, wait_for
from test_erasure_everywhere import (Resp, files_under, kafka_records, postgres_hits, redis_values,
                                     tenant_yaml)
from test_sms import inbound, post_form, secrets_dir, sid, signed
from test_webchat import BASE, http, start_chat

SWEPT = ("crm", "media", "recording", "reporting")


@pytest.fixture(scope="module")
def m(pb):
    from centralita.crm.v1 import crm_pb2, crm_pb2_grpc
    from centralita.media.v1 import media_pb2, media_pb2_grpc
    from centralita.recording.v1 import recording_pb2, recording_pb2_grpc
    from centralita.reporting.v1 import reporting_pb2, reporting_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        c, cg = crm_pb2, crm_pb2_grpc
        md, mg = media_pb2, media_pb2_grpc
        r, rg = recording_pb2, recording_pb2_grpc
        rp, rpg = reporting_pb2, reporting_pb2_grpc
        s, sg = sessions_pb2, sessions_pb2_grpc
        t = pb.tenancy
        env = pb.envelope

    return M


# --- The suite's services, restarted with another environment -----------------------------

def _process(name):
    data = pathlib.Path(os.environ.get("CENTRALITA_DATA", REPO / ".local"))
    run = os.environ.get("CENTRALITA_RUN_NAME", "dev")
    return data / "run" / run / f"{name}.pid", data / "logs" / run / f"{name}.log"


def environment(name):
    pidf, _ = _process(name)
    pid = int(pidf.read_text())
    raw = pathlib.Path(f"/proc/{pid}/environ").read_text()
    return dict(v.split("=", 1) for v in raw.split("\0") if "=" in v)


def restart(extra_env):
    """Restarts crm, media, recording and reporting with `services.sh restart` (so they are
    started as the suite started them, and not children of this process: a child left a
    zombie that a later test's "has it stopped?" never saw go) with `extra_env` added to the
    suite's environment; waits for their /readyz and for every consumer group of theirs to
    settle (the tests after this one need them consuming). Returns {service: admin port}."""
    ports = {name: int(environment(name)["CENTRALITA_ADMIN_ADDR"].rsplit(":", 1)[1]) for name in SWEPT}
    expected = {name: len(group_states(port)) for name, port in ports.items()}
    env = {**os.environ, **extra_env}
    for name in SWEPT:
        subprocess.run([str(REPO / "deploy/local/services.sh"), "restart", name], env=env, check=True,
                       capture_output=True, timeout=180)
    for name, port in ports.items():
        assert wait_for(lambda: http_get(port, "/readyz")[0] == 200, 90), f"{name} not ready after restart"

        def settled():
            groups = group_states(port)
            return len(groups) >= expected[name] and all(line.endswith(" 0") for line in groups)

        # The gauge is set from librdkafka's statistics every 10 s.
        assert wait_for(settled, 90, interval=1), f"{name}'s consumer groups did not settle after its restart"
    return ports


def group_states(port):
    """The service's `centralita_bus_consumer_group_unsettled_seconds` lines, one per group."""
    _, text = http_get(port, "/metrics")
    return [line for line in text.splitlines() if line.startswith("centralita_bus_consumer_group_unsettled_seconds{")]


def metric(port, name, label=""):
    """The sum of the samples of metric `name` (with `label`, if given) on an admin port."""
    _, text = http_get(port, "/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and label in line)


# --- Planting through real contacts ------------------------------------------------------

class Agent(OfferedAgent):
    """A BPO agent on the tenant's support queue, with room for one chat, one email contact
    and one SMS, that handles each offer as it comes: accept, (reply), end, wrap up."""

    def __init__(self, m, tenant, agent_id):
        super().__init__(m, tenant, agent_id, [m.t.CHANNEL_CHAT, m.t.CHANNEL_EMAIL, m.t.CHANNEL_SMS], max_contacts=1)
        self.conversations = m.mg.ConversationServiceStub(grpc.insecure_channel(endpoints()["media"]))

    def handle(self, contact, notes, reply=None):
        """Waits for the offer of `contact`, accepts it, replies (a chat), ends it and wraps up."""
        s, me = self.m.s, auth(self.token)
        assert wait_for(lambda: any(o.name == contact for o in self.offers) or self.errors, 30), \
            (contact, self.offers, self.errors)
        assert not self.errors, self.errors
        offer = next(o for o in self.offers if o.name == contact)
        self.contacts.AcceptContact(s.AcceptContactRequest(name=contact, offer_id=offer.offer_id), metadata=me,
                                    timeout=10)
        if reply:
            self.conversations.SendMessage(self.m.md.SendMessageRequest(parent=contact, text=reply), metadata=me,
                                           timeout=10)
        self.contacts.EndContact(s.EndContactRequest(name=contact), metadata=me, timeout=10)
        self.contacts.WrapUpContact(s.WrapUpContactRequest(name=contact, disposition="resolved", notes=notes),
                                    metadata=me, timeout=10)


def plant(m, tenant, run, token, account, number, key, origin, tag):
    """Plants the tenant's unique strings through real contacts; returns them and the contacts."""
    eps = endpoints()
    c, s = m.c, m.s
    num = int(uuid.uuid4().hex[:7], 16) % 10_000_000
    strings = {
        "phone": f"+3465{num:07d}",
        "email": f"ret.{tag}.{run}@example.org",
        "name": f"Rita Retention{tag}{run}",
        "note": f"note-{tag}-{run}: prefers mornings",
        "answer": f"answer-{tag}-{run}: yes, solved",
        "attribute": f"attr-{tag}-{run}-holder",
        "wrap-up notes": f"wrap-{tag}-{run}: sent a new card",
        "sms text": f"sms-{tag}-{run}: is my card on its way",
        "sms notes": f"smswrap-{tag}-{run}: told the customer",
        "chat text": f"chat-{tag}-{run}: my address is 9 Oak Road",
        "agent reply": f"reply-{tag}-{run}: it ships tomorrow",
        "file name": f"id-{tag}-{run}-scan.pdf",
        "file bytes": f"PASSPORT {tag} {run} X1234567",
    }
    admin = mint("--tenant", tenant, "--role", "tenant_admin")
    crm = m.cg.CustomerServiceStub(grpc.insecure_channel(eps["crm"]))
    ids = [c.Identity(kind=c.IDENTITY_KIND_PHONE, value=strings["phone"]),
           c.Identity(kind=c.IDENTITY_KIND_EMAIL, value=strings["email"])]
    customer = crm.ResolveCustomer(c.ResolveCustomerRequest(identities=ids, display_name=strings["name"]),
                                   metadata=auth(admin), timeout=10).customer
    crm.AddNote(c.AddNoteRequest(customer=customer.name, text=strings["note"]), metadata=auth(admin), timeout=10)

    agent = Agent(m, tenant, f"ret-{tag}-{run}")
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))
    channel = mint("--tenant", tenant, "--role", "channel")
    first = contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
        channel=m.t.CHANNEL_EMAIL, queue="support", customer_identities=ids,
        attributes={"account_holder": strings["attribute"]}), request_id=f"{tag}-{run}-1"),
        metadata=auth(channel), timeout=10)
    agent.handle(first.name, strings["wrap-up notes"])
    crm.RecordAnswer(c.RecordAnswerRequest(customer=customer.name, contact=first.name,
                                           question="¿Se resolvió?", answer=strings["answer"]),
                     metadata=auth(admin), timeout=10)

    # An SMS from the phone: a contact of its own, handled.
    path = f"/sms/twilio/{tenant}"
    assert signed(token, path, inbound(account, sid(), strings["phone"], number, strings["sms text"]))[0] == 200

    def sms_contact():
        for o in agent.offers:
            got = contacts.GetContact(s.GetContactRequest(name=o.name), metadata=auth(agent.token), timeout=5)
            if got.channel == m.t.CHANNEL_SMS:
                return o.name
        return None

    assert wait_for(sms_contact, 30), "the SMS was never offered"
    agent.handle(sms_contact(), strings["sms notes"])

    # A web chat: the customer's message and a file; the agent replies, ends and wraps up.
    status, chat = start_chat(tenant, key, origin)
    assert status == 201, chat
    visitor = {"authorization": f"Bearer {chat['visitorToken']}", "origin": origin}
    status, body = http("POST", f"/v1/tenants/{tenant}/webchat/messages", {"text": strings["chat text"]}, visitor)
    assert status == 201, body
    pdf = f"%PDF-1.4\n% {strings['file bytes']}\n%%EOF\n".encode()
    req = urllib.request.Request(
        f"{BASE}/v1/tenants/{tenant}/webchat/attachments?name={strings['file name']}&requestId=f-{tag}-{run}",
        data=pdf, method="POST",
        headers={"content-type": "application/pdf", "authorization": f"Bearer {chat['visitorToken']}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
    agent.handle(chat["contact"], "", reply=strings["agent reply"])
    agent.stream.cancel()

    def timeline():
        r = crm.ListTimeline(c.ListTimelineRequest(customer=customer.name), metadata=auth(admin), timeout=5)
        return [e.interaction for e in r.entries if e.HasField("interaction")]

    # The CRM linked the channel contact and the SMS to the customer (by the phone).
    assert wait_for(lambda: len(timeline()) >= 2, 60), timeline()
    return strings, [first.name, sms_contact(), chat["contact"]]


def test_a_short_retention_empties_every_store_of_the_tenant_and_keeps_its_figures(m, tmp_path):
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    a, b = f"rta-{run}", f"rtb-{run}"
    origin = f"https://shop-{run}.example"
    accounts, tokens, numbers, keys, docs = {}, {}, {}, {}, []
    for t, prefix, days in ((a, "+1571", 1), (b, "+1572", 30)):
        accounts[t], tokens[t], keys[t] = "AC" + uuid.uuid4().hex, uuid.uuid4().hex, f"widget-key-{t}"
        numbers[t] = f"{prefix}{int(run, 16) % 10_000_000:07d}"
        d = secrets_dir() / f"{t}-twilio"
        d.mkdir(parents=True, exist_ok=True)
        (d / "authToken").write_text(tokens[t] + "\n")
        docs.append(tenant_yaml(t, accounts[t], f"{t}-twilio", numbers[t], keys[t], origin, retention_days=days,
                                transcripts=True))
    (tmp_path / "tenants.yaml").write_text("---\n".join(docs))
    cli("admin", "tenant", "apply", "-f", str(tmp_path / "tenants.yaml"))

    sup = {t: mint("--tenant", t, "--role", "supervisor") for t in (a, b)}
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))
    crm = m.cg.CustomerServiceStub(grpc.insecure_channel(eps["crm"]))
    rec = m.rg.RecordingServiceStub(grpc.insecure_channel(eps["recording"]))
    reports = m.rpg.ReportingServiceStub(grpc.insecure_channel(eps["reporting"]))

    def known(t):
        try:
            contacts.ListQueueStats(m.s.ListQueueStatsRequest(), metadata=auth(sup[t]), timeout=5)
            crm.FindCustomers(m.c.FindCustomersRequest(identity=m.c.Identity(kind=m.c.IDENTITY_KIND_PHONE,
                                                                             value="+34600000000")),
                              metadata=auth(sup[t]), timeout=5)
            rec.ListRecordings(m.r.ListRecordingsRequest(contact_id="none"), metadata=auth(sup[t]), timeout=5)
            return post_form(f"/sms/twilio/{t}", {"To": numbers[t]})[0] == 401
        except grpc.RpcError:
            return False

    assert wait_for(lambda: known(a) and known(b), 60), "the services never saw the tenants"
    planted, names = {}, {}
    for t, tag in ((a, "a"), (b, "b")):
        planted[t], names[t] = plant(m, t, run, tokens[t], accounts[t], numbers[t], keys[t], origin, tag)

    def transcripts(t):
        chat_id = names[t][2].rsplit("/", 1)[1]
        listed = rec.ListRecordings(m.r.ListRecordingsRequest(contact_id=chat_id), metadata=auth(sup[t]),
                                    timeout=5).recordings
        return [r for r in listed if r.kind == m.r.RECORDING_KIND_TRANSCRIPT]

    assert wait_for(lambda: transcripts(a) and transcripts(b), 60), "no transcript of the closed chats"
    data = pathlib.Path(os.environ.get("CENTRALITA_DATA", REPO / ".local"))
    run_name = os.environ.get("CENTRALITA_RUN_NAME", "dev")
    store = pathlib.Path(os.environ.get("CENTRALITA_RECORDING_STORE_URL",
                                        f"file://{data}/recordings/{run_name}/objects").removeprefix("file://"))
    assert list(files_under(store / "transcripts" / a)) and list(files_under(store / "transcripts" / b))

    now = int(time.time())
    query = m.rp.QueryHistoryRequest(start_time={"seconds": now - 3 * 3600}, end_time={"seconds": now + 3600},
                                     granularity=m.rp.GRANULARITY_DAY)

    def figures(t):
        """(offered, answered, handled, abandoned) of the tenant over the window (a day's
        boundary may split it into two rows)."""
        rows = reports.QueryHistory(query, metadata=auth(sup[t]), timeout=10).rows
        return tuple(sum(x) for x in zip((0, 0, 0, 0), *[(r.figures.offered, r.figures.answered, r.figures.handled,
                                                           r.figures.abandoned) for r in rows]))

    # Reporting folded the three contacts of each tenant, under their ids.
    assert wait_for(lambda: figures(a) == (3, 3, 3, 0) and figures(b) == (3, 3, 3, 0), 60), \
        (figures(a), figures(b))
    # Before: every string is in PostgreSQL (the attribute only in sessions' record, in Redis),
    # so the searches below are not blind.
    nobody = f"nobody-{run}"
    every = planted[a] | {f"b:{k}": v for k, v in planted[b].items()}
    before, _ = postgres_hits(list(every.values()), nobody)
    blind = [label for label, v in every.items() if not before[v] and not label.endswith("attribute")]
    assert not blind, f"not stored anywhere before the sweep, so the search would be blind: {blind}"
    assert any(planted[a]["attribute"].encode() in v for v in redis_values().values())
    legs_before, _ = postgres_hits(names[a] + names[b], nobody)
    assert all(any(w[1] == "reporting.legs" for w in legs_before[n]) for n in names[a] + names[b])

    # The sweepers' clock two days ahead: everything of A (1 day) is past its limit, nothing of
    # B (30 days) is.
    ahead = {"CENTRALITA_SWEEP_CLOCK_OFFSET": "2d", "CENTRALITA_CRM_SWEEP_INTERVAL": "2s",
             "CENTRALITA_MEDIA_SWEEP_INTERVAL": "2s", "CENTRALITA_RECORDING_SWEEP_INTERVAL": "2s",
             "CENTRALITA_REPORTING_SWEEP_INTERVAL": "2s"}
    a_needles = list(planted[a].values())
    try:
        ports = restart(ahead)

        def a_gone():
            hits, _ = postgres_hits(a_needles, b)
            return not any(hits.values()) and not list(files_under(store / "transcripts" / a))

        assert wait_for(a_gone, 120, interval=2), postgres_hits(a_needles, b)[0]
        # Each sweeper counted what it removed.
        removed = {
            "crm": metric(ports["crm"], "centralita_crm_retention_deleted_total"),
            "media": metric(ports["media"], "centralita_media_conversation_rows_deleted_total", 'reason="retention"'),
            "recording": metric(ports["recording"], "centralita_recording_retention_deleted_total"),
            "reporting": metric(ports["reporting"], "centralita_reporting_retention_legs_anonymised_total"),
        }
        print("removed by the sweepers:", removed)
        assert all(v > 0 for v in removed.values()), removed
    finally:
        restart({})

    leaks = []
    # PostgreSQL: none of A's strings; every one of B's still there.
    every_b = list(planted[b].values())
    after_b, _ = postgres_hits(every_b, nobody)
    gone_b = [label for label, v in planted[b].items() if not after_b[v] and label != "attribute"]
    assert not gone_b, f"B's data (30 days) went too: {gone_b}"
    hits_a, _ = postgres_hits(a_needles, b)
    leaks += [("postgres", n, where) for n, where in hits_a.items() if where]
    # Reporting: A's legs no longer name A's contacts, B's still do; the figures are unchanged.
    legs_after, _ = postgres_hits(names[a] + names[b], nobody)
    assert not any(w[1] == "reporting.legs" for n in names[a] for w in legs_after[n]), legs_after
    assert all(any(w[1] == "reporting.legs" for w in legs_after[n]) for n in names[b]), legs_after
    assert figures(a) == (3, 3, 3, 0) and figures(b) == (3, 3, 3, 0), (figures(a), figures(b))
    # Recording: A's transcript object and row are gone, B's are there.
    assert not list(files_under(store / "transcripts" / a)) and list(files_under(store / "transcripts" / b))
    assert transcripts(a) == [] and len(transcripts(b)) == 1
    # Redis: A's strings only in sessions' records of A's closed contacts, each expiring
    # within a day.
    r = Resp(int(os.environ.get("CENTRALITA_REDIS_PORT", "6390")))
    for key, value in redis_values().items():
        found = [n for n in a_needles if n.encode() in value]
        if not found:
            continue
        [ttl] = r.pipeline([[b"PTTL", key]])
        if not (f"{{t:{a}}}:contact:".encode() in key and 0 < int(ttl) <= 24 * 3600 * 1000):
            leaks.append(("redis", found, key, ttl))
    # Kafka and logs: none of A's strings anywhere.
    _, records = kafka_records(m)
    for n in a_needles:
        where = sorted({t for t, _, raw in records if n.encode() in raw})
        if where:
            leaks.append(("kafka", n, where))
    assert any(t == f"{PREFIX}contacts" and names[a][0].encode() in raw for t, _, raw in records)
    for f in LOGS.rglob("*.log"):
        content = f.read_bytes()
        leaks += [("log", n, str(f)) for n in a_needles if n.encode() in content]
    assert not leaks, "\n".join(map(str, leaks))
