"""Files in conversations end to end: web chat, email and WhatsApp, through media's digital
role started by the project's scripts.

Peers independent of media: the customer's side of the web chat is urllib (uploads and
downloads over HTTP with the visitor token); the email customer is `swaks --attach`, the
tenant's relay `aiosmtpd`, and the agent's file is read back from the relayed MIME by
Python's `email` package; WhatsApp's Cloud API (media lookup and download) is a small HTTP
server of this test. The agent is a grpcio client of media's `ConversationService`.

Shown:
- web chat: the customer's PNG reaches the agent (ListMessages names it; GetAttachment gives
  the same bytes and SHA-256); the agent's PDF reaches the customer (transcript, download
  with `nosniff`, `attachment` disposition); refused with nothing stored: HTML labelled as
  PNG and an HTML file (415), over 5 MiB (413), a path as its name (400), no token (401);
  another chat's visitor cannot download the file (404); the agent's forbidden type
  INVALID_ARGUMENT; tenant B's agent cannot read or send A's files (PERMISSION_DENIED).
- email: a PDF attached by swaks is kept as a file of the conversation (same bytes), a zip
  is named in a notice and not kept; the agent's file reaches the relay as a MIME attachment
  of the threaded reply.
- WhatsApp: an image message is looked up and downloaded from the provider's host and kept
  with its caption; a media URL on another host is never fetched (a line says why); a
  lookup outage answers 503 with nothing stored, and the redelivery stores the image once;
  files cannot be sent on a WhatsApp conversation (FAILED_PRECONDITION).
"""
import email
import email.policy
import hashlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import grpc
import pytest

from conftest import (
    FakeProvider, OfferedAgent, auth, cli, endpoints, free_port, mint, sessions_knows_tenant, wait_for,
)
import test_email as em
import test_webchat as wc
import test_whatsapp as wa

PNG = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + uuid.uuid4().bytes
PDF = b"%PDF-1.4\n% factura\n" + uuid.uuid4().hex.encode() + b"\n%%EOF\n"


