"""A call reaches an agent's phone and both parties hear each other, measured.

The peers are independent of the platform: sipp (Debian `sip-tester`) signals the caller's
side as a carrier trunk; the caller's audio is this test's own RTP endpoint (the port sipp's
SDP offers: it sends a 440 Hz tone as PCMU every 20 ms, from that same port, and records
what media sends back), encoded and decoded here with G.711's reference formulas, not
media's code; the agent's phone is **baresip** (Debian `baresip`) at a fixed SIP address
given in the tenant manifest (`spec.voice.phones`), answering automatically, its microphone a
1000 Hz tone file made with sox, and what it hears recorded by its `sndfile` module. Each
side's recording is cut in 200 ms windows and the other party's tone is found by Goertzel,
so "audio flowed both ways" is measured. A phone that rings and never answers, and one
that answers 486, are sipp scenarios playing a phone (`sipp/phone_*.xml`).

Cases: an answered call, both directions heard, the contact CONNECTED to the agent and
ended (after-contact work) when the caller hangs up, the phone getting a BYE; the agent's
phone hanging up: the caller gets a BYE and the contact is ended; a caller who hangs up
while the agent's phone rings: the phone gets CANCEL at once and the contact is abandoned
(and, while it rings, a channel token of another tenant naming the agent does not see the
contact, one of this tenant naming another agent may not accept the offer: what media's
acting-for-the-agent token can do is scoped); an offer not answered in time: the phone gets
CANCEL while the caller is still on the line, the contact is queued again; an agent whose
phone answers 486: the offer is rejected in sessions and the next agent's phone gets the
call; a contact the agent ends from the desktop: media hangs up the caller and the phone.

Recording (a tenant with `recording.voice: all`): media streams the bridged call to the
recording service; the recording, fetched through its signed playback URL, has the caller's
tone on the left and the agent's on the right in every 100 ms window, is as long as the
contact was connected, and `soxi` reads it. With the recording service stopped the same call
is answered, bridged and heard both ways, and nothing is recorded.
"""
import itertools
import math
import os
import pathlib
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
import wave

import grpc
import pytest

from conftest import BIN, LOGS, REPO, auth, cli, mint, sessions_knows_tenant, upsert_voice_agents, wait_for
from test_voice import SCENARIOS, SIPP, goertzel, queued_call, rtp_header, run_async, sipp, ulaw_to_linear

BARESIP = shutil.which("baresip")
SOX = shutil.which("sox")
pytestmark = pytest.mark.skipif(None in (SIPP, BARESIP, SOX), reason="needs sipp, baresip and sox")

CALLER_HZ, AGENT_HZ = 440.0, 1000.0
MUSIC_HZ = (523.25, 659.25, 783.99)
WINDOW = 1600  # 200 ms at 8 kHz

# baresip's SIP and RTP ports: above the runs' RTP ranges (20000 and up, 1000 a run) and
# sipp's ports (30000-32700), below the kernel's ephemeral range (32768).
# Baresip phones' SIP ports, 20 apart (each phone's RTP next to its SIP port): every port of
# the block from a random one on, then around again from the block's start (a phone's port
# comes back only after 49 others, long after that phone has quit). A plain range from a
# random start ran out (StopIteration in every later voice test) when the start fell late.
_first_phone_port = random.randrange(29000, 29990, 20)
_phone_ports = itertools.cycle(sorted(range(29000, 29990, 20), key=lambda p: (p < _first_phone_port, p)))


