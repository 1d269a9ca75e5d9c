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

What the trunk sees (the callers of A and B): no BYE (the process that held the dialogs is
gone; their RTP just stops); their own BYE later reaches the restarted process, which has
no such dialog and answers `481 Call/Transaction Does Not Exist` (the sipp scenario
`caller_media_lost.xml` expects it). The agent's phone stops getting audio and hangs up
after its RTP timeout; its BYE gets the same 481.
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
from test_voice import SCENARIOS, SIPP, media_admin_port
from test_voice_agents import AGENT_HZ, BARESIP, CALLER_HZ, MUSIC_HZ, SOX, Baresip, CallerAudio, windows_with

pytestmark = pytest.mark.skipif(None in (SIPP, BARESIP, SOX), reason="needs sipp, baresip and sox")

LOST = "media lost the call"
LEASE_SECONDS = 6
# The test's own media process takes RTP ports outside the runs' ranges (dev 20000-20999,
# e2e 21000-21999) and outside baresip's and sipp's (29000 and up).
RTP_PORTS = os.environ.get("CENTRALITA_CRASH_RTP_PORTS", "24400-24499")


def manifest(tenant, number, agent, phone_uri):
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
      - {{ name: carrier, sources: ["127.0.0.1"] }}
    phones:
      - {{ agentId: {agent}, uri: "{phone_uri}" }}
"""


def call(sip_port, scenario, number, caller, hold_ms, rtp_port):
    """sipp as the trunk calling media at `sip_port` (in the background)."""
    local, media = free_port(), free_port()
    LOGS.mkdir(parents=True, exist_ok=True)
    err = LOGS / f"sipp-{scenario}-{local}.log"
    args = [SIPP, f"127.0.0.1:{sip_port}", "-sf", str(SCENARIOS / f"{scenario}.xml"), "-s", number,
            "-key", "caller", caller, "-key", "rtp_port", str(rtp_port), "-i", "127.0.0.1", "-mi", "127.0.0.1",
            "-p", str(local), "-mp", str(media), "-m", "1", "-d", str(hold_ms), "-nostdin", "-trace_err",
            "-error_file", str(err), "-timeout", "90s", "-timeout_error"]
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
    tenant, agent = f"voice-crash-{run}", f"alice-{run}"
    number = f"+3494{random.randrange(10_000_000, 99_999_999)}"
    sip_port, grpc_port, admin_port = free_port(), free_port(), free_port()
    replica = f"media-crash-{run}"
    env = {
        "CENTRALITA_MEDIA_ROLES": "voice",
        "CENTRALITA_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "CENTRALITA_ADMIN_ADDR": f"127.0.0.1:{admin_port}",
        "CENTRALITA_SIP_ADDR": f"127.0.0.1:{sip_port}",
        "CENTRALITA_RTP_PORTS": RTP_PORTS,
        "CENTRALITA_SESSIONS_ENDPOINT": f"http://{endpoints()['sessions']}",
        "CENTRALITA_JWT_PUBLIC_KEY_FILE": str(DEV_PUB),
        "CENTRALITA_JWT_PRIVATE_KEY_FILE": str(DEV_KEY),
        "CENTRALITA_REDIS_URL": os.environ.get("CENTRALITA_REDIS_URL", "redis://127.0.0.1:6390"),
        # A replica of its own (the suite's media is another): its contacts-topic group and
        # its name in the call registry, the same after the restart, as a pod's name is.
        "HOSTNAME": replica,
        "CENTRALITA_KAFKA_GROUP_INSTANCE_ID": replica,
        "CENTRALITA_VOICE_LEASE": f"{LEASE_SECONDS}s",
        "CENTRALITA_VOICE_SWEEP_INTERVAL": "1s",
        "CENTRALITA_RTP_TIMEOUT_SECS": "120",
    }
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"media-{replica}.log"

    def start():
        p = spawn([str(BIN / "centralita-media")], env, log)
        assert wait_for(lambda: http_get(admin_port, "/readyz")[0] == 200, 90), log.read_text()[-3000:]
        return p

    sessions = grpc.insecure_channel(endpoints()["sessions"])
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)
    sup = mint("--tenant", tenant, "--role", "supervisor")
    phone = phone_that_hangs_up_without_audio(tmp_path, "alice")
    audio = {k: CallerAudio() for k in "ABC"}
    callers = {k: f"+346{random.randrange(10_000_000, 99_999_999)}" for k in "ABC"}
    procs = {}
    try:
        (tmp_path / "tenant.yaml").write_text(manifest(tenant, number, agent, phone.uri))
        cli("admin", "tenant", "apply", "-f", str(tmp_path / "tenant.yaml"))
        assert sessions_knows_tenant(contacts, s, sup), "sessions never learned the tenant"
        upsert_voice_agents(agents, s, m.t.CHANNEL_VOICE, tenant, [agent], mint("--role", "bpo_admin"))
        token = mint("--tenant", tenant, "--role", "agent", "--agent-id", agent)
        agents.SignIn(s.SignInRequest(name=f"agents/{agent}", available=True), metadata=auth(token), timeout=10)
        media = start()

        names = {}

        def contact(key):
            """The call's contact: found by its caller's number among the open ones, then
            read by name (a contact over leaves the open list)."""
            if key in names:
                return contacts.GetContact(s.GetContactRequest(name=names[key]), metadata=auth(sup), timeout=5)
            for c in contacts.ListContacts(s.ListContactsRequest(page_size=100), metadata=auth(sup),
                                           timeout=5).contacts:
                if any(i.value == callers[key] for i in c.customer_identities):
                    names[key] = c.name
                    return c
            return None

        def state_of(key):
            c = contact(key)
            return (c.state, c.agent_id) if c else None

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
        time.sleep(1.0)
        # Nothing of the dead process ends its calls: both contacts are open still.
        assert state_of("A") == (s.CONTACT_STATE_CONNECTED, agent)
        assert state_of("B") == (s.CONTACT_STATE_QUEUED, "")

        media = start()
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
