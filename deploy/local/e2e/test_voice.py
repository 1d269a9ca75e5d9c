"""Calls reach the platform: sipp (Debian `sip-tester`, an independent SIP implementation)
plays a carrier trunk and calls media's SIP front door on loopback; the contacts are read
back from sessions over gRPC (grpcio).

Two tenants are applied with the CLI, each with its own number and a trunk on its own
loopback address (acme's 127.0.0.1, globex's 127.0.0.2). Cases: a call to acme's number is
answered (100, 200 with an SDP answer choosing the caller's first codec and telephone
events) and its voice contact is queued in sessions with the caller's number as identity;
while queued the caller hears the music on hold: the test itself is the caller's RTP
endpoint (the port sipp's SDP offers), reads the packets media sends (one RTP stream, PCMU,
20 ms, from media's RTP port range) and finds the music's notes in them by Goertzel, not a
test tone; the caller's BYE then abandons the contact. An offer media cannot carry (G.729
only) gets 488 and creates nothing; an unknown number gets 404; a source that is no trunk of
the number's tenant gets 403 (globex's trunk calling acme's number: nothing is created for
either tenant); a tenant at its concurrent-contact quota gets 486; a malformed INVITE (raw
bytes over UDP) gets 400, a BYE for a dialog media does not have 481, and the next call
still works. The scenarios are the XML files in
`sipp/`.
"""
import os
import pathlib
import random
import shutil
import socket
import subprocess
import time
import uuid

import math
import struct

import grpc
import pytest

from conftest import LOGS, auth, cli, endpoints, http_get, mint, wait_for

SIPP = shutil.which("sipp")
SCENARIOS = pathlib.Path(__file__).parent / "sipp"
pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")


def sip_addr():
    """media's SIP address: what deploy/local/services.sh gives it."""
    if os.environ.get("CENTRALITA_SIP_PORT"):
        return "127.0.0.1", int(os.environ["CENTRALITA_SIP_PORT"])
    return "127.0.0.1", 5060 + int(os.environ.get("CENTRALITA_ADMIN_BASE", "9101")) - 9101


def media_admin_port():
    return int(os.environ.get("CENTRALITA_ADMIN_BASE", "9101")) + 2


def media_rtp_ports():
    """media's RTP port range: what deploy/local/services.sh gives it."""
    if os.environ.get("CENTRALITA_RTP_PORTS"):
        first, last = os.environ["CENTRALITA_RTP_PORTS"].split("-")
        return int(first), int(last)
    first = 20000 + (int(os.environ.get("CENTRALITA_ADMIN_BASE", "9101")) - 9101) * 10
    return first, first + 999


# sipp takes its SIP port and media ports from -mp up: 10 apart per run, between the runs'
# RTP ranges (20000 and up) and the kernel's ephemeral ports (32768 and up).
_ports = iter(range(random.randrange(30000, 32000, 100), 32700, 10))


def sipp_args(scenario, number, caller, source, timeout, extra):
    host, port = sip_addr()
    local = next(_ports)
    LOGS.mkdir(parents=True, exist_ok=True)
    err = LOGS / f"sipp-{scenario}-{local}.log"
    return [SIPP, f"{host}:{port}", "-sf", str(SCENARIOS / f"{scenario}.xml"), "-s", number,
            "-key", "caller", caller, "-i", source, "-mi", source, "-p", str(local), "-mp", str(local + 2),
            "-m", "1", "-nostdin", "-trace_err", "-error_file", str(err), "-timeout", f"{timeout}s",
            "-timeout_error", *extra], err


def sipp(scenario, number, caller, *, source="127.0.0.1", timeout=30, extra=()):
    """Runs one call of `scenario`; returns (exit code, sipp's error log)."""
    args, err = sipp_args(scenario, number, caller, source, timeout, extra)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout + 15)
    return proc.returncode, (err.read_text() if err.exists() else "") + proc.stdout[-2000:]


