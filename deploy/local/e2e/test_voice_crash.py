"""A media process killed with `kill -9` in the middle of calls leaves no contact open.

The test runs a voice-only media process of its own (its own SIP port, RTP ports, admin
port, replica name `media-crash-<run>`, a 6 s call lease) beside the suite's services, and
calls it with independent peers: sipp as the carrier trunk (the caller's audio is the
test's own RTP endpoint sending a 440 Hz tone), baresip as the agent's phone (auto-answer,
a 1000 Hz tone, `rtp_timeout 3`: it hangs up a call whose audio stopped).

1. Call A is answered, offered to the only agent and bridged to the agent's phone
   (CONNECTED; the caller hears the agent's tone). Call B is answered and waits in the
   queue (QUEUED: the agent is busy).
2. media is killed with SIGKILL: nothing of it ends the calls; both contacts are still
   open in sessions.
3. It is started again with the same settings. Within the lease and a sweep, both
   contacts are ended in sessions with the cause `media lost the call`: A goes to
   after-contact work (then closes), B is abandoned; the registry's metric counts the 2.
4. The agent is free again: a new call C is answered, offered to the agent, the phone
   answers (CONNECTED to the agent), and the caller's hang-up ends it with the cause
   `caller hung up`.

Killed and not restarted, the dead process's call is ended the same way by another
replica (the suite's media) once its lease has run out.

What the trunk sees (the callers of A and B): no BYE (the process that held the dialogs is
gone; their RTP just stops); their own BYE later reaches the restarted process, which has
no such dialog and answers `481 Call/Transaction Does Not Exist` (the sipp scenario
`caller_media_lost.xml` expects it). The agent's phone stops getting audio and hangs up
after its RTP timeout; its BYE gets the same 481.

The drain (SIGTERM, as Kubernetes stops a pod): with a call bridged, the process is told to
stop; `/readyz` turns not ready at once, a new INVITE gets `503`, the call goes on with
audio both ways through the drain window (`CENTRALITA_SIP_DRAIN`, 8 s here), then the
caller and the phone get a BYE, the contact ends with the cause `drained`, and the process
exits well within its shutdown timeout, releasing its call lease.
"""
import os
import random
import re
import signal
import subprocess
import time
import uuid

import grpc
import pytest

from conftest import BIN, DEV_KEY, DEV_PUB, LOGS, auth, cli, endpoints, free_port, http_get, mint, \
    sessions_knows_tenant, upsert_voice_agents, wait_for
from test_voice import SCENARIOS, SIPP, media_admin_port, ulaw_to_linear
from test_voice_agents import AGENT_HZ, BARESIP, CALLER_HZ, MUSIC_HZ, SOX, Baresip, CallerAudio, windows_with

pytestmark = pytest.mark.skipif(None in (SIPP, BARESIP, SOX), reason="needs sipp, baresip and sox")

LOST = "media lost the call"
LEASE_SECONDS = 6
# The test's own media process takes RTP ports outside the runs' ranges (dev 20000-20999,
# e2e 21000-21999) and outside baresip's and sipp's (29000 and up).
RTP_PORTS = os.environ.get("CENTRALITA_CRASH_RTP_PORTS", "24400-24499")


def manifest(tenant, number, agent, phone_uri, sources=("127.0.0.1",)):
    trunk_sources = ", ".join(f'"{a}"' for a in sources)
    phones = f"""
    phones:
      - {{ agentId: {agent}, uri: "{phone_uri}" }}""" if phone_uri else ""
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: Voice crash {tenant}
  channels: [voice]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing:
    queues:
      - {{ id: support, offerTimeoutSeconds: 20, afterContactWorkSeconds: 3 }}
  voice:
    numbers:
      - {{ number: "{number}", queue: support }}
    trunks:
      - {{ name: carrier, sources: [{trunk_sources}] }}{phones}