def raw(method, path, data=None, headers=None):
    """(status, headers, bytes) of a request to the front door."""
    req = urllib.request.Request(wc.BASE + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def upload(tenant, token, name, ctype, data, request_id=""):
    status, _, body = raw("POST", f"/v1/tenants/{tenant}/webchat/attachments?name={urllib.parse.quote(name)}"
                          f"&requestId={request_id}", data,
                          {"content-type": ctype, **({"authorization": f"Bearer {token}"} if token else {})})
    return status, json.loads(body or b"null") if body[:1] in (b"{", b"[") else body


def customer_files(tenant, token):
    status, transcript = wc.http("GET", f"/v1/tenants/{tenant}/webchat/messages",
                                 headers={"authorization": f"Bearer {token}"})
    assert status == 200, transcript
    return [x for x in transcript["messages"] if x["kind"] == "attachment"]


def denied(call):
    try:
        call()
    except grpc.RpcError as e:
        return e.code()
    raise AssertionError("allowed")


def test_files_go_both_ways_in_a_web_chat(m, tmp_path):
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    a, b = f"fa-{run}", f"fb-{run}"
    key_a, key_b = f"wk_{run}_aaaaaaaaaaaa", f"wk_{run}_bbbbbbbbbbbb"
    origin = "https://shop.example"
    (tmp_path / "t.yaml").write_text(wc.tenant_yaml(a, key_a, origin) + "---\n" + wc.tenant_yaml(b, key_b, origin))
    cli("admin", "tenant", "apply", "-f", str(tmp_path / "t.yaml"))
    assert wait_for(lambda: wc.start_chat(a, "wrong-key-000000000", origin)[0] == 401
                    and wc.start_chat(b, "wrong-key-000000000", origin)[0] == 401, 60)
    conversations = m.mg.ConversationServiceStub(grpc.insecure_channel(eps["media"]))
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))
    assert sessions_knows_tenant(contacts, m.s, mint("--tenant", a, "--role", "supervisor"))
    agent = OfferedAgent(m, a, f"fa-agent-{run}", m.t.CHANNEL_CHAT)
    status, started = wc.start_chat(a, key_a, origin)
    assert status == 201, started
    contact, token = started["contact"], started["visitorToken"]
    _, other = wc.start_chat(a, key_a, origin)
    assert wait_for(lambda: len(agent.offers) >= 1, 30), agent.errors
    offer = next(o for o in agent.offers if o.name == contact)
    agent.contacts.AcceptContact(m.s.AcceptContactRequest(name=offer.name, offer_id=offer.offer_id),
                                 metadata=auth(agent.token), timeout=10)

    def listed():
        return conversations.ListMessages(m.md.ListMessagesRequest(parent=contact), metadata=auth(agent.token),
                                          timeout=10).messages

    # Refused, nothing stored.
    before = len(listed())
    assert upload(a, token, "x.png", "image/png", b"<html><script>alert(1)</script>")[0] == 415
    assert upload(a, token, "x.html", "text/html", b"<html></html>")[0] == 415
    assert upload(a, token, "big.png", "image/png", PNG + b"\0" * (5 * 1024 * 1024))[0] == 413
    assert upload(a, token, "../../etc/passwd", "image/png", PNG)[0] == 400
    assert upload(a, "", "x.png", "image/png", PNG)[0] == 401
    assert upload(a, other["visitorToken"].replace(".", "x.", 1), "x.png", "image/png", PNG)[0] == 401
    assert len(listed()) == before, "a refused file stored something"

    # The customer's PNG reaches the agent, byte for byte.
    status, sent = upload(a, token, "recibo.png", "image/png", PNG, request_id=f"up-{run}")
    assert status == 201, sent
    assert sent["kind"] == "attachment" and sent["attachment"]["contentType"] == "image/png"
    status, again = upload(a, token, "recibo.png", "image/png", PNG, request_id=f"up-{run}")
    assert status == 201 and again["sequence"] == sent["sequence"], "a retried upload is the same message"
    files = [x for x in listed() if x.kind == m.md.MESSAGE_KIND_ATTACHMENT]
    assert len(files) == 1 and files[0].sender == m.md.SENDER_KIND_CUSTOMER
    f = files[0].attachment
    assert (f.file_name, f.content_type, f.size_bytes, f.sha256) == \
        ("recibo.png", "image/png", len(PNG), hashlib.sha256(PNG).hexdigest())
    got = conversations.GetAttachment(m.md.GetAttachmentRequest(name=f.name), metadata=auth(agent.token), timeout=10)
    assert got.data == PNG and got.attachment.name == f.name

    # The agent's PDF reaches the customer.
    bad = denied(lambda: conversations.SendAttachment(m.md.SendAttachmentRequest(
        parent=contact, file_name="a.svg", content_type="image/svg+xml", data=b"<svg/>"),
        metadata=auth(agent.token), timeout=10))
    assert bad == grpc.StatusCode.INVALID_ARGUMENT
    out = conversations.SendAttachment(m.md.SendAttachmentRequest(
        parent=contact, file_name="factura 7 ñ.pdf", content_type="application/pdf", data=PDF, request_id=f"pdf-{run}"),
        metadata=auth(agent.token), timeout=10)
    assert out.kind == m.md.MESSAGE_KIND_ATTACHMENT and out.attachment.size_bytes == len(PDF)
    theirs = [x for x in customer_files(a, token) if x["sender"] == "agent"]
    assert [x["attachment"]["name"] for x in theirs] == ["factura 7 ñ.pdf"]
    file_id = theirs[0]["attachment"]["id"]
    status, headers, body = raw("GET", f"/v1/tenants/{a}/webchat/attachments/{file_id}",
                                headers={"authorization": f"Bearer {token}"})
    assert status == 200 and body == PDF
    assert headers["content-type"] == "application/pdf" and headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"].startswith("attachment;") and "UTF-8''factura%207%20%C3%B1.pdf" in \
        headers["content-disposition"]
    # A browser on the widget's page may ask for both (CORS preflight); another origin not.
    for path, method in ((f"/v1/tenants/{a}/webchat/attachments/{file_id}", "GET"),
                         (f"/v1/tenants/{a}/webchat/attachments", "POST")):
        ask = {"access-control-request-method": method, "access-control-request-headers": "authorization"}
        status, headers, _ = raw("OPTIONS", path, headers={"origin": origin, **ask})
        assert status == 204 and headers["access-control-allow-origin"] == origin, (path, status)
        assert raw("OPTIONS", path, headers={"origin": "https://evil.example", **ask})[0] == 403
    # Another chat's visitor, and no token, get nothing.
    assert raw("GET", f"/v1/tenants/{a}/webchat/attachments/{file_id}",
               headers={"authorization": f"Bearer {other['visitorToken']}"})[0] == 404
    assert raw("GET", f"/v1/tenants/{a}/webchat/attachments/{file_id}")[0] == 401
    # Tenant B: its agent can neither read nor send A's files; its widget's path does not
    # serve A's visitor.
    b_agent = mint("--tenant", b, "--role", "agent", "--agent-id", f"fb-agent-{run}")
    assert denied(lambda: conversations.GetAttachment(m.md.GetAttachmentRequest(name=f.name),
                                                      metadata=auth(b_agent), timeout=10)) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert denied(lambda: conversations.SendAttachment(m.md.SendAttachmentRequest(
        parent=contact, file_name="x.pdf", content_type="application/pdf", data=PDF),
        metadata=auth(b_agent), timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
    assert raw("GET", f"/v1/tenants/{b}/webchat/attachments/{file_id}",
               headers={"authorization": f"Bearer {token}"})[0] == 401
    agent.stream.cancel()


def test_files_by_email_in_and_out(m, tmp_path):
    run = uuid.uuid4().hex[:8]
    a = f"fe-{run}"
    dom = f"{a}.example"
    relay_port = free_port()
    (tmp_path / "t.yaml").write_text(em.tenant_yaml(a, dom, relay_port))
    cli("admin", "tenant", "apply", "-f", str(tmp_path / "t.yaml"))
    relay = em.Relay(relay_port)
    pdf, zipped = tmp_path / "parte.pdf", tmp_path / "fotos.zip"
    pdf.write_bytes(PDF)
    zipped.write_bytes(b"PK\x03\x04" + uuid.uuid4().bytes)
    eps = endpoints()
    conversations = m.mg.ConversationServiceStub(grpc.insecure_channel(eps["media"]))
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))
    try:
        help_a, customer = f"help@{dom}", f"ana-{run}@customer.example"
        assert wait_for(lambda: em.swaks("--to", help_a, "--from", customer, "--quit-after", "RCPT")[0] == 0, 60)
        assert sessions_knows_tenant(contacts, m.s, mint("--tenant", a, "--role", "supervisor"))
        agent = OfferedAgent(m, a, f"fe-agent-{run}", m.t.CHANNEL_EMAIL)
        code, out = em.swaks("--to", help_a, "--from", customer, "--header", "Subject: Parte 9",
                             "--body", "Adjunto el parte", "--attach-type", "application/pdf", "--attach", f"@{pdf}",
                             "--attach-type", "application/zip", "--attach", f"@{zipped}")
        assert code == 0, out
        assert wait_for(lambda: agent.offers, 30), agent.errors
        offer = agent.offers[0]
        agent.contacts.AcceptContact(m.s.AcceptContactRequest(name=offer.name, offer_id=offer.offer_id),
                                     metadata=auth(agent.token), timeout=10)

        def listed():
            return conversations.ListMessages(m.md.ListMessagesRequest(parent=offer.name),
                                              metadata=auth(agent.token), timeout=10).messages

        files = [x for x in listed() if x.kind == m.md.MESSAGE_KIND_ATTACHMENT]
        assert [(x.attachment.file_name, x.attachment.content_type) for x in files] == \
            [("parte.pdf", "application/pdf")], listed()
        got = conversations.GetAttachment(m.md.GetAttachmentRequest(name=files[0].attachment.name),
                                          metadata=auth(agent.token), timeout=10)
        assert got.data == PDF
        notices = [x.text for x in listed() if x.kind == m.md.MESSAGE_KIND_NOTICE]
        assert any("fotos.zip" in n and "not kept" in n for n in notices), notices

        # The agent's file goes out as a MIME attachment of the threaded reply.
        conversations.SendAttachment(m.md.SendAttachmentRequest(
            parent=offer.name, file_name="condiciones.pdf", content_type="application/pdf", data=PDF),
            metadata=auth(agent.token), timeout=10)
        assert wait_for(lambda: relay.messages, 20), "nothing relayed"
        mail = email.message_from_bytes(relay.messages[-1].content, policy=email.policy.default)
        assert mail["Subject"] == "Re: Parte 9" and mail["In-Reply-To"]
        parts = [p for p in mail.iter_attachments()]
        assert [(p.get_filename(), p.get_content_type(), p.get_content()) for p in parts] == \
            [("condiciones.pdf", "application/pdf", PDF)]
        agent.stream.cancel()
    finally:
        relay.stop()