def linear_to_ulaw(sample):
    """G.711 µ-law of a 16-bit sample (the reference encoder)."""
    sign = 0x80 if sample < 0 else 0
    s = min(abs(sample), 32635) + 0x84
    exponent = max(0, min(7, s.bit_length() - 8))
    mantissa = (s >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def tone_frames(hz, amplitude=8000):
    """An endless supply of 20 ms PCMU frames of a `hz` tone."""
    n = 0
    while True:
        yield bytes(linear_to_ulaw(int(amplitude * math.sin(2 * math.pi * hz * (n + i) / 8000)))
                    for i in range(160))
        n += 160


def dominant(samples, hz, others):
    """Whether `hz` is at least 10 times stronger than every tone of `others` in `samples`
    and not silence."""
    p = goertzel(samples, hz)
    return p > 1000 and all(p > 10 * goertzel(samples, o) for o in others)


def windows_with(samples, hz, others):
    return sum(dominant(samples[at:at + WINDOW], hz, others) for at in range(0, len(samples) - WINDOW + 1, WINDOW))


class CallerAudio:
    """The caller's RTP endpoint: learns media's address from the first packet it gets
    (treatment), then sends a tone there every 20 ms and records what arrives."""

    def __init__(self, hz=CALLER_HZ):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.received = []  # (arrival, payload type, SSRC, payload)
        self.media = None
        self.stop = threading.Event()
        self.frames = tone_frames(hz)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        seq, ts, ssrc = random.randrange(65536), random.randrange(2**32), random.randrange(2**32)
        next_send = time.monotonic()
        while not self.stop.is_set():
            try:
                data, source = self.sock.recvfrom(2048)
                _, pt, _, _, their_ssrc, payload = rtp_header(data)
                self.received.append((time.monotonic(), pt, their_ssrc, payload))
                self.media = self.media or source
            except socket.timeout:
                pass
            now = time.monotonic()
            if self.media and now >= next_send:
                packet = struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + next(self.frames)
                self.sock.sendto(packet, self.media)
                seq, ts = (seq + 1) % 65536, (ts + 160) % 2**32
                next_send += 0.02

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()

    def heard(self):
        """The PCM the caller received, in arrival order."""
        return [ulaw_to_linear(u) for _, pt, _, payload in self.received if pt == 0 for u in payload]


class Baresip:
    """An agent's softphone: answers by itself, says a tone, records what it hears."""

    def __init__(self, tmp, name, hz=AGENT_HZ):
        self.port = next(_phone_ports)
        self.dir = tmp / f"baresip-{name}"
        self.rec = self.dir / "rec"
        self.rec.mkdir(parents=True)
        tone = self.dir / "tone.wav"
        subprocess.run([SOX, "-n", "-r", "8000", "-c", "1", "-b", "16", str(tone), "synth", "120", "sine",
                        str(hz), "vol", "0.25"], check=True)
        (self.dir / "config").write_text(f"""poll_method epoll
sip_listen 127.0.0.1:{self.port}
sip_transports udp
audio_player aubridge,nil
audio_source aufile,{tone}
audio_alert aubridge,nil
rtp_ports {self.port + 2}-{self.port + 19}
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module aubridge.so
module sndfile.so
module_app account.so
snd_path {self.rec}
""")
        self.uri = f"sip:{name}@127.0.0.1:{self.port}"
        (self.dir / "accounts").write_text(f"<{self.uri}>;regint=0;answermode=auto;audio_codecs=PCMU,PCMA\n")
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = LOGS / f"baresip-{name}-{self.port}.log"
        self.proc = subprocess.Popen([BARESIP, "-f", str(self.dir)], stdin=subprocess.DEVNULL,
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        assert wait_for(lambda: "baresip is ready" in self.log.read_text(), 10), self.log.read_text()

    def heard(self):
        """The PCM the phone decoded (sndfile's `*-dec.wav`)."""
        files = sorted(self.rec.glob("*dec*.wav"))
        assert files, f"baresip recorded nothing: {list(self.rec.iterdir())}"
        with wave.open(str(files[-1])) as w:
            assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
            raw = w.readframes(w.getnframes())
        return list(struct.unpack(f"<{len(raw) // 2}h", raw))

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def phone_scenario(scenario, port, extra=()):
    """A sipp playing a phone (UAS) on `port`: `phone_busy` answers 486, `phone_ring_cancel`
    rings until cancelled, `phone_answer_bye` answers and hangs up after -d ms."""
    LOGS.mkdir(parents=True, exist_ok=True)
    err = LOGS / f"sipp-{scenario}-{port}.log"
    return subprocess.Popen(
        [SIPP, "-sf", str(SCENARIOS / f"{scenario}.xml"), "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port),
         "-mp", str(port + 2), "-m", "1", "-nostdin", "-trace_err", "-error_file", str(err), "-timeout", "60s",
         "-timeout_error", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), err


def desk_tenant(tenant, number, phones, offer_timeout=15, recording="none"):
    phone_lines = "".join(f"\n      - {{ agentId: {a}, uri: \"{u}\" }}" for a, u in phones.items())
    phone_lines = f"\n    phones:{phone_lines}" if phones else ""
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: Voice desk {tenant}
  channels: [voice]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: {recording} }}
  routing:
    queues:
      - {{ id: support, offerTimeoutSeconds: {offer_timeout} }}
  voice:
    numbers:
      - {{ number: "{number}", queue: support }}
    trunks:
      - {{ name: carrier, sources: ["127.0.0.1"] }}{phone_lines}
"""


@pytest.fixture
def desk(m, tmp_path):
    """A tenant of its own with agents whose phones are given per test; returns a setup
    function (phones by agent id) and the clients."""
    run = uuid.uuid4().hex[:8]
    tenant = f"voice-desk-{run}"
    number = f"+3492{random.randrange(10_000_000, 99_999_999)}"
    sessions = grpc.insecure_channel(m.endpoints()["sessions"])
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)
    bpo = mint("--role", "bpo_admin")
    sup = mint("--tenant", tenant, "--role", "supervisor")

    def setup(phones, offer_timeout=15, recording="none"):
        ids = {a: f"{a}-{run}" for a in phones}
        path = tmp_path / "tenant.yaml"
        path.write_text(desk_tenant(tenant, number, {ids[a]: u for a, u in phones.items()}, offer_timeout,
                                    recording))
        cli("admin", "tenant", "apply", "-f", str(path))
        assert sessions_knows_tenant(contacts, m.s, sup), "sessions never learned the tenant"
        upsert_voice_agents(agents, m.s, m.t.CHANNEL_VOICE, tenant, ids.values(), bpo)
        # Media learns the phones from the tenants topic like sessions: give it the time the
        # offer takes anyway (sessions answered, so the topic has the tenant).
        time.sleep(1.0)
        return ids

    def sign_in(agent_id):
        token = mint("--tenant", tenant, "--role", "agent", "--agent-id", agent_id)
        agents.SignIn(m.s.SignInRequest(name=f"agents/{agent_id}", available=True), metadata=auth(token),
                      timeout=10)

    def contact_of(caller):
        for c in contacts.ListContacts(m.s.ListContactsRequest(page_size=100), metadata=auth(sup),
                                       timeout=5).contacts:
            if any(i.value == caller for i in c.customer_identities):
                return c
        return None

    class Desk:
        pass

    d = Desk()
    d.tenant, d.number, d.setup, d.sign_in, d.contact_of = tenant, number, setup, sign_in, contact_of
    d.contacts = contacts
    d.sup = sup
    d.states, d.times, d.name = [], [], None

    def read():
        return contacts.GetContact(m.s.GetContactRequest(name=d.name), metadata=auth(sup), timeout=5)

    d.read = read

    def watch(caller, stop):
        """Records the contact's (state, agent) as they change, until `stop`."""
        while not stop.is_set():
            try:
                c = contact_of(caller)
            except grpc.RpcError:
                c = None
            if c is not None:
                d.name = c.name
            if c is not None and (not d.states or d.states[-1] != (c.state, c.agent_id)):
                d.states.append((c.state, c.agent_id))
                d.times.append(time.monotonic())
            time.sleep(0.1)

    d.watch = watch
    return d


@pytest.fixture(scope="module")
def m(pb):
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    from conftest import endpoints

    class M:
        s = sessions_pb2
        sg = sessions_pb2_grpc
        t = pb.tenancy
        tg = pb.tenancy_grpc

    M.endpoints = staticmethod(endpoints)
    return M


def watching(desk, caller):
    stop = threading.Event()
    t = threading.Thread(target=desk.watch, args=(caller, stop), daemon=True)
    t.start()
    return stop, t


def test_an_answered_call_is_heard_both_ways_and_ends_in_sessions(m, desk, tmp_path):
    phone = Baresip(tmp_path, "alice")
    caller_audio = CallerAudio()
    caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
    try:
        ids = desk.setup({"alice": phone.uri})
        desk.sign_in(ids["alice"])
        stop, watcher = watching(desk, caller)
        proc, err = queued_call(desk.number, caller, 9000, caller_audio.port)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"sipp: {out[-2000:]} {err.read_text() if err.exists() else ''}"
        ended = wait_for(lambda: desk.states and desk.states[-1][0] in (
            m.s.CONTACT_STATE_AFTER_CONTACT_WORK, m.s.CONTACT_STATE_CLOSED), 10)
        stop.set()
        watcher.join(5)
        assert ended, desk.states
    finally:
        caller_audio.close()
        phone.close()
    states = [s for s, _ in desk.states]
    assert m.s.CONTACT_STATE_CONNECTED in states, desk.states
    assert (m.s.CONTACT_STATE_CONNECTED, ids["alice"]) in desk.states, "connected to the agent whose phone answered"
    log = phone.log.read_text()
    assert "terminated (duration" in log and log.index("terminated (duration") < log.index("terminated by signal"), \
        f"the phone's call was ended by media (BYE) before the phone stopped: {log[-1500:]}"

    heard_by_caller = caller_audio.heard()
    heard_by_agent = phone.heard()
    assert windows_with(heard_by_caller, AGENT_HZ, (CALLER_HZ,) + MUSIC_HZ) >= 10, \
        "the caller heard the agent's tone for at least 2 s"
    assert windows_with(heard_by_agent, CALLER_HZ, (AGENT_HZ,) + MUSIC_HZ) >= 10, \
        "the agent heard the caller's tone for at least 2 s"
    # The caller heard one stream throughout: treatment then the agent, one SSRC.
    assert len({ssrc for _, _, ssrc, _ in caller_audio.received}) == 1


def test_a_caller_hanging_up_while_the_phone_rings_cancels_it(m, desk, tmp_path):
    port = next(_phone_ports)
    phone, phone_err = phone_scenario("phone_ring_cancel", port)
    caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
    try:
        ids = desk.setup({"alice": f"sip:alice@127.0.0.1:{port}"})
        desk.sign_in(ids["alice"])
        # Another tenant, known to sessions, for the cross-tenant refusal below.
        other = f"{desk.tenant}-x"
        (tmp_path / "other.yaml").write_text(desk_tenant(other, f"+3493{random.randrange(10_000_000, 99_999_999)}", {}))
        cli("admin", "tenant", "apply", "-f", str(tmp_path / "other.yaml"))
        assert sessions_knows_tenant(desk.contacts, m.s, mint("--tenant", other, "--role", "supervisor"))
        stop, watcher = watching(desk, caller)
        # Hangs up 5 s after the answer: the phone rings by then (the offer takes ~1 s).
        proc, err = queued_call(desk.number, caller, 5000, 9)
        assert wait_for(lambda: (m.s.CONTACT_STATE_OFFERED, ids["alice"]) in desk.states, 4), desk.states
        # Acting for the offered agent is what media's token may do: a channel token of
        # another tenant naming the agent does not see the contact, and one of this tenant
        # naming another agent may not accept an offer that is not that agent's.
        offer = desk.read().offer_id
        for token, code in ((mint("--tenant", other, "--role", "channel", "--agent-id", ids["alice"]),
                             (grpc.StatusCode.NOT_FOUND,)),
                            (mint("--tenant", desk.tenant, "--role", "channel", "--agent-id", f"bob-{ids['alice']}"),
                             (grpc.StatusCode.PERMISSION_DENIED,))):
            with pytest.raises(grpc.RpcError) as refused:
                desk.contacts.AcceptContact(m.s.AcceptContactRequest(name=desk.name, offer_id=offer),
                                            metadata=auth(token), timeout=5)
            assert refused.value.code() in code, refused.value
        assert desk.read().state == m.s.CONTACT_STATE_OFFERED, "still ringing"
        out_caller, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out_caller[-2000:]
        out, _ = phone.communicate(timeout=20)
        stop.set()
        watcher.join(5)
    finally:
        if phone.poll() is None:
            phone.kill()
    assert phone.returncode == 0, f"the phone was not cancelled: {out[-2000:]} " \
                                  f"{phone_err.read_text() if phone_err.exists() else ''}"
    assert (m.s.CONTACT_STATE_OFFERED, ids["alice"]) in desk.states, desk.states
    assert wait_for(lambda: desk.read().state == m.s.CONTACT_STATE_ABANDONED, 10), desk.states


def test_an_offer_accepted_on_the_desktop_makes_the_phone_answer_by_itself(m, desk, tmp_path):
    """The phone rings for the offer; the agent accepts on the desktop (AcceptContact, the
    agent's own token): media cancels that ring and rings the phone again asking it to
    answer by itself (`Call-Info: …;answer-after=0`); the phone (sipp, which answers only
    such an INVITE) picks up, the call is bridged with the contact connected to that agent,
    and the caller's hang-up ends it on the phone."""
    port = next(_phone_ports)
    phone, phone_err = phone_scenario("phone_auto_answer", port, extra=("-m", "2"))
    caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
    try:
        ids = desk.setup({"alice": f"sip:alice@127.0.0.1:{port}"})
        desk.sign_in(ids["alice"])
        stop, watcher = watching(desk, caller)
        proc, err = queued_call(desk.number, caller, 6000, 9)
        assert wait_for(lambda: (m.s.CONTACT_STATE_OFFERED, ids["alice"]) in desk.states, 5), desk.states
        time.sleep(0.5)  # the phone is ringing (180)
        token = mint("--tenant", desk.tenant, "--role", "agent", "--agent-id", ids["alice"])
        accepted = desk.contacts.AcceptContact(m.s.AcceptContactRequest(name=desk.name, offer_id=desk.read().offer_id),
                                               metadata=auth(token), timeout=5)
        assert accepted.state == m.s.CONTACT_STATE_CONNECTED
        out_caller, _ = proc.communicate(timeout=40)
        assert proc.returncode == 0, out_caller[-2000:]
        out, _ = phone.communicate(timeout=30)
        stop.set()
        watcher.join(5)
    finally:
        if phone.poll() is None:
            phone.kill()
    assert phone.returncode == 0, f"the phone was not asked to answer by itself: {out[-2000:]} " \
                                  f"{phone_err.read_text() if phone_err.exists() else ''}"
    assert (m.s.CONTACT_STATE_CONNECTED, ids["alice"]) in desk.states, desk.states
    assert wait_for(lambda: desk.read().state in (m.s.CONTACT_STATE_AFTER_CONTACT_WORK, m.s.CONTACT_STATE_CLOSED), 10), \
        desk.states


def test_a_phone_answering_486_rejects_the_offer_and_the_next_agent_gets_the_call(m, desk, tmp_path):
    port = next(_phone_ports)
    busy, busy_err = phone_scenario("phone_busy", port)
    bob_phone = Baresip(tmp_path, "bob")
    caller_audio = CallerAudio()
    caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
    try:
        ids = desk.setup({"alice": f"sip:alice@127.0.0.1:{port}", "bob": bob_phone.uri})
        desk.sign_in(ids["alice"])
        stop, watcher = watching(desk, caller)
        proc, err = queued_call(desk.number, caller, 10000, caller_audio.port)
        # Alice's phone refuses; then Bob signs in and gets it.
        out_busy, _ = busy.communicate(timeout=20)
        assert busy.returncode == 0, f"alice's phone: {out_busy[-2000:]} " \
                                     f"{busy_err.read_text() if busy_err.exists() else ''}"
        desk.sign_in(ids["bob"])
        assert wait_for(lambda: (m.s.CONTACT_STATE_CONNECTED, ids["bob"]) in desk.states, 15), desk.states
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"sipp: {out[-2000:]} {err.read_text() if err.exists() else ''}"
        stop.set()
        watcher.join(5)
    finally:
        if busy.poll() is None:
            busy.kill()
        caller_audio.close()
        bob_phone.close()
    # Alice's phone got the INVITE and refused it (its scenario passed); she never had the call.
    assert (m.s.CONTACT_STATE_CONNECTED, ids["alice"]) not in desk.states, desk.states
    assert windows_with(caller_audio.heard(), AGENT_HZ, (CALLER_HZ,) + MUSIC_HZ) >= 5, "the caller heard bob"


def test_the_agent_hanging_up_ends_the_call_for_the_caller_and_in_sessions(m, desk):
    port = next(_phone_ports)
    phone, phone_err = phone_scenario("phone_answer_bye", port, extra=("-d", "2000"))
    caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
    try:
        ids = desk.setup({"alice": f"sip:alice@127.0.0.1:{port}"})
        desk.sign_in(ids["alice"])
        stop, watcher = watching(desk, caller)
        # The caller waits for media's BYE: it comes when the agent's phone hangs up.
        rc, log = sipp("answered_bye_received", desk.number, caller, extra=("-key", "rtp_port", "9"))
        assert rc == 0, log
        out, _ = phone.communicate(timeout=20)
        ended = wait_for(lambda: desk.states and desk.states[-1][0] in (
            m.s.CONTACT_STATE_AFTER_CONTACT_WORK, m.s.CONTACT_STATE_CLOSED), 10)
        stop.set()
        watcher.join(5)
    finally:
        if phone.poll() is None:
            phone.kill()
    assert phone.returncode == 0, f"{out[-2000:]} {phone_err.read_text() if phone_err.exists() else ''}"
    assert (m.s.CONTACT_STATE_CONNECTED, ids["alice"]) in desk.states, desk.states
    assert ended, desk.states


def test_an_offer_not_answered_in_time_cancels_the_ringing_phone(m, desk):
    port = next(_phone_ports)
    phone, phone_err = phone_scenario("phone_ring_cancel", port)
    caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
    try:
        ids = desk.setup({"alice": f"sip:alice@127.0.0.1:{port}"}, offer_timeout=2)
        desk.sign_in(ids["alice"])
        stop, watcher = watching(desk, caller)
        proc, err = queued_call(desk.number, caller, 8000, 9)
        # The phone rings; sessions' offer times out after 2 s and media cancels the phone
        # while the caller is still on the line.
        out, _ = phone.communicate(timeout=20)
        caller_still_on = proc.poll() is None
        assert wait_for(lambda: desk.read().state == m.s.CONTACT_STATE_QUEUED, 10), desk.states
        out_caller, _ = proc.communicate(timeout=30)
        stop.set()
        watcher.join(5)
    finally:
        if phone.poll() is None:
            phone.kill()
        if proc.poll() is None:
            proc.kill()
    assert phone.returncode == 0, f"the phone was not cancelled: {out[-2000:]} " \
                                  f"{phone_err.read_text() if phone_err.exists() else ''}"
    assert caller_still_on, "the CANCEL came from the offer's timeout, not the caller's hang-up"
    assert (m.s.CONTACT_STATE_OFFERED, ids["alice"]) in desk.states, desk.states
    assert proc.returncode == 0, out_caller[-2000:]


def test_a_contact_ended_in_sessions_hangs_up_both_legs(m, desk):
    port = next(_phone_ports)
    phone, phone_err = phone_scenario("phone_answer_wait_bye", port)
    caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
    try:
        ids = desk.setup({"alice": f"sip:alice@127.0.0.1:{port}"})
        desk.sign_in(ids["alice"])
        stop, watcher = watching(desk, caller)
        proc, err = run_async("answered_bye_received", desk.number, caller, extra=("-key", "rtp_port", "9"))
        assert wait_for(lambda: (m.s.CONTACT_STATE_CONNECTED, ids["alice"]) in desk.states, 10), desk.states
        # The agent ends the contact from the desktop: media hangs up the caller and the phone.
        agent = mint("--tenant", desk.tenant, "--role", "agent", "--agent-id", ids["alice"])
        desk.contacts.EndContact(m.s.EndContactRequest(name=desk.name), metadata=auth(agent), timeout=5)
        out_phone, _ = phone.communicate(timeout=15)
        out_caller, _ = proc.communicate(timeout=15)
        stop.set()
        watcher.join(5)
    finally:
        for p in (phone, proc):
            if p.poll() is None:
                p.kill()
    assert phone.returncode == 0, f"the phone got no BYE: {out_phone[-2000:]} " \
                                  f"{phone_err.read_text() if phone_err.exists() else ''}"
    assert proc.returncode == 0, f"the caller got no BYE: {out_caller[-2000:]} {err.read_text() if err.exists() else ''}"


# --- Recording: media streams a bridged call of a `recording.voice: all` tenant to recording. --

def recorded_call(m, desk, tmp_path, name, recording="all", seconds=9):
    """An answered call of a recording tenant (caller 440 Hz, agent 1000 Hz, the caller
    hanging up after `seconds`); returns the agent's id (the contact's timed states are the
    desk's)."""
    phone = Baresip(tmp_path, name)
    caller_audio = CallerAudio()
    caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
    try:
        ids = desk.setup({name: phone.uri}, recording=recording)
        desk.sign_in(ids[name])
        stop, watcher = watching(desk, caller)
        proc, err = queued_call(desk.number, caller, seconds * 1000, caller_audio.port)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"sipp: {out[-2000:]} {err.read_text() if err.exists() else ''}"
        ended = wait_for(lambda: desk.states and desk.states[-1][0] in (
            m.s.CONTACT_STATE_AFTER_CONTACT_WORK, m.s.CONTACT_STATE_CLOSED), 10)
        stop.set()
        watcher.join(5)
        assert ended, desk.states
    finally:
        caller_audio.close()
        phone.close()
    assert (m.s.CONTACT_STATE_CONNECTED, ids[name]) in desk.states, desk.states
    heard_by_caller, heard_by_agent = caller_audio.heard(), phone.heard()
    assert windows_with(heard_by_caller, AGENT_HZ, (CALLER_HZ,) + MUSIC_HZ) >= 10, "the caller heard the agent"
    assert windows_with(heard_by_agent, CALLER_HZ, (AGENT_HZ,) + MUSIC_HZ) >= 10, "the agent heard the caller"
    return ids[name]


def connected_seconds(m, desk):
    """How long the contact was seen CONNECTED (the watcher polls every 0.1 s)."""
    states = [s for s, _ in desk.states]
    i = states.index(m.s.CONTACT_STATE_CONNECTED)
    j = next(k for k in range(i, len(states)) if states[k] in (
        m.s.CONTACT_STATE_AFTER_CONTACT_WORK, m.s.CONTACT_STATE_CLOSED))
    return desk.times[j] - desk.times[i]


@pytest.fixture(scope="module")
def rec(pb):
    from centralita.recording.v1 import recording_pb2, recording_pb2_grpc

    from conftest import endpoints

    class R:
        r = recording_pb2
        stub = recording_pb2_grpc.RecordingServiceStub(grpc.insecure_channel(endpoints()["recording"]))

    return R


def fork_chunks(outcome):
    """media's `centralita_media_recording_fork_chunks{outcome}` counter, from its /metrics."""
    from conftest import http_get
    from test_voice import media_admin_port

    status, text = http_get(media_admin_port(), "/metrics")
    assert status == 200, status
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("centralita_media_recording_fork_chunks_total{") and f'outcome="{outcome}"' in line)


