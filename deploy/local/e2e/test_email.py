"""Email end to end: swaks sends to media's SMTP listener, an agent answers over gRPC, and an
independent SMTP server (PyPI `aiosmtpd`, started by this test as the tenant's relay)
receives the reply.

Shown: mail sent by `swaks` to a tenant's address creates an EMAIL contact offered to the
agent, with the message in its conversation; the agent's reply reaches the relay From the
tenant's address with `Subject: Re: …`, our Message-ID, and `In-Reply-To`/`References` naming
the customer's message (RFC 5322 §3.6.4); the customer's answer (swaks with those headers)
continues the same conversation, no new offer; the same message delivered again stores
nothing; an unknown recipient is refused with 550 before DATA, an oversized message with 552,
an executable attachment with 554, nothing stored; tenant B's agent and supervisor cannot
read or write A's email conversation (every RPC), and mail to B's address naming A's
Message-ID does not reach A's conversation; with the relay down a reply is retried and ends
`failed` with the reason; an answer after the contact ended starts a new contact whose first
notice names the earlier one.
"""
import os
import shutil
import subprocess
import time
import uuid

import grpc
import pytest

from conftest import OfferedAgent, auth, cli, endpoints, free_port, mint, wait_for

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")

SWAKS = shutil.which("swaks")
pytestmark = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (deploy/local/install.sh)")


def smtp_port():
    """media's listener (services.sh: CENTRALITA_SMTP_ADDR)."""
    if os.environ.get("CENTRALITA_SMTP_PORT"):
        return int(os.environ["CENTRALITA_SMTP_PORT"])
    return 25425 + int(os.environ.get("CENTRALITA_ADMIN_BASE", "9101")) - 9101