"""


def call(sip_port, scenario, number, caller, hold_ms, rtp_port, source="127.0.0.1", extra=()):
    """sipp as the trunk calling media at `sip_port` (in the background)."""
    local, media = free_port(), free_port()
    LOGS.mkdir(parents=True, exist_ok=True)
    err = LOGS / f"sipp-{scenario}-{local}.log"
    args = [SIPP, f"127.0.0.1:{sip_port}", "-sf", str(SCENARIOS / f"{scenario}.xml"), "-s", number,
            "-key", "caller", caller, "-key", "rtp_port", str(rtp_port), "-i", source, "-mi", source,
            "-p", str(local), "-mp", str(media), "-d", str(hold_ms), "-nostdin", "-trace_err",
            "-error_file", str(err), "-timeout", "90s", "-timeout_error", *(extra or ("-m", "1"))]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), err


def phone_that_hangs_up_without_audio(tmp_path, name):
    """A baresip agent phone (test_voice_agents' Baresip) that hangs up a call after 3 s
    without RTP, as a desk phone whose far end vanished would."""
    phone = Baresip(tmp_path, name)
    phone.close()
    with open(phone.dir / "config", "a") as f:
        f.write("rtp_timeout 3\n")
    phone.proc = subprocess.Popen([BARESIP, "-f", str(phone.dir)], stdin=subprocess.DEVNULL,
                                  stdout=open(phone.log, "w"), stderr=subprocess.STDOUT)
    assert wait_for(lambda: "baresip is ready" in phone.log.read_text(), 10), phone.log.read_text()
    return phone


def recovered(admin_port):
    """centralita_media_voice_calls_recovered_total on a media admin port (0 if absent)."""
    status, body = http_get(admin_port, "/metrics")
    if status != 200:
        return 0
    found = re.search(r"^centralita_media_voice_calls_recovered_total(?:\{[^}]*\})? (\d+)", body, re.M)
    return int(found.group(1)) if found else 0


class OwnMedia:
    """A voice-only media process of the test's own beside the suite's services, startable
    again with the same settings (a pod's restart)."""

    def __init__(self, spawn, run, **extra):
        self.spawn = spawn
        self.sip_port, grpc_port, self.admin_port = free_port(), free_port(), free_port()
        self.replica = f"media-crash-{run}"
        self.env = {
            "CENTRALITA_MEDIA_ROLES": "voice",
            "CENTRALITA_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "CENTRALITA_ADMIN_ADDR": f"127.0.0.1:{self.admin_port}",
            "CENTRALITA_SIP_ADDR": f"127.0.0.1:{self.sip_port}",
            "CENTRALITA_RTP_PORTS": RTP_PORTS,
            "CENTRALITA_SESSIONS_ENDPOINT": f"http://{endpoints()['sessions']}",
            "CENTRALITA_JWT_PUBLIC_KEY_FILE": str(DEV_PUB),
            "CENTRALITA_JWT_PRIVATE_KEY_FILE": str(DEV_KEY),
            "CENTRALITA_REDIS_URL": os.environ.get("CENTRALITA_REDIS_URL", "redis://127.0.0.1:6390"),
            # A replica of its own (the suite's media is another): its contacts-topic group
            # and its name in the call registry, the same after a restart, as a pod's name is.
            "HOSTNAME": self.replica,
            "CENTRALITA_KAFKA_GROUP_INSTANCE_ID": self.replica,
            "CENTRALITA_VOICE_LEASE": f"{LEASE_SECONDS}s",
            "CENTRALITA_VOICE_SWEEP_INTERVAL": "1s",
            "CENTRALITA_RTP_TIMEOUT_SECS": "120",
            **extra,
        }
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = LOGS / f"media-{self.replica}.log"
        self.proc = None

    def start(self):
        self.proc = self.spawn([str(BIN / "centralita-media")], self.env, self.log)
        assert wait_for(lambda: http_get(self.admin_port, "/readyz")[0] == 200, 90), self.log.read_text()[-3000:]
        return self.proc


class Desk:
    """The test's tenant (one number, the queue `support`, trunks from `sources`, one agent
    whose fixed phone is `phone_uri`, signed in; no phone: no agent) and its contacts found
    by caller."""

    def __init__(self, m, tmp_path, run, phone_uri, sources=("127.0.0.1",)):
        self.s = m.s
        self.tenant, self.agent = f"voice-crash-{run}", f"alice-{run}"
        self.number = f"+3494{random.randrange(10_000_000, 99_999_999)}"
        sessions = grpc.insecure_channel(endpoints()["sessions"])
        agents, self.contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)
        self.sup = mint("--tenant", self.tenant, "--role", "supervisor")
        (tmp_path / "tenant.yaml").write_text(manifest(self.tenant, self.number, self.agent, phone_uri, sources))
        cli("admin", "tenant", "apply", "-f", str(tmp_path / "tenant.yaml"))
        assert sessions_knows_tenant(self.contacts, self.s, self.sup), "sessions never learned the tenant"
        self.names = {}
        if not phone_uri:
            return
        upsert_voice_agents(agents, self.s, m.t.CHANNEL_VOICE, self.tenant, [self.agent], mint("--role", "bpo_admin"))
        token = mint("--tenant", self.tenant, "--role", "agent", "--agent-id", self.agent)
        agents.SignIn(self.s.SignInRequest(name=f"agents/{self.agent}", available=True), metadata=auth(token),
                      timeout=10)

    def open_contacts(self):
        return list(self.contacts.ListContacts(self.s.ListContactsRequest(page_size=100), metadata=auth(self.sup),
                                               timeout=5).contacts)

    def contact(self, caller):
        """The call's contact: found by its caller's number among the open ones, then read by
        name (a contact over leaves the open list)."""
        s = self.s
        if caller in self.names:
            return self.contacts.GetContact(s.GetContactRequest(name=self.names[caller]), metadata=auth(self.sup),
                                            timeout=5)
        for c in self.contacts.ListContacts(s.ListContactsRequest(page_size=100), metadata=auth(self.sup),
                                            timeout=5).contacts:
            if any(i.value == caller for i in c.customer_identities):
                self.names[caller] = c.name
                return c
        return None

    def state_of(self, caller):
        c = self.contact(caller)
        return (c.state, c.agent_id) if c else None


@pytest.fixture(scope="module")
def m(pb):
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        s = sessions_pb2
        sg = sessions_pb2_grpc
        t = pb.tenancy

    return M


def test_a_media_process_killed_mid_call_leaves_no_contact_open_and_new_calls_work(m, spawn, tmp_path):
    s = m.s
    run = uuid.uuid4().hex[:8]
    media_proc = OwnMedia(spawn, run)
    phone = phone_that_hangs_up_without_audio(tmp_path, "alice")
    audio = {k: CallerAudio() for k in "ABC"}
    callers = {k: f"+346{random.randrange(10_000_000, 99_999_999)}" for k in "ABC"}
    procs = {}
    try:
        desk = Desk(m, tmp_path, run, phone.uri)
        agent, number, sip_port, admin_port = desk.agent, desk.number, media_proc.sip_port, media_proc.admin_port
        media = media_proc.start()

        def contact(key):
            return desk.contact(callers[key])

        def state_of(key):
            return desk.state_of(callers[key])

        # A: bridged to the agent's phone, heard; B: waiting in the queue.
        procs["A"], _ = call(sip_port, "caller_media_lost", number, callers["A"], 30_000, audio["A"].port)
        assert wait_for(lambda: state_of("A") == (s.CONTACT_STATE_CONNECTED, agent), 20), state_of("A")
        assert wait_for(lambda: windows_with(audio["A"].heard(), AGENT_HZ, (CALLER_HZ,) + MUSIC_HZ) >= 5, 10), \
            "the caller hears the agent before the crash"
        procs["B"], _ = call(sip_port, "caller_media_lost", number, callers["B"], 30_000, audio["B"].port)
        assert wait_for(lambda: state_of("B") == (s.CONTACT_STATE_QUEUED, ""), 15), state_of("B")

        before = recovered(media_admin_port())
        os.kill(media.pid, signal.SIGKILL)
        media.wait(10)
        killed = time.monotonic()
        # The callers hear silence; their trunks stop sending RTP to the dead process's ports
        # (the restarted one may bind the same ports and would latch on whoever sends first).
        for k in "AB":
            audio[k].close()
        time.sleep(1.0)
        # Nothing of the dead process ends its calls: both contacts are open still.
        assert state_of("A") == (s.CONTACT_STATE_CONNECTED, agent)
        assert state_of("B") == (s.CONTACT_STATE_QUEUED, "")

        media = media_proc.start()
        restarted = time.monotonic() - killed

        def ended():
            a, b = contact("A"), contact("B")
            return (a.state in (s.CONTACT_STATE_AFTER_CONTACT_WORK, s.CONTACT_STATE_CLOSED) and a.end_cause == LOST
                    and b.state == s.CONTACT_STATE_ABANDONED and b.end_cause == LOST)

        # Within the lease and a sweep of the restart (the restarted replica sweeps its
        # predecessor at once; another replica would once the lease is over).
        assert wait_for(ended, LEASE_SECONDS + 10), (contact("A"), contact("B"))
        took = time.monotonic() - killed
        print(f"media killed; ready again after {restarted:.1f}s; both contacts ended after {took:.1f}s")
        a, b = contact("A"), contact("B")
        assert a.agent_id == agent and a.end_time.seconds > 0 and b.end_time.seconds > 0
        # Counted once, by whichever replica swept (this one, or the suite's media).
        assert wait_for(lambda: recovered(admin_port) + recovered(media_admin_port()) - before == 2, 10), \
            (recovered(admin_port), recovered(media_admin_port()), before)

        # The agent is free again once after-contact work is over (3 s), and the phone has
        # hung up its dead call (no audio for 3 s).
        assert wait_for(lambda: contact("A").state == s.CONTACT_STATE_CLOSED, 15), contact("A")
        assert wait_for(lambda: phone.log.read_text().count("terminated") >= 1, 15), phone.log.read_text()[-2000:]
        procs["C"], _ = call(sip_port, "queued_hangup", number, callers["C"], 8_000, audio["C"].port)
        assert wait_for(lambda: state_of("C") == (s.CONTACT_STATE_CONNECTED, agent), 20), state_of("C")
        assert wait_for(lambda: windows_with(audio["C"].heard(), AGENT_HZ, (CALLER_HZ,) + MUSIC_HZ) >= 5, 10), \
            "the new call is heard both ways after the restart"
        out, _ = procs["C"].communicate(timeout=30)
        assert procs["C"].returncode == 0, out[-2000:]
        assert wait_for(lambda: contact("C").end_cause == "caller hung up", 10), contact("C")

        # The old calls' trunks: their BYE reached the restarted process and got 481.
        for k in "AB":
            out, _ = procs[k].communicate(timeout=60)
            assert procs[k].returncode == 0, f"call {k}: {out[-2000:]}"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        for a in audio.values():
            a.close()
        phone.close()


def test_a_draining_media_refuses_new_calls_keeps_the_call_up_then_ends_it_drained(m, spawn, tmp_path):
    s = m.s
    run = uuid.uuid4().hex[:8]
    drain = 8
    media_proc = OwnMedia(spawn, run, CENTRALITA_SHUTDOWN_TIMEOUT="30s", CENTRALITA_SIP_DRAIN=f"{drain}s")
    phone = Baresip(tmp_path, "alice")
    audio = CallerAudio()
    caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
    proc = None
    try:
        desk = Desk(m, tmp_path, run, phone.uri)
        media = media_proc.start()
        # The caller stays on the line until media hangs up (and answers that BYE).
        proc, _ = call(media_proc.sip_port, "answered_bye_received", desk.number, caller, 0, audio.port)
        assert wait_for(lambda: desk.state_of(caller) == (s.CONTACT_STATE_CONNECTED, desk.agent), 20), \
            desk.state_of(caller)
        assert wait_for(lambda: windows_with(audio.heard(), AGENT_HZ, (CALLER_HZ,) + MUSIC_HZ) >= 5, 10)

        media.send_signal(signal.SIGTERM)
        term = time.monotonic()
        # Not ready at once (the Service stops sending new calls)…
        assert wait_for(lambda: http_get(media_proc.admin_port, "/readyz")[0] == 503, 2), \
            http_get(media_proc.admin_port, "/readyz")
        # …a new INVITE gets 503 and creates nothing…
        other = f"+346{random.randrange(10_000_000, 99_999_999)}"
        refused, err = call(media_proc.sip_port, "refused_503", desk.number, other, 0, 9)
        out, _ = refused.communicate(timeout=20)
        assert refused.returncode == 0, f"{out[-2000:]} {err.read_text() if err.exists() else ''}"
        assert desk.contact(other) is None
        # …and the call in progress goes on, audio both ways, until the window closes.
        assert desk.state_of(caller) == (s.CONTACT_STATE_CONNECTED, desk.agent)
        assert proc.poll() is None, "the caller is still on the line"
        time.sleep(max(0.0, term + drain - 1.5 - time.monotonic()))
        during = [ulaw for t, pt, _, payload in audio.received if term + 0.5 < t < term + drain - 1.5 and pt == 0
                  for ulaw in payload]
        heard = windows_with([ulaw_to_linear(u) for u in during], AGENT_HZ, (CALLER_HZ,) + MUSIC_HZ)
        assert heard >= (drain - 2) * 5 * 0.8, f"the caller heard the agent in {heard} windows while draining"

        # The window closes: BYE to both sides, the contact ended `drained`, the process out.
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, f"the caller got no BYE: {out[-2000:]}"
        ended_after = time.monotonic() - term
        assert drain - 1 <= ended_after <= drain + 6, ended_after
        assert wait_for(lambda: desk.contact(caller).end_cause == "drained", 10), desk.contact(caller)
        assert desk.contact(caller).state in (s.CONTACT_STATE_AFTER_CONTACT_WORK, s.CONTACT_STATE_CLOSED)
        assert wait_for(lambda: "terminated" in phone.log.read_text(), 10), "the phone got its BYE"
        assert media.wait(30) == 0
        assert time.monotonic() - term < 30, "within the shutdown timeout"
        assert "voice calls registry: lease released" in media_proc.log.read_text(), "its lease is given back"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        audio.close()
        phone.close()


def test_a_dead_replicas_calls_are_ended_by_another_replica_once_its_lease_runs_out(m, spawn, tmp_path):
    """Killed and not restarted (a pod lost with its node): the suite's own media replica,
    another incarnation in the same deployment, ends the call once the dead one's lease
    (4 s here) has run out, within its sweep interval (5 s by default)."""
    s = m.s
    run = uuid.uuid4().hex[:8]
    media_proc = OwnMedia(spawn, run, CENTRALITA_VOICE_LEASE="4s")
    audio = CallerAudio()
    caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
    proc = None
    try:
        desk = Desk(m, tmp_path, run, None)
        media = media_proc.start()
        proc, _ = call(media_proc.sip_port, "caller_media_lost", desk.number, caller, 30_000, audio.port)
        assert wait_for(lambda: desk.state_of(caller) == (s.CONTACT_STATE_QUEUED, ""), 15), desk.state_of(caller)
        before = recovered(media_admin_port())
        os.kill(media.pid, signal.SIGKILL)
        media.wait(10)
        killed = time.monotonic()
        audio.close()
        assert wait_for(lambda: desk.contact(caller).state == s.CONTACT_STATE_ABANDONED, 4 + 5 + 5), \
            desk.contact(caller)
        took = time.monotonic() - killed
        assert took >= 3, f"not before the lease ran out ({took:.1f}s)"
        assert desk.contact(caller).end_cause == LOST
        assert wait_for(lambda: recovered(media_admin_port()) - before == 1, 5), "swept by the suite's replica"
        print(f"media killed, not restarted; the call's contact ended by another replica after {took:.1f}s")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        audio.close()


def test_an_end_cause_is_checked_kept_on_the_contact_and_only_for_its_tenant(m, tmp_path):
    """EndContact's `cause` (new with the call registry): too long or not printable ASCII is
    INVALID_ARGUMENT and ends nothing; another tenant's supervisor cannot end the contact
    whatever the cause; the tenant's own end keeps it as `end_cause`."""
    s = m.s
    run = uuid.uuid4().hex[:8]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    desk, other = Desk(m, tmp_path / "a", run, None), Desk(m, tmp_path / "b", f"{run}x", None)
    channel = mint("--tenant", desk.tenant, "--role", "channel")
    contact = desk.contacts.CreateContact(s.CreateContactRequest(
        contact=s.Contact(channel=m.t.CHANNEL_VOICE, queue="support"), request_id=f"cause-{run}"),
        metadata=auth(channel), timeout=10)
    for bad in ("x" * 65, "line\nbreak", "caf\u00e9"):
        with pytest.raises(grpc.RpcError) as refused:
            desk.contacts.EndContact(s.EndContactRequest(name=contact.name, cause=bad), metadata=auth(desk.sup),
                                     timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
    with pytest.raises(grpc.RpcError) as refused:
        desk.contacts.EndContact(s.EndContactRequest(name=contact.name, cause=LOST), metadata=auth(other.sup),
                                 timeout=10)
    assert refused.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED), refused.value
    still = desk.contacts.GetContact(s.GetContactRequest(name=contact.name), metadata=auth(desk.sup), timeout=10)
    assert (still.state, still.end_cause) == (s.CONTACT_STATE_QUEUED, "")
    ended = desk.contacts.EndContact(s.EndContactRequest(name=contact.name, cause="customer left a voicemail"),
                                     metadata=auth(desk.sup), timeout=10)
    assert (ended.state, ended.end_cause) == (s.CONTACT_STATE_ABANDONED, "customer left a voicemail")
    read = desk.contacts.GetContact(s.GetContactRequest(name=contact.name), metadata=auth(desk.sup), timeout=10)
    assert read.end_cause == "customer left a voicemail"