def recordings_of(rec, desk):
    contact_id = desk.name.rsplit("/contacts/", 1)[1]
    return list(rec.stub.ListRecordings(rec.r.ListRecordingsRequest(contact_id=contact_id),
                                        metadata=auth(desk.sup), timeout=5).recordings)


def test_a_bridged_call_is_recorded_caller_left_agent_right(m, desk, rec, tmp_path):
    """Recorded from the bridge to the end: the left channel is the caller's 440 Hz and the
    right the agent's 1000 Hz in every 100 ms window, the length that of the connected call."""
    from test_recording import channels, get

    sent_before = fork_chunks("sent")
    agent = recorded_call(m, desk, tmp_path, "rita")
    connected = connected_seconds(m, desk)
    done = []
    assert wait_for(lambda: (done.extend(r for r in recordings_of(rec, desk)
                                         if r.state == rec.r.RECORDING_STATE_COMPLETE) or bool(done)), 20), \
        f"no complete recording: {recordings_of(rec, desk)}"
    r = done[0]
    # Both legs' audio went out in chunks of at most half a second (and the header and end).
    assert fork_chunks("sent") - sent_before >= 2 * 8, (sent_before, fork_chunks("sent"))
    assert list(r.agent_ids) == [agent] and r.queue == "support" and r.codec == rec.r.AUDIO_CODEC_PCMU
    duration = r.duration.seconds + r.duration.nanos / 1e9
    # Media starts recording when it bridges (just after sessions has the contact CONNECTED)
    # and stops when the caller's BYE ends the call (just before it ends the contact): the
    # watcher sees each state change up to 0.1 s late (its poll) plus a gRPC round trip, so
    # the two lengths agree within half a second; 1 s leaves room for a loaded machine.
    assert abs(duration - connected) <= 1.0, (duration, connected)

    url = rec.stub.CreatePlaybackUrl(rec.r.CreatePlaybackUrlRequest(name=r.name), metadata=auth(desk.sup)).url
    status, _, wav = get(url)
    assert status == 200
    path = tmp_path / "call.wav"
    path.write_bytes(wav)
    soxi = subprocess.run(["soxi", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Channels       : 2" in soxi and "Sample Rate    : 8000" in soxi and "16-bit" in soxi, soxi
    sox_seconds = float(subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True,
                                       check=True).stdout)
    assert abs(sox_seconds - duration) <= 0.01, (sox_seconds, duration)

    left, right = channels(wav)
    window = 800  # 100 ms
    starts = range(0, len(left) - window + 1, window)
    # The first and last 300 ms may hold the edges of the streams (the agent's phone starting
    # to send, the caller's last packets): every window between is judged.
    inner = [at for at in starts if 2400 <= at <= len(left) - window - 2400]
    assert len(inner) >= 30, f"at least 3 s of bridged audio: {duration}"
    caller_left = sum(dominant(left[at:at + window], CALLER_HZ, (AGENT_HZ,)) for at in inner)
    agent_right = sum(dominant(right[at:at + window], AGENT_HZ, (CALLER_HZ,)) for at in inner)
    print(f"recorded {duration:.3f} s, connected {connected:.3f} s, caller left {caller_left} and agent right "
          f"{agent_right} of {len(inner)} windows")
    assert caller_left >= 0.95 * len(inner), f"caller's tone left in {caller_left} of {len(inner)} windows"
    assert agent_right >= 0.95 * len(inner), f"agent's tone right in {agent_right} of {len(inner)} windows"
    # Never the other way round: the parties are kept apart.
    assert not any(dominant(left[at:at + window], AGENT_HZ, (CALLER_HZ,)) for at in starts), "agent on the left"
    assert not any(dominant(right[at:at + window], CALLER_HZ, (AGENT_HZ,)) for at in starts), "caller on the right"


def _services_process(name):
    """The pid file and log of one of the suite's services (deploy/local/services.sh)."""
    data = pathlib.Path(os.environ.get("CENTRALITA_DATA", REPO / ".local"))
    run = os.environ.get("CENTRALITA_RUN_NAME", "dev")
    return data / "run" / run / f"{name}.pid", data / "logs" / run / f"{name}.log"


def test_a_recording_tenants_call_goes_on_with_recording_stopped(m, desk, rec, tmp_path):
    """The suite's recording process is stopped (SIGTERM) for the call: the call is answered,
    bridged and heard both ways all the same, and nothing is recorded. Recording is started
    again afterwards with the environment it had, and serves again."""
    pidf, log = _services_process("recording")
    pid = int(pidf.read_text())
    env = dict(v.split("=", 1) for v in pathlib.Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
    dropped_before = fork_chunks("dropped")
    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not pathlib.Path(f"/proc/{pid}").exists(), 15), "recording did not stop"
    try:
        recorded_call(m, desk, tmp_path, "stan")
        # The call's audio was dropped and counted (media logs it once), not waited on.
        assert fork_chunks("dropped") - dropped_before >= 2 * 8, (dropped_before, fork_chunks("dropped"))
    finally:
        with open(log, "ab") as out:
            proc = subprocess.Popen([str(BIN / "centralita-recording")], env=env, stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        pidf.write_text(f"{proc.pid}\n")

    def serves():
        try:
            return recordings_of(rec, desk) == []
        except grpc.RpcError:
            return False

    assert wait_for(serves, 60), "recording did not come back (or recorded the call)"


def test_a_pci_pause_leaves_digital_silence_marked_in_the_recording(m, desk, rec, tmp_path):
    """The agent pauses the call's recording while the customer would read card details
    (sessions' PauseRecording, as the desktop does) and resumes it 2 s later: the recording
    marks one paused span of that length, both channels are digital silence inside it, and
    the parties' tones are there before and after."""
    from test_recording import channels, get

    agent_holder = {}

    def pause_then_resume(stop):
        while not stop.is_set() and not any(s == m.s.CONTACT_STATE_CONNECTED for s, _ in desk.states):
            time.sleep(0.05)
        if stop.is_set():
            return
        time.sleep(2.0)
        token = mint("--tenant", desk.tenant, "--role", "agent", "--agent-id", agent_holder["id"])
        paused = desk.contacts.PauseRecording(m.s.PauseRecordingRequest(name=desk.name), metadata=auth(token), timeout=5)
        agent_holder["paused"] = (paused.recording_paused, time.monotonic())
        time.sleep(2.0)
        resumed = desk.contacts.ResumeRecording(m.s.ResumeRecordingRequest(name=desk.name), metadata=auth(token),
                                                timeout=5)
        agent_holder["resumed"] = (resumed.recording_paused, time.monotonic())

    # The agent's id is known once the desk is set up: recorded_call sets it up, so the
    # pauser learns it from the contact's agent when the call connects.
    stop = threading.Event()

    def pauser():
        while not stop.is_set() and not any(s == m.s.CONTACT_STATE_CONNECTED for s, _ in desk.states):
            time.sleep(0.05)
        agent_holder["id"] = next((a for s, a in desk.states if s == m.s.CONTACT_STATE_CONNECTED), "")
        if agent_holder["id"]:
            pause_then_resume(stop)

    t = threading.Thread(target=pauser, daemon=True)
    t.start()
    try:
        recorded_call(m, desk, tmp_path, "pia", recording="all, allowPause: true")
    finally:
        stop.set()
        t.join(10)
    assert agent_holder.get("paused", (None,))[0] is True, agent_holder
    assert agent_holder.get("resumed", (None,))[0] is False, agent_holder
    done = []
    assert wait_for(lambda: (done.extend(r for r in recordings_of(rec, desk)
                                         if r.state == rec.r.RECORDING_STATE_COMPLETE) or bool(done)), 20), \
        f"no complete recording: {recordings_of(rec, desk)}"
    r = done[0]
    assert len(r.paused_spans) == 1, r.paused_spans
    span = r.paused_spans[0]
    start = span.start_offset.seconds + span.start_offset.nanos / 1e9
    end = span.end_offset.seconds + span.end_offset.nanos / 1e9
    wall = agent_holder["resumed"][1] - agent_holder["paused"][1]
    assert abs((end - start) - wall) <= 0.5, (start, end, wall)

    url = rec.stub.CreatePlaybackUrl(rec.r.CreatePlaybackUrlRequest(name=r.name), metadata=auth(desk.sup)).url
    status, _, wav = get(url)
    assert status == 200
    left, right = channels(wav)
    # Offsets are whole samples; round, not floor (a float just under a sample's start took
    # the unpaused sample before it).
    a, b = round(start * 8000), round(end * 8000)
    # Inside the span: digital silence on both channels (not the tones quietly, nothing).
    assert max(map(abs, left[a:b])) == 0 and max(map(abs, right[a:b])) == 0, "audio inside the paused span"
    window = 800
    before = [at for at in range(2400, a - window - 2400, window)]
    after = [at for at in range(b + 2400, len(left) - window - 2400, window)]
    assert before and after, (len(left), a, b)
    for part, name in ((before, "before"), (after, "after")):
        caller = sum(dominant(left[at:at + window], CALLER_HZ, (AGENT_HZ,)) for at in part)
        agent = sum(dominant(right[at:at + window], AGENT_HZ, (CALLER_HZ,)) for at in part)
        assert caller >= 0.9 * len(part) and agent >= 0.9 * len(part), (name, caller, agent, len(part))
    print(f"paused {end - start:.2f} s from {start:.2f} s; silence inside, tones in {len(before)} windows before "
          f"and {len(after)} after")


def test_a_call_recorded_on_demand_is_recorded_from_the_agents_start(m, desk, rec, tmp_path):
    """`recording.voice: on_demand`: the call connects with its recording off
    (`recording_paused`) and nothing is recorded; 3 s later the agent starts it (sessions'
    ResumeRecording, the desktop's "Start recording"): the one recording runs from that moment
    to the end of the call, caller left and agent right, no paused span."""
    from test_recording import channels, get

    seen = {}
    stop = threading.Event()

    def starter():
        while not stop.is_set() and not any(s == m.s.CONTACT_STATE_CONNECTED for s, _ in desk.states):
            time.sleep(0.05)
        agent = next((a for s, a in desk.states if s == m.s.CONTACT_STATE_CONNECTED), "")
        if not agent or stop.is_set():
            return
        seen["connected_paused"] = desk.read().recording_paused
        time.sleep(3.0)
        seen["before_start"] = len(recordings_of(rec, desk))
        token = mint("--tenant", desk.tenant, "--role", "agent", "--agent-id", agent)
        started = desk.contacts.ResumeRecording(m.s.ResumeRecordingRequest(name=desk.name), metadata=auth(token),
                                                timeout=5)
        seen["started"] = (started.recording_paused, time.monotonic())

    t = threading.Thread(target=starter, daemon=True)
    t.start()
    try:
        recorded_call(m, desk, tmp_path, "odin", recording="on_demand")
        ended_at = time.monotonic()
    finally:
        stop.set()
        t.join(10)
    assert seen.get("connected_paused") is True, seen
    assert seen.get("before_start") == 0, "nothing recorded before the agent's start"
    assert seen.get("started", (None,))[0] is False, seen
    connected = connected_seconds(m, desk)
    done = []
    assert wait_for(lambda: (done.extend(r for r in recordings_of(rec, desk)
                                         if r.state == rec.r.RECORDING_STATE_COMPLETE) or bool(done)), 20), \
        f"no complete recording: {recordings_of(rec, desk)}"
    assert len(recordings_of(rec, desk)) == 1
    r = done[0]
    duration = r.duration.seconds + r.duration.nanos / 1e9
    since_start = ended_at - seen["started"][1]
    # From the start to the end of the call: the watcher's poll and sipp's exit bound it.
    assert since_start - 2.0 <= duration <= since_start + 0.5, (duration, since_start, connected)
    assert duration <= connected - 2.5, (duration, connected)
    assert list(r.paused_spans) == [], "the time before the start is not a paused span: it is not there"
    url = rec.stub.CreatePlaybackUrl(rec.r.CreatePlaybackUrlRequest(name=r.name), metadata=auth(desk.sup)).url
    status, _, wav = get(url)
    assert status == 200
    left, right = channels(wav)
    window = 800
    inner = [at for at in range(2400, len(left) - window - 2400, window)]
    assert len(inner) >= 15, duration
    caller = sum(dominant(left[at:at + window], CALLER_HZ, (AGENT_HZ,)) for at in inner)
    agent = sum(dominant(right[at:at + window], AGENT_HZ, (CALLER_HZ,)) for at in inner)
    assert caller >= 0.9 * len(inner) and agent >= 0.9 * len(inner), (caller, agent, len(inner))
    print(f"on demand: started {since_start:.2f} s before the end, recorded {duration:.2f} s of {connected:.2f} s connected")


def test_recording_killed_mid_call_keeps_what_it_had_and_the_call_goes_on(m, desk, rec, tmp_path):
    """The suite's recording process is killed with SIGKILL 3 s into a recorded call and
    started again a second later (as a kubelet would): the call is heard both ways to its end
    all the same; the restarted recording finishes the cut recording from its spool as
    INTERRUPTED, with the seconds it had, caller left and agent right; media reopens the
    call's recording once the service is back, so the rest of the call is a second, complete
    recording of the same contact; the stream media opens for the next call records it
    complete."""
    from test_recording import channels, get

    pidf, log = _services_process("recording")
    pid = int(pidf.read_text())
    env = dict(v.split("=", 1) for v in pathlib.Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
    killed = {}

    def killer(stop):
        while not stop.is_set() and not any(s == m.s.CONTACT_STATE_CONNECTED for s, _ in desk.states):
            time.sleep(0.05)
        if stop.is_set():
            return
        time.sleep(3.0)
        os.kill(pid, signal.SIGKILL)
        killed["at"] = time.monotonic()
        wait_for(lambda: not pathlib.Path(f"/proc/{pid}").exists(), 10)
        time.sleep(1.0)
        with open(log, "ab") as out:
            proc = subprocess.Popen([str(BIN / "centralita-recording")], env=env, stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        pidf.write_text(f"{proc.pid}\n")
        killed["restarted"] = proc.pid

    stop = threading.Event()
    t = threading.Thread(target=killer, args=(stop,), daemon=True)
    t.start()
    try:
        # recorded_call asserts both parties heard each other (the call outlived the kill).
        # 22 s: the restarted service takes up to ~10 s to serve on the loaded suite machine,
        # and the rest of the call must outlast that to be recorded.
        recorded_call(m, desk, tmp_path, "kim", seconds=22)
    finally:
        stop.set()
        t.join(15)
    assert "restarted" in killed, killed
    first = desk.name

    def interrupted():
        try:
            return [r for r in recordings_of(rec, desk) if r.state == rec.r.RECORDING_STATE_INTERRUPTED]
        except grpc.RpcError:
            return []

    assert wait_for(interrupted, 60), f"no interrupted recording: {recordings_of(rec, desk)}"
    r = interrupted()[0]
    duration = r.duration.seconds + r.duration.nanos / 1e9
    # About the 3 s before the kill (chunks of at most 0.5 s, synced per sealed segment).
    assert 1.5 <= duration <= 4.5, duration
    url = rec.stub.CreatePlaybackUrl(rec.r.CreatePlaybackUrlRequest(name=r.name), metadata=auth(desk.sup)).url
    status, _, wav = get(url)
    assert status == 200
    left, right = channels(wav)
    window = 800
    inner = [at for at in range(0, len(left) - window + 1, window) if 2400 <= at <= len(left) - window - 2400]
    assert inner, len(left)
    assert sum(dominant(left[at:at + window], CALLER_HZ, (AGENT_HZ,)) for at in inner) >= 0.9 * len(inner)
    assert sum(dominant(right[at:at + window], AGENT_HZ, (CALLER_HZ,)) for at in inner) >= 0.9 * len(inner)

    # Media reopened the call's recording once the restarted service answered: the rest of
    # the call is a second recording of the same contact, complete, caller left, agent right.
    rest = []
    assert wait_for(lambda: (rest.extend(x for x in recordings_of(rec, desk)
                                         if x.state == rec.r.RECORDING_STATE_COMPLETE) or bool(rest)), 30), \
        f"the rest of the call was not recorded: {recordings_of(rec, desk)}"
    after = rest[0].duration.seconds + rest[0].duration.nanos / 1e9
    # The call lasted 22 s; the kill came 3 s in and the service was back one to ten seconds
    # later: what is left is at most ~18 s, and at least a second of it was recorded.
    assert 1.0 <= after <= 18.0, (after, duration)
    url = rec.stub.CreatePlaybackUrl(rec.r.CreatePlaybackUrlRequest(name=rest[0].name), metadata=auth(desk.sup)).url
    status, _, wav = get(url)
    assert status == 200
    left, right = channels(wav)
    windows = [at for at in range(0, len(left) - window + 1, window) if 1600 <= at <= len(left) - window - 1600]
    assert windows, len(left)
    assert sum(dominant(left[at:at + window], CALLER_HZ, (AGENT_HZ,)) for at in windows) >= 0.8 * len(windows)
    assert sum(dominant(right[at:at + window], AGENT_HZ, (CALLER_HZ,)) for at in windows) >= 0.8 * len(windows)
    print(f"recording killed mid-call: {duration:.2f} s kept (interrupted), the rest {after:.2f} s reopened")

    # The next call is recorded whole by the restarted service.
    desk.states.clear()
    desk.times.clear()
    recorded_call(m, desk, tmp_path, "kit")
    assert desk.name != first
    done = []
    assert wait_for(lambda: (done.extend(r for r in recordings_of(rec, desk)
                                         if r.state == rec.r.RECORDING_STATE_COMPLETE) or bool(done)), 30), \
        f"no complete recording of the next call: {recordings_of(rec, desk)}"
