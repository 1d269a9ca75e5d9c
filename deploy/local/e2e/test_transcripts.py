"""A closed web chat's transcript, kept by the recording service and decrypted independently.

A customer (urllib against media's web chat front door) chats with an agent (grpcio against
sessions and media's ConversationService) in a tenant with `recording.chatTranscripts` on.
Halfway the agent pauses the recording (PCI), the customer writes a card number, the agent
resumes; the agent ends and wraps the chat up. Media's digital role hands the conversation
to recording when sessions closes the contact.

Shown: the transcript is listed with the contact's recordings (kind TRANSCRIPT, the message
count, one message left out); GetTranscript returns the conversation in order without the
card number; the stored object decrypted with Python's `cryptography` from
docs/recording-format.md alone gives the same JSON document (and not with another tenant's
or recording's associated data), and neither it nor the database holds the card number in
clear; the read is audited; tenant B's supervisor gets NOT_FOUND, B's channel may not store
a transcript for A.
"""
import base64
import json
import time
import uuid

import grpc
import pytest
import yaml

from conftest import OfferedAgent, auth, cli, endpoints, mint, wait_for
from test_recording import KEYS_FILE, decrypt_object, psql, store_dir, tenant_key, unwrap
from test_webchat import http, start_chat

CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def m(pb):
    from centralita.media.v1 import media_pb2, media_pb2_grpc
    from centralita.recording.v1 import recording_pb2, recording_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        md, mg = media_pb2, media_pb2_grpc
        r, rg = recording_pb2, recording_pb2_grpc
        s, sg = sessions_pb2, sessions_pb2_grpc
        t = pb.tenancy

    return M


def tenant_yaml(tenant, key, origin, transcripts):
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: Transcripts {tenant}
  channels: [chat]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none, chatTranscripts: {str(transcripts).lower()}, allowPause: {str(transcripts).lower()} }}
  routing:
    dispositionCodes: [resolved]
    queues:
      - {{ id: support, offerTimeoutSeconds: 60, afterContactWorkSeconds: 60 }}
  webchat:
    widgetKey: {key}
    allowedOrigins: ["{origin}"]
    queue: support