def test_whatsapp_media_is_fetched_only_from_the_providers_host(m, tmp_path):
    run = uuid.uuid4().hex[:8]
    a = f"fw-{run}"
    number_id, number = f"3065{int(run, 16) % 10**9:09d}", f"+3493{int(run, 16) % 10**7:07d}"
    keys = {"appSecret": f"app-{uuid.uuid4().hex}", "accessToken": f"EAA{uuid.uuid4().hex}", "verifyToken": "vt-x1"}
    d = wa.secrets_dir() / f"{a}-whatsapp"
    d.mkdir(parents=True, exist_ok=True)
    for k, v in keys.items():
        (d / k).write_text(v + "\n")
    (tmp_path / "t.yaml").write_text(wa.tenant_yaml(a, f"{a}-whatsapp", number_id, number))
    cli("admin", "tenant", "apply", "-f", str(tmp_path / "t.yaml"))
    port = wa.provider_port()
    api = wa.FakeCloudApi(port)
    # Elsewhere: a server that must never be asked (a forged or hostile media URL).
    elsewhere = FakeProvider(free_port(), 200, lambda body: body, lambda status: {})
    eps = endpoints()
    conversations = m.mg.ConversationServiceStub(grpc.insecure_channel(eps["media"]))
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))
    customer = f"3468{int(run, 16) % 10**7:07d}"
    app = keys["appSecret"]

    def image(wamid, media_id, caption=""):
        return {"from": customer, "id": wamid, "timestamp": str(int(time.time())), "type": "image",
                "image": {"id": media_id, "mime_type": "image/png", "caption": caption}}

    def send(*messages):
        body = wa.delivery(number_id, list(messages))
        return wa.post(a, body, wa.sign(app, body))[0]

    try:
        q = "hub.mode=subscribe&hub.challenge=77&hub.verify_token=vt-x1"
        assert wait_for(lambda: wa.get(f"/whatsapp/{a}?{q}") == (200, "77"), 60)
        assert sessions_knows_tenant(contacts, m.s, mint("--tenant", a, "--role", "supervisor"))
        agent = OfferedAgent(m, a, f"fw-agent-{run}", m.t.CHANNEL_SOCIAL)
        lookup = f"/v21.0/m{run}1"
        api.files[lookup] = (503, "application/json", b'{"error": {}}')
        assert send(image(f"wamid.{run}i", f"m{run}1", "Mi recibo")) == 503, "an outage is answered 503"
        assert not agent.offers and not [g for g in api.gets if g["path"] == f"/files/{run}"]
        api.files[lookup] = (200, "application/json",
                             json.dumps({"url": f"http://127.0.0.1:{port}/files/{run}", "mime_type": "image/png"}).encode())
        api.files[f"/files/{run}"] = (200, "image/png", PNG)
        assert send(image(f"wamid.{run}i", f"m{run}1", "Mi recibo")) == 200
        assert send(image(f"wamid.{run}i", f"m{run}1", "Mi recibo")) == 200, "redelivered"
        assert wait_for(lambda: agent.offers, 30), agent.errors
        offer = agent.offers[0]
        downloads = [g for g in api.gets if g["path"] == f"/files/{run}"]
        assert downloads and downloads[0]["auth"] == f"Bearer {keys['accessToken']}"

        def listed():
            return conversations.ListMessages(m.md.ListMessagesRequest(parent=offer.name),
                                              metadata=auth(agent.token), timeout=10).messages

        mine = [x for x in listed() if x.sender == m.md.SENDER_KIND_CUSTOMER]
        assert [(x.kind, x.text) for x in mine] == \
            [(m.md.MESSAGE_KIND_ATTACHMENT, "whatsapp-image.png"), (m.md.MESSAGE_KIND_TEXT, "Mi recibo")], mine
        got = conversations.GetAttachment(m.md.GetAttachmentRequest(name=mine[0].attachment.name),
                                          metadata=auth(agent.token), timeout=10)
        assert got.data == PNG

        # A media URL on another host is never fetched; the message says why.
        api.files[f"/v21.0/m{run}2"] = (200, "application/json", json.dumps(
            {"url": f"http://localhost:{elsewhere.server.server_port}/internal", "mime_type": "image/png"}).encode())
        assert send(image(f"wamid.{run}j", f"m{run}2")) == 200
        assert wait_for(lambda: len([x for x in listed() if x.sender == m.md.SENDER_KIND_CUSTOMER]) == 3, 10)
        last = [x for x in listed() if x.sender == m.md.SENDER_KIND_CUSTOMER][-1]
        assert last.kind == m.md.MESSAGE_KIND_TEXT and "not on the provider's hosts" in last.text, last
        assert elsewhere.gets == [], "media fetched from a host not the provider's"

        # Files are not sent on a provider channel.
        agent.contacts.AcceptContact(m.s.AcceptContactRequest(name=offer.name, offer_id=offer.offer_id),
                                     metadata=auth(agent.token), timeout=10)
        assert denied(lambda: conversations.SendAttachment(m.md.SendAttachmentRequest(
            parent=offer.name, file_name="x.pdf", content_type="application/pdf", data=PDF),
            metadata=auth(agent.token), timeout=10)) == grpc.StatusCode.FAILED_PRECONDITION
        agent.stream.cancel()
    finally:
        api.close()
        elsewhere.close()


@pytest.fixture(scope="module")
def m(pb):
    from centralita.media.v1 import media_pb2, media_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        md, mg, s, sg, t = media_pb2, media_pb2_grpc, sessions_pb2, sessions_pb2_grpc, pb.tenancy

    return M