def run_async(scenario, number, caller, *, extra=()):
    """Starts sipp in the background (the call waits while the test looks at it)."""
    args, err = sipp_args(scenario, number, caller, "127.0.0.1", 30, extra)
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), err


def queued_call(number, caller, hold_ms, rtp_port):
    """A call answered and queued for `hold_ms`, its caller's audio offered at `rtp_port`,
    then hung up (sipp's `queued_hangup`)."""
    return run_async("queued_hangup", number, caller,
                     extra=("-d", str(hold_ms), "-key", "rtp_port", str(rtp_port)))


def ulaw_to_linear(u):
    """G.711 µ-law to a 16-bit sample (ITU-T G.711's decoder, written out here so the test
    does not share media's code)."""
    u = ~u & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (0x84 - t) if u & 0x80 else (t - 0x84)


def goertzel(samples, hz, rate=8000):
    """Power of `hz` in `samples`, normalised by length."""
    k = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - k * s1 * s2) / (len(samples) ** 2)


def rtp_header(packet):
    """(version, payload type, sequence number, timestamp, SSRC, payload) of an RTP packet."""
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", packet[:12])
    cc = b0 & 0x0F
    return b0 >> 6, b1 & 0x7F, seq, ts, ssrc, packet[12 + 4 * cc:]


# The music on hold's notes (C5, E5, G5), and tones that are not in it.
MUSIC_HZ = (523.25, 659.25, 783.99)
NOT_MUSIC_HZ = (440.0, 1000.0, 2000.0)


def voice_tenant(tenant, number, source, max_concurrent=100):
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: Voice {tenant}
  channels: [voice]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: {max_concurrent}, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing:
    queues:
      - {{ id: support }}
  voice:
    numbers:
      - {{ number: "{number}", queue: support }}
    trunks:
      - {{ name: carrier, sources: ["{source}"] }}