"""


def test_a_closed_chat_is_kept_as_a_transcript_without_what_was_said_while_paused(m, tmp_path):
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    a, b = f"tra-{run}", f"trb-{run}"
    key_a, key_b = f"wk_{run}_aaaaaaaaaaaa", f"wk_{run}_bbbbbbbbbbbb"
    origin = "https://shop.example"
    (tmp_path / "t.yaml").write_text(tenant_yaml(a, key_a, origin, True) + "---\n" +
                                     tenant_yaml(b, key_b, origin, False))
    cli("admin", "tenant", "apply", "-f", str(tmp_path / "t.yaml"))
    sup_a, sup_b = mint("--tenant", a, "--role", "supervisor"), mint("--tenant", b, "--role", "supervisor")
    channel_b = mint("--tenant", b, "--role", "channel")
    conversations = m.mg.ConversationServiceStub(grpc.insecure_channel(eps["media"]))
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))
    rec = m.rg.RecordingServiceStub(grpc.insecure_channel(eps["recording"]))

    def ready():
        try:
            contacts.ListQueueStats(m.s.ListQueueStatsRequest(), metadata=auth(sup_a), timeout=5)
            rec.ListRecordings(m.r.ListRecordingsRequest(contact_id="none"), metadata=auth(sup_a), timeout=5)
            return start_chat(a, "wrong-key-000000000", origin)[0] == 401
        except grpc.RpcError:
            return False

    assert wait_for(ready, 60), "sessions, recording or media never saw the tenant"
    agent_id = f"tr-agent-{run}"
    agent = OfferedAgent(m, a, agent_id, m.t.CHANNEL_CHAT)
    status, started = start_chat(a, key_a, origin, requestId=f"start-{run}")
    assert status == 201, started
    contact, token = started["contact"], started["visitorToken"]
    contact_id = contact.rsplit("/", 1)[1]
    customer = {"authorization": f"Bearer {token}", "origin": origin}

    def say(text, n):
        status, body = http("POST", f"/v1/tenants/{a}/webchat/messages", {"text": text, "requestId": f"c-{n}"},
                            customer)
        assert status == 201, body

    assert wait_for(lambda: agent.offers or agent.errors, 30) and not agent.errors, agent.errors
    offer = agent.offers[0]
    agent.contacts.AcceptContact(m.s.AcceptContactRequest(name=offer.name, offer_id=offer.offer_id),
                                 metadata=auth(agent.token), timeout=10)
    as_agent = auth(agent.token)
    say("Hola, quiero pagar mi factura", 1)
    conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text="Claro, ¿número de tarjeta?"),
                              metadata=as_agent, timeout=10)
    # The agent pauses the transcript while the customer gives the card, then resumes.
    paused = contacts.PauseRecording(m.s.PauseRecordingRequest(name=contact), metadata=as_agent, timeout=10)
    assert paused.recording_paused
    say(CARD, 2)
    time.sleep(0.05)
    contacts.ResumeRecording(m.s.ResumeRecordingRequest(name=contact), metadata=as_agent, timeout=10)
    say("Gracias, ya está", 3)
    conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text="Pago recibido"), metadata=as_agent,
                              timeout=10)
    agent.contacts.EndContact(m.s.EndContactRequest(name=contact), metadata=as_agent, timeout=10)
    agent.contacts.WrapUpContact(m.s.WrapUpContactRequest(name=contact, disposition="resolved"),
                                 metadata=as_agent, timeout=10)
    agent.stream.cancel()

    # Recording keeps the transcript once sessions has closed the contact.
    def transcript():
        listed = rec.ListRecordings(m.r.ListRecordingsRequest(contact_id=contact_id), metadata=auth(sup_a),
                                    timeout=5).recordings
        return [r for r in listed if r.kind == m.r.RECORDING_KIND_TRANSCRIPT]

    assert wait_for(transcript, 30), "no transcript of the closed chat"
    [stored] = transcript()
    assert stored.channel == m.t.CHANNEL_CHAT and stored.paused_messages == 1, stored
    got = rec.GetTranscript(m.r.GetTranscriptRequest(name=stored.name), metadata=auth(sup_a), timeout=10)
    lines = [(x.sender, x.agent_id, x.text) for x in got.messages]
    R = m.r.TranscriptMessage
    said = [(s, a_, t) for s, a_, t in lines if s != R.SENDER_SYSTEM]
    assert said == [
        (R.SENDER_CUSTOMER, "", "Hola, quiero pagar mi factura"),
        (R.SENDER_AGENT, agent_id, "Claro, ¿número de tarjeta?"),
        (R.SENDER_CUSTOMER, "", "Gracias, ya está"),
        (R.SENDER_AGENT, agent_id, "Pago recibido"),
    ], lines
    assert all(CARD not in t for _, _, t in lines)
    assert stored.message_count == len(lines) and got.paused_messages == 1
    seqs = [x.sequence for x in got.messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    # The object, decrypted from the documented format alone: the same document.
    rec_id = stored.name.removeprefix("recordings/")
    row = psql(f"SELECT set_config('centralita.tenant', '{a}', false); "
               f"SELECT k.key_version, encode(k.wrapped, 'hex'), r.object_key FROM recording.data_keys k "
               f"JOIN recording.recordings r ON r.tenant = k.tenant AND r.id = k.recording_id "
               f"WHERE k.recording_id = '{rec_id}'")[-1].split("|")
    version, wrapped, key = int(row[0]), bytes.fromhex(row[1]), row[2]
    obj = (store_dir() / key).read_bytes()
    assert CARD.encode() not in obj and b"factura" not in obj, "clear text in the stored object"
    root = base64.b64decode(yaml.safe_load(KEYS_FILE.read_text())["roots"][version])
    data_key = unwrap(tenant_key(root, a), version, a, rec_id, wrapped)
    doc = json.loads(decrypt_object(data_key, a, rec_id, obj))
    assert (doc["format"], doc["tenant"], doc["contact_id"], doc["channel"]) == \
        ("centralita.transcript.v1", a, contact_id, "chat")
    assert doc["paused_messages"] == 1 and doc["agent_ids"] == [agent_id]
    assert [(x["sender"], x.get("agent_id", ""), x["text"]) for x in doc["messages"]] == [
        ({R.SENDER_CUSTOMER: "customer", R.SENDER_AGENT: "agent", R.SENDER_SYSTEM: "system"}[s], a_, t)
        for s, a_, t in lines]
    from cryptography.exceptions import InvalidTag
    with pytest.raises(InvalidTag):
        decrypt_object(data_key, b, rec_id, obj)
    with pytest.raises(InvalidTag):
        decrypt_object(data_key, a, uuid.uuid4().hex, obj)
    dump = psql(f"SELECT set_config('centralita.tenant', '{a}', false); "
                f"SELECT row_to_json(r)::text FROM recording.recordings r WHERE id = '{rec_id}'")
    assert not any(CARD in line or "factura" in line for line in dump), dump
    audited = psql(f"SELECT set_config('centralita.tenant', '{a}', false); "
                   f"SELECT count(*) FROM recording.audit WHERE recording_id = '{rec_id}' "
                   f"AND action = 'transcript_read'")[-1]
    assert audited == "1"

    # Tenant B reaches none of it.
    with pytest.raises(grpc.RpcError) as e:
        rec.GetTranscript(m.r.GetTranscriptRequest(name=stored.name), metadata=auth(sup_b), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert not rec.ListRecordings(m.r.ListRecordingsRequest(contact_id=contact_id), metadata=auth(sup_b),
                                  timeout=10).recordings
    forged = m.r.IngestTranscriptRequest(tenant=a, contact_id=contact_id, queue="support", channel=m.t.CHANNEL_CHAT,
                                         start_time=stored.start_time, end_time=stored.start_time)
    with pytest.raises(grpc.RpcError) as e:
        rec.IngestTranscript(forged, metadata=auth(channel_b), timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