def swaks(*args):
    """(exit code, transcript) of one swaks run against media's listener."""
    r = subprocess.run([SWAKS, "--server", f"127.0.0.1:{smtp_port()}", "--helo", "customer.example",
                        "--timeout", "20", *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


class Relay:
    """The tenants' SMTP relay: aiosmtpd on loopback, keeping every message it receives."""

    def __init__(self, port):
        self.messages = []
        relay = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                relay.messages.append(envelope)
                return "250 Message accepted for delivery"

        self.port = port
        self.controller = aiosmtpd_controller.Controller(Handler(), hostname="127.0.0.1", port=port)
        self.controller.start()
        self.running = True

    def stop(self):
        if self.running:
            self.running = False
            self.controller.stop()


def tenant_yaml(tenant, domain, relay_port):
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: Email {tenant}
  channels: [email]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing:
    dispositionCodes: [resolved]
    queues:
      - {{ id: support, offerTimeoutSeconds: 60, afterContactWorkSeconds: 60 }}
  email:
    addresses:
      - {{ address: help@{domain}, queue: support }}
    fromAddress: help@{domain}
    relay: {{ host: 127.0.0.1, port: {relay_port}, tls: none }}
"""


@pytest.fixture(scope="module")
def m(pb):
    from centralita.media.v1 import media_pb2, media_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        md = media_pb2
        mg = media_pb2_grpc
        s = sessions_pb2
        sg = sessions_pb2_grpc
        t = pb.tenancy

    return M


def test_email_in_and_out_through_smtp(m, tmp_path):
    run = uuid.uuid4().hex[:8]
    a, b = f"ema-{run}", f"emb-{run}"
    dom_a, dom_b = f"{a}.example", f"{b}.example"
    relay_port = free_port()
    manifest = tmp_path / "tenants.yaml"
    manifest.write_text(tenant_yaml(a, dom_a, relay_port) + "---\n" + tenant_yaml(b, dom_b, relay_port))
    cli("admin", "tenant", "apply", "-f", str(manifest))
    relay = Relay(relay_port)
    try:
        _scenario(m, run, a, b, dom_a, dom_b, relay, tmp_path)
    finally:
        relay.stop()


def _scenario(m, run, a, b, dom_a, dom_b, relay, tmp_path):
    eps = endpoints()
    conversations = m.mg.ConversationServiceStub(grpc.insecure_channel(eps["media"]))
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))
    sup_a = mint("--tenant", a, "--role", "supervisor")
    sup_b = mint("--tenant", b, "--role", "supervisor")
    help_a, help_b = f"help@{dom_a}", f"help@{dom_b}"
    customer = f"ana.{run}@customer.example"

    # media knows the tenant once RCPT TO its address is taken (550 before).
    assert wait_for(lambda: swaks("--to", help_a, "--from", customer, "--quit-after", "RCPT")[0] == 0, 60), \
        "media never took mail for the tenant"

    def sessions_knows():
        try:
            contacts.ListQueueStats(m.s.ListQueueStatsRequest(), metadata=auth(sup_a), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(sessions_knows, 60), "sessions never saw the tenant"
    agent = OfferedAgent(m, a, f"mail-agent-{run}", m.t.CHANNEL_EMAIL)

    def listed(contact, token=None):
        return list(conversations.ListMessages(m.md.ListMessagesRequest(parent=contact),
                                               metadata=auth(token or sup_a), timeout=10).messages)

    # The customer writes: swaks to the tenant's address.
    first_id = f"first-{run}@customer.example"
    code, out = swaks("--to", help_a, "--from", customer, "--header", "Subject: My claim 42",
                      "--header", f"Message-Id: <{first_id}>", "--body", "Hello, my claim is stuck.")
    assert code == 0 and "250 2.0.0" in out, out
    assert wait_for(lambda: agent.offers or agent.errors, 30), "no offer of the email"
    assert not agent.errors, agent.errors
    offer = agent.offers[0]
    assert offer.channel == m.t.CHANNEL_EMAIL
    contact = offer.name
    msgs = listed(contact)
    assert any(x.kind == m.md.MESSAGE_KIND_NOTICE and "My claim 42" in x.text for x in msgs), msgs
    assert (msgs[-1].sender, msgs[-1].text) == (m.md.SENDER_KIND_CUSTOMER, "Hello, my claim is stuck."), msgs
    count = len(msgs)

    # The same message again (the sender's retry): accepted, nothing new.
    code, out = swaks("--to", help_a, "--from", customer, "--header", "Subject: My claim 42",
                      "--header", f"Message-Id: <{first_id}>", "--body", "Hello, my claim is stuck.")
    assert code == 0 and "250" in out, out
    assert len(listed(contact)) == count

    # Refusals, nothing stored: an unknown recipient (550, before DATA), a message over the
    # size limit (552; services.sh sets 1 MiB), an executable attached (554).
    code, out = swaks("--to", f"nobody@{dom_a}", "--from", customer, "--body", "anyone?")
    assert code != 0 and "550 5.1.1" in out and "354" not in out, out
    big = tmp_path / "big.txt"
    big.write_text(("0123456789" * 100 + "\n") * 1200)
    code, out = swaks("--to", help_a, "--from", customer, "--header", f"Message-Id: <big-{run}@customer.example>",
                      "--body", "see attached", "--attach", str(big), "--suppress-data")
    assert code != 0 and "552 5.3.4" in out, out[-2000:]
    exe = tmp_path / "invoice.pdf.exe"
    exe.write_bytes(b"MZ\x90\x00" * 64)
    code, out = swaks("--to", help_a, "--from", customer, "--header", f"Message-Id: <exe-{run}@customer.example>",
                      "--body", "invoice attached", "--attach", str(exe))
    assert code != 0 and "554 5.7.1" in out and "invoice.pdf.exe" in out, out[-2000:]
    assert len(listed(contact)) == count, "a refused message stored something"

    agent.contacts.AcceptContact(m.s.AcceptContactRequest(name=offer.name, offer_id=offer.offer_id),
                                 metadata=auth(agent.token), timeout=10)

    # The agent replies: media sends it through the tenant's relay (aiosmtpd).
    reply = conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text="We are on it.",
                                                              request_id=f"r-{run}"),
                                      metadata=auth(agent.token), timeout=10)
    assert wait_for(lambda: relay.messages, 20), "the relay never received the reply"
    import email
    from email import policy
    env = relay.messages[0]
    sent = email.message_from_bytes(env.original_content or env.content, policy=policy.default)
    assert env.mail_from == help_a and env.rcpt_tos == [customer], (env.mail_from, env.rcpt_tos)
    assert sent["From"] == help_a and sent["To"] == customer, (sent["From"], sent["To"])
    assert sent["Subject"] == "Re: My claim 42", sent["Subject"]
    assert sent["In-Reply-To"] == f"<{first_id}>", sent["In-Reply-To"]
    assert sent["References"] == f"<{first_id}>", sent["References"]
    ours = sent["Message-ID"].strip("<>")
    assert ours.endswith("@" + dom_a) and ours != first_id, ours
    assert sent.get_content().strip() == "We are on it."
    assert [x for x in listed(contact) if x.sequence == reply.sequence][0].status == m.md.DELIVERY_STATUS_SENT

    # The customer answers our reply: the same conversation, no new offer.
    second_id = f"second-{run}@customer.example"
    code, out = swaks("--to", help_a, "--from", customer, "--header", "Subject: Re: My claim 42",
                      "--header", f"Message-Id: <{second_id}>", "--header", f"In-Reply-To: <{ours}>",
                      "--header", f"References: <{first_id}> <{ours}>", "--body", "Thanks, any news?")
    assert code == 0 and "250" in out, out
    assert wait_for(lambda: listed(contact)[-1].text == "Thanks, any news?", 10), listed(contact)
    time.sleep(1)
    assert len(agent.offers) == 1, "the answer made a new contact"

    # A second reply answers the customer's newest message, the chain carried on.
    conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text="Paid today.", request_id=f"r2-{run}"),
                              metadata=auth(agent.token), timeout=10)
    assert wait_for(lambda: len(relay.messages) == 2, 20)
    again = email.message_from_bytes(relay.messages[1].original_content or relay.messages[1].content,
                                     policy=policy.default)
    assert again["In-Reply-To"] == f"<{second_id}>", again["In-Reply-To"]
    assert again["References"] == f"<{first_id}> <{ours}> <{second_id}>", again["References"]
    assert again["Subject"] == "Re: My claim 42"

    # Tenant B: its agent and supervisor are refused on A's conversation, by every RPC.
    agent_b = mint("--tenant", b, "--role", "agent", "--agent-id", agent.name.split("/")[1])
    for token in (agent_b, sup_b):
        calls = [
            lambda: conversations.ListMessages(m.md.ListMessagesRequest(parent=contact),
                                               metadata=auth(token), timeout=10),
            lambda: conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text="B here",
                                                                      request_id=f"b-{run}"),
                                              metadata=auth(token), timeout=10),
            lambda: conversations.SendTyping(m.md.SendTypingRequest(parent=contact, active=True),
                                             metadata=auth(token), timeout=10),
            lambda: conversations.MarkRead(m.md.MarkReadRequest(parent=contact, sequence=1),
                                           metadata=auth(token), timeout=10),
            lambda: next(iter(conversations.StreamMessages(m.md.StreamMessagesRequest(parent=contact),
                                                           metadata=auth(token), timeout=10))),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, e.value
    # Mail to B's address naming A's messages stays in B: A's conversation does not grow.
    before = len(listed(contact))
    code, out = swaks("--to", help_b, "--from", customer, "--header", "Subject: Re: My claim 42",
                      "--header", f"Message-Id: <cross-{run}@customer.example>",
                      "--header", f"In-Reply-To: <{ours}>", "--header", f"References: <{first_id}> <{ours}>",
                      "--body", "meant for A")
    assert code == 0, out
    time.sleep(1)
    assert len(listed(contact)) == before
    assert all(x.text != "meant for A" for x in listed(contact))
    assert len(relay.messages) == 2, "B's agent's refused reply went out"

    # The relay down: the reply is retried, then failed with the reason.
    relay.stop()
    doomed = conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text="Still there?",
                                                               request_id=f"d-{run}"),
                                       metadata=auth(agent.token), timeout=10)

    def status_of(seq):
        return [x for x in listed(contact) if x.sequence == seq][0]

    assert wait_for(lambda: status_of(doomed.sequence).status == m.md.DELIVERY_STATUS_FAILED, 30), \
        "the send never ended failed"
    reason = status_of(doomed.sequence).failure_reason
    assert "attempts" in reason and f"127.0.0.1:{relay.port}" in reason, reason

    # The agent ends and wraps up; the customer answers later in the same thread: a new
    # contact (offered again), its first notice naming the earlier one.
    agent.contacts.EndContact(m.s.EndContactRequest(name=contact), metadata=auth(agent.token), timeout=10)
    agent.contacts.WrapUpContact(m.s.WrapUpContactRequest(name=contact, disposition="resolved"),
                                 metadata=auth(agent.token), timeout=10)
    code, out = swaks("--to", help_a, "--from", customer, "--header", "Subject: Re: My claim 42",
                      "--header", f"Message-Id: <late-{run}@customer.example>", "--header", f"In-Reply-To: <{ours}>",
                      "--header", f"References: <{first_id}> <{ours}> <{second_id}>", "--body", "One more thing.")
    assert code == 0 and "250" in out, out
    assert wait_for(lambda: len(agent.offers) == 2, 30), "the later answer was not offered"
    later = agent.offers[1].name
    assert later != contact
    msgs = listed(later)
    assert msgs[0].kind == m.md.MESSAGE_KIND_NOTICE and contact.split("/")[-1] in msgs[0].text, msgs[0]
    assert msgs[-1].text == "One more thing."
    assert all(x.text != "One more thing." for x in listed(contact))
    agent.stream.cancel()