"""


@pytest.fixture(scope="module")
def m(pb):
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        s = sessions_pb2
        sg = sessions_pb2_grpc
        t = pb.tenancy
        tg = pb.tenancy_grpc

    return M


@pytest.fixture(scope="module")
def world(m, tmp_path_factory):
    """Two tenants with a number and a trunk each, known to media and sessions."""
    run = uuid.uuid4().hex[:8]
    base = random.randrange(10_000_000, 99_999_000)
    w = {
        "acme": (f"voice-acme-{run}", f"+3491{base}", "127.0.0.1"),
        "globex": (f"voice-globex-{run}", f"+3491{base + 1}", "127.0.0.2"),
        "tiny": (f"voice-tiny-{run}", f"+3491{base + 2}", "127.0.0.1"),
    }
    d = tmp_path_factory.mktemp("voice")
    for key, (tenant, number, source) in w.items():
        path = d / f"{key}.yaml"
        path.write_text(voice_tenant(tenant, number, source, max_concurrent=1 if key == "tiny" else 100))
        cli("admin", "tenant", "apply", "-f", str(path))
    bpo = mint("--role", "bpo_admin")
    directory = m.tg.TenantServiceStub(grpc.insecure_channel(endpoints()["media"]))

    def media_knows():
        try:
            return all(
                any(n.number == number for n in directory.GetTenant(
                    m.t.GetTenantRequest(name=f"tenants/{tenant}"), metadata=auth(bpo), timeout=5).voice.numbers)
                for tenant, number, _ in w.values())
        except grpc.RpcError:
            return False

    assert wait_for(media_knows, 60), "media never learned the tenants' numbers"
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(endpoints()["sessions"]))
    sup = {k: mint("--tenant", t, "--role", "supervisor") for k, (t, _, _) in w.items()}

    def sessions_knows():
        try:
            for k in w:
                contacts.ListQueueStats(m.s.ListQueueStatsRequest(), metadata=auth(sup[k]), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(sessions_knows, 60), "sessions never learned the tenants"
    return {"tenants": w, "contacts": contacts, "sup": sup}


def list_contacts(m, world, key, state=0):
    c, sup = world["contacts"], world["sup"][key]
    return list(c.ListContacts(m.s.ListContactsRequest(state=state, page_size=100), metadata=auth(sup),
                               timeout=5).contacts)


def invites(outcome):
    status, body = http_get(media_admin_port(), "/metrics")
    assert status == 200
    for line in body.splitlines():
        if line.startswith("centralita_media_sip_invites_total{") and f'outcome="{outcome}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no centralita_media_sip_invites_total for {outcome}")


def test_media_is_ready_with_its_sip_listener():
    status, body = http_get(media_admin_port(), "/readyz")
    assert status == 200 and '"sip"' in body, body


def test_a_call_is_answered_queued_with_music_on_hold_and_a_hang_up_abandons_it(m, world):
    tenant, number, _ = world["tenants"]["acme"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind(("127.0.0.1", 0))
        rtp.settimeout(0.5)
        proc, err = queued_call(number, "+34600111222", 5000, rtp.getsockname()[1])
        try:
            def queued():
                return [c for c in list_contacts(m, world, "acme") if c.state == m.s.CONTACT_STATE_QUEUED]

            assert wait_for(lambda: len(queued()) == 1, 10), "no queued contact for the answered call"
            c = queued()[0]
            assert c.channel == m.t.CHANNEL_VOICE and c.queue == "support"
            assert c.direction == m.s.DIRECTION_INBOUND
            assert [(i.kind, i.value) for i in c.customer_identities] == [(1, "+34600111222")]
            assert c.attributes["voice_number"] == number and c.attributes["voice_trunk"] == "carrier"
            # What the caller hears while queued: 2 s of RTP at its offered address.
            packets, sources = [], set()
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                try:
                    data, source = rtp.recvfrom(2048)
                except socket.timeout:
                    continue
                packets.append(rtp_header(data))
                sources.add(source)
            out, _ = proc.communicate(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, f"sipp: {out[-2000:]} {err.read_text() if err.exists() else ''}"
    assert len(packets) >= 80, f"{len(packets)} packets in 2 s (50 a second expected)"
    first, last = media_rtp_ports()
    assert len(sources) == 1 and first <= next(iter(sources))[1] <= last, sources
    assert {(v, pt, len(payload)) for v, pt, _, _, _, payload in packets} == {(2, 0, 160)}, "PCMU, 20 ms"
    assert len({ssrc for *_, ssrc, _ in packets}) == 1, "one stream"
    for a, b in zip(packets, packets[1:]):
        assert (b[2] - a[2]) % 65536 == 1 and (b[3] - a[3]) % 2**32 == 160, (a[:5], b[:5])
    audio = [ulaw_to_linear(u) for *_, payload in packets for u in payload]
    # Per 400 ms (a note), one of the music's notes dominates every tone not in it.
    window = 3200
    for at in range(0, len(audio) - window + 1, window):
        w = audio[at:at + window]
        music = max(goertzel(w, hz) for hz in MUSIC_HZ)
        other = max(goertzel(w, hz) for hz in NOT_MUSIC_HZ)
        assert music > 20 * other, (at, music, other)

    def read():
        return world["contacts"].GetContact(m.s.GetContactRequest(name=c.name),
                                            metadata=auth(world["sup"]["acme"]), timeout=5)

    # Media ends the contact on the caller's BYE: abandoned, as no agent had it.
    assert wait_for(lambda: read().state == m.s.CONTACT_STATE_ABANDONED, 10), read()


def test_an_offer_without_a_codec_media_carries_is_488_and_creates_nothing(m, world):
    before = invites("refused_media")
    _, number, _ = world["tenants"]["acme"]
    rc, log = sipp("refused_488", number, "+34600111777")
    assert rc == 0, log
    assert invites("refused_media") == before + 1
    # No contact of that caller (counting all open contacts raced with other tests' calls
    # closing meanwhile).
    assert not [c for c in list_contacts(m, world, "acme")
                if any(i.value == "+34600111777" for i in c.customer_identities)]


def test_unknown_number_is_404_and_creates_nothing(m, world):
    rc, log = sipp("refused_404", "+34999000111", "+34600111222")
    assert rc == 0, log
    rc, log = sipp("refused_404", "support", "+34600111222")
    assert rc == 0, log


def test_a_source_that_is_not_the_numbers_trunk_is_403_for_either_tenant(m, world):
    _, acme_number, _ = world["tenants"]["acme"]
    _, globex_number, _ = world["tenants"]["globex"]
    acme_before = len(list_contacts(m, world, "acme"))
    # 127.0.0.2 is globex's trunk, not acme's: acme's number from it is refused.
    rc, log = sipp("refused_403", acme_number, "+34600111222", source="127.0.0.2")
    assert rc == 0, log
    # And acme's trunk calling globex's number too.
    rc, log = sipp("refused_403", globex_number, "+34600111222", source="127.0.0.1")
    assert rc == 0, log
    assert len(list_contacts(m, world, "acme")) == acme_before
    assert list_contacts(m, world, "globex") == []


def test_a_tenant_at_its_quota_gets_486(m, world):
    _, number, _ = world["tenants"]["tiny"]
    proc, err = queued_call(number, "+34600111333", 6000, next(_ports))
    try:
        assert wait_for(lambda: any(c.state == m.s.CONTACT_STATE_QUEUED for c in list_contacts(m, world, "tiny")),
                        10)
        rc, log = sipp("refused_486", number, "+34600111444")
        assert rc == 0, log
        proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    refused = [c for c in list_contacts(m, world, "tiny")
               if any(i.value == "+34600111444" for i in c.customer_identities)]
    assert refused == [], "the refused call created nothing"


def raw_invite(number, from_header, port, contact=True):
    host, sip_port = sip_addr()
    return (
        f"INVITE sip:{number}@{host}:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        f"From: {from_header}\r\n"
        f"To: <sip:{number}@{host}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\n"
        f"CSeq: 1 INVITE\r\n"
        + (f"Contact: <sip:trunk@127.0.0.1:{port}>\r\n" if contact else "")
        + "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_malformed_invites_get_400_and_the_service_keeps_serving(m, world):
    _, number, _ = world["tenants"]["acme"]
    before = invites("malformed")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3)
        port = s.getsockname()[1]
        # Bytes that are no SIP message at all, and an INVITE whose From has no tag: the
        # stack cannot form a transaction (no key), so they are dropped unanswered.
        s.sendto(b"\x00\xffINVITE garbage\r\n\r\n", sip_addr())
        s.sendto(os.urandom(300), sip_addr())
        s.sendto(raw_invite(number, "garbage", port), sip_addr())
        # Requests the stack parses but media cannot read: a From with no user part, and no
        # Contact header: 400.
        for bad in (raw_invite(number, "<sip:127.0.0.1>;tag=1", port),
                    raw_invite(number, "<sip:+34600111666@127.0.0.1>;tag=2", port, contact=False)):
            s.sendto(bad, sip_addr())
            data, _ = s.recvfrom(4096)
            assert data.startswith(b"SIP/2.0 400"), data
        # A request inside a dialog media does not have: 481.
        host, sip_port = sip_addr()
        s.sendto((f"BYE sip:{number}@{host}:{sip_port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                  f"From: <sip:+34600111666@127.0.0.1>;tag=gone\r\nTo: <sip:{number}@{host}>;tag=never\r\n"
                  f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
                  "Content-Length: 0\r\n\r\n").encode(), sip_addr())
        data, _ = s.recvfrom(4096)
        assert data.startswith(b"SIP/2.0 481"), data
    assert invites("malformed") == before + 2
    # Still serving: a valid call is answered, queued and hung up.
    rc, log = sipp("queued_hangup", number, "+34600111555", extra=("-d", "500", "-key", "rtp_port", str(next(_ports))))
    assert rc == 0, log
