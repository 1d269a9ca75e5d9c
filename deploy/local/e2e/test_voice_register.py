"""Agents' phones register with digest authentication, and calls ring the registered phone.

The tenant names a registrar (`spec.voice.registrar`: its SIP domain, also the digest realm,
and the Secret of its agents' HA1 digests); the Secret is the run's secrets directory, as
deploy/local/services.sh mounts it for media (`CENTRALITA_SIP_SECRETS_DIR`), one file per
agent holding `MD5(agent:domain:password)` in hex, computed here with Python's hashlib.

The peers are independent of the platform: **baresip** (Debian) registers through media's
SIP address as its outbound proxy with its own digest code, answers calls by itself with a
1000 Hz tone and records what it hears; a REGISTER client written here over a UDP socket
(the digest of RFC 2617 with hashlib) drives the cases baresip cannot be told to do (a
REGISTER for another tenant's domain, too short an expiry, `Contact: *`). Redis is read with
`redis-cli` (the registration's key and its TTL).

Cases: the right password registers (200, a key with a TTL), and a call routed to that agent
rings the registered baresip, which answers; both parties hear each other (Goertzel per
200 ms window); baresip quitting unregisters (the key is gone); the wrong password is refused
with the same 403 as an unknown agent, and binds nothing; bounds of the expiry (423 with
Min-Expires, a long one shortened), `Expires: 0` and `Contact: *` remove; cross-tenant: tenant
B's agent's credentials (same agent id, B's password) do not register as tenant A's agent,
credentials for B's realm sent to A's domain are challenged again, and A's binding is never
under B's keys; media reports registrations and their ends to sessions, and an agent
signed in without a registered phone is not offered the tenant's calls until its phone
registers (then the waiting call is offered and rings it).
"""
import hashlib
import os
import pathlib
import random
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid

import grpc
import pytest

from conftest import LOGS, auth, cli, http_get, mint, sessions_knows_tenant, upsert_voice_agents, wait_for
from test_voice import SIPP, media_admin_port, queued_call, sip_addr
from test_console import CHROMIUM, SHOTS, console_url, sign_in
from test_voice_agents import AGENT_HZ, BARESIP, CALLER_HZ, MUSIC_HZ, SOX, CallerAudio, _phone_ports, windows_with

REDIS_CLI = shutil.which("redis-cli")
pytestmark = pytest.mark.skipif(None in (SIPP, BARESIP, SOX, REDIS_CLI), reason="needs sipp, baresip, sox, redis-cli")


def secrets_dir():
    """Where media reads the registrars' HA1 files (services.sh: CENTRALITA_SIP_SECRETS_DIR,
    by default the run's secrets directory)."""
    for var in ("CENTRALITA_SIP_SECRETS_DIR", "CENTRALITA_SMS_SECRETS_DIR"):
        if os.environ.get(var):
            return pathlib.Path(os.environ[var])
    data = pathlib.Path(os.environ.get("CENTRALITA_DATA", pathlib.Path(__file__).resolve().parents[3] / ".local"))
    return data / "secrets" / os.environ.get("CENTRALITA_RUN_NAME", "dev")


def redis(*args):
    port = os.environ.get("CENTRALITA_REDIS_PORT", "6390")
    out = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", port, "--no-raw", *args], capture_output=True, text=True,
                         timeout=10, check=True).stdout.strip()
    return out


def binding(tenant, agent):
    """(contact, ttl) of the agent's registration in Redis, or None."""
    key = f"{{t:{tenant}}}:sip:reg:{agent}"
    value = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", os.environ.get("CENTRALITA_REDIS_PORT", "6390"),
                            "GET", key], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    if not value:
        return None
    ttl = int(subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", os.environ.get("CENTRALITA_REDIS_PORT", "6390"),
                              "TTL", key], capture_output=True, text=True, timeout=10, check=True).stdout.strip())
    import json
    return json.loads(value)["contact"], ttl


def registers(outcome):
    """media's count of REGISTERs answered with `outcome`."""
    status, body = http_get(media_admin_port(), "/metrics")
    assert status == 200
    for line in body.splitlines():
        if line.startswith("centralita_media_sip_registers_total{") and f'outcome="{outcome}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no centralita_media_sip_registers_total for {outcome}")


def ha1(user, realm, password):
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()


def registrar_tenant(tenant, number, domain, phones=None):
    phone_lines = "".join(f"\n      - {{ agentId: {a}, uri: \"{u}\" }}" for a, u in (phones or {}).items())
    phone_lines = f"\n    phones:{phone_lines}" if phones else ""
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: Registering desk {tenant}
  channels: [voice]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing:
    queues:
      - {{ id: support, offerTimeoutSeconds: 15 }}
  voice:
    numbers:
      - {{ number: "{number}", queue: support }}
    trunks:
      - {{ name: carrier, sources: ["127.0.0.1"] }}
    registrar: {{ domain: {domain}, credentialsSecret: {tenant}-phones }}{phone_lines}
"""


class Registering:
    """A baresip registering `agent`@`domain` through media (its outbound proxy) with
    `password`; answers by itself with a tone and records what it hears."""

    def __init__(self, tmp, agent, domain, password, hz=AGENT_HZ, regint=60):
        self.port = next(_phone_ports)
        self.dir = tmp / f"baresip-{agent}-{self.port}"
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
        host, port = sip_addr()
        (self.dir / "accounts").write_text(
            f"<sip:{agent}@{domain}>;auth_pass={password};outbound=\"sip:{host}:{port};transport=udp\";"
            f"regint={regint};answermode=auto;audio_codecs=PCMU,PCMA\n")
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = LOGS / f"baresip-reg-{agent}-{self.port}.log"
        self.proc = subprocess.Popen([BARESIP, "-f", str(self.dir)], stdin=subprocess.DEVNULL,
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

    def text(self):
        return self.log.read_text(errors="replace")

    def heard(self):
        import struct
        import wave
        files = sorted(self.rec.glob("*dec*.wav"))
        assert files, f"baresip recorded nothing: {list(self.rec.iterdir())}"
        with wave.open(str(files[-1])) as w:
            raw = w.readframes(w.getnframes())
        return list(struct.unpack(f"<{len(raw) // 2}h", raw))

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Client:
    """A REGISTER client over UDP: sends what it is told, answers challenges with RFC 2617's
    digest (hashlib), and returns the final response's status, reason and headers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.call_id = f"{uuid.uuid4().hex}@127.0.0.1"
        self.cseq = 0

    def close(self):
        self.sock.close()

    def send(self, domain, user, *, contact=None, expires=None, authorization=None, to_domain=None):
        self.cseq += 1
        host, port = sip_addr()
        lines = [
            f"REGISTER sip:{domain} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK{uuid.uuid4().hex}",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{domain}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <sip:{user}@{to_domain or domain}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
        ]
        if contact is not None:
            lines.append(f"Contact: {contact}")
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if authorization is not None:
            lines.append(f"Authorization: {authorization}")
        lines += ["Content-Length: 0", "", ""]
        self.sock.sendto("\r\n".join(lines).encode(), (host, port))
        while True:
            data, _ = self.sock.recvfrom(65535)
            head = data.decode(errors="replace").split("\r\n\r\n")[0].split("\r\n")
            status = int(head[0].split(" ")[1])
            if status >= 200:
                headers = {}
                for h in head[1:]:
                    k, _, v = h.partition(":")
                    headers.setdefault(k.strip().lower(), []).append(v.strip())
                return status, head[0].split(" ", 2)[2], headers

    def register(self, domain, user, password, *, contact=None, expires=None, realm=None):
        """REGISTER, then again with credentials for the challenge's realm (or `realm`)."""
        status, reason, headers = self.send(domain, user, contact=contact, expires=expires)
        if status != 401:
            return status, reason, headers
        challenge = headers["www-authenticate"][0]
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
        assert challenge.startswith("Digest ") and params.get("qop") == "auth" and params.get("algorithm") == "MD5", \
            challenge
        realm = realm or params["realm"]
        uri, cnonce, nc = f"sip:{domain}", uuid.uuid4().hex[:16], "00000001"
        ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1(user, realm, password)}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}".encode()
                               ).hexdigest()
        authorization = (f'Digest username="{user}", realm="{realm}", nonce="{params["nonce"]}", uri="{uri}", '
                         f'response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"')
        self.last_authorization = authorization
        return self.send(domain, user, contact=contact, expires=expires, authorization=authorization)


@pytest.fixture(scope="module")
def m(pb):
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    from conftest import endpoints

    class M:
        s = sessions_pb2
        sg = sessions_pb2_grpc
        t = pb.tenancy

    M.endpoints = staticmethod(endpoints)
    return M


@pytest.fixture
def desk(m, tmp_path):
    """A tenant of its own with a registrar; `setup(passwords, phones)` writes the agents'
    HA1 files, applies the manifest and creates the agents."""
    run = uuid.uuid4().hex[:8]
    tenant = f"voice-reg-{run}"
    domain = f"{tenant}.sip.test"
    number = f"+3494{random.randrange(10_000_000, 99_999_999)}"
    sessions = grpc.insecure_channel(m.endpoints()["sessions"])
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)
    bpo = mint("--role", "bpo_admin")
    sup = mint("--tenant", tenant, "--role", "supervisor")
    secret = secrets_dir() / f"{tenant}-phones"

    class Desk:
        pass

    d = Desk()
    d.tenant, d.domain, d.number, d.contacts, d.sup = tenant, domain, number, contacts, sup
    d.agents = agents

    def setup(passwords, phones=None, agent_ids=None):
        secret.mkdir(parents=True, exist_ok=True)
        for agent, password in passwords.items():
            (secret / agent).write_text(ha1(agent, domain, password) + "\n")
        path = tmp_path / f"{tenant}.yaml"
        path.write_text(registrar_tenant(tenant, number, domain, phones))
        cli("admin", "tenant", "apply", "-f", str(path))
        assert sessions_knows_tenant(contacts, m.s, sup), "sessions never learned the tenant"
        upsert_voice_agents(agents, m.s, m.t.CHANNEL_VOICE, tenant, agent_ids or list(passwords), bpo)
        # Media learns the registrar from the tenants topic like sessions.
        time.sleep(1.0)

    def sign_in(agent_id):
        token = mint("--tenant", tenant, "--role", "agent", "--agent-id", agent_id)
        agents.SignIn(m.s.SignInRequest(name=f"agents/{agent_id}", available=True), metadata=auth(token), timeout=10)

    def contact_of(caller):
        for c in contacts.ListContacts(m.s.ListContactsRequest(page_size=100), metadata=auth(sup),
                                       timeout=5).contacts:
            if any(i.value == caller for i in c.customer_identities):
                return c
        return None

    d.setup, d.sign_in, d.contact_of = setup, sign_in, contact_of
    d.states = []

    def watch(caller, stop):
        while not stop.is_set():
            try:
                c = contact_of(caller)
            except grpc.RpcError:
                c = None
            if c is not None and (not d.states or d.states[-1] != (c.state, c.agent_id)):
                d.states.append((c.state, c.agent_id))
            time.sleep(0.1)

    def watching(caller):
        stop = threading.Event()
        t = threading.Thread(target=watch, args=(caller, stop), daemon=True)
        t.start()
        return stop, t

    d.watching = watching
    yield d
    shutil.rmtree(secret, ignore_errors=True)


def test_a_registered_phone_is_rung_answers_and_both_parties_hear_each_other(m, desk, tmp_path):
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    desk.setup({alice: "alice-Secret-1"})
    phone = Registering(tmp_path, alice, desk.domain, "alice-Secret-1")
    caller_audio = CallerAudio()
    caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
    try:
        assert wait_for(lambda: binding(desk.tenant, alice) is not None, 15), phone.text()[-3000:]
        contact, ttl = binding(desk.tenant, alice)
        assert 0 < ttl <= 60, ttl
        assert contact.startswith("sip:") and f"127.0.0.1:{phone.port}" in contact, contact

        desk.sign_in(alice)
        stop, watcher = desk.watching(caller)
        proc, err = queued_call(desk.number, caller, 9000, caller_audio.port)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"sipp: {out[-2000:]} {err.read_text() if err.exists() else ''}"
        assert wait_for(lambda: desk.states and desk.states[-1][0] in (
            m.s.CONTACT_STATE_AFTER_CONTACT_WORK, m.s.CONTACT_STATE_CLOSED), 10), desk.states
        stop.set()
        watcher.join(5)
        assert (m.s.CONTACT_STATE_CONNECTED, alice) in desk.states, desk.states
        assert windows_with(caller_audio.heard(), AGENT_HZ, (CALLER_HZ,) + MUSIC_HZ) >= 10, \
            "the caller heard the registered phone's tone for at least 2 s"
        assert windows_with(phone.heard(), CALLER_HZ, (AGENT_HZ,) + MUSIC_HZ) >= 10, \
            "the registered phone heard the caller's tone for at least 2 s"
    finally:
        caller_audio.close()
        phone.close()
    # baresip unregisters as it quits (Expires: 0, authenticated): the key is gone.
    assert wait_for(lambda: binding(desk.tenant, alice) is None, 10), \
        f"still bound after baresip unregistered: {binding(desk.tenant, alice)}"


def test_a_wrong_password_is_refused_like_an_unknown_agent_and_binds_nothing(m, desk, tmp_path):
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    desk.setup({alice: "right"})
    phone = Registering(tmp_path, alice, desk.domain, "wrong")
    try:
        assert wait_for(lambda: "403" in phone.text(), 15), phone.text()[-3000:]
    finally:
        phone.close()
    assert binding(desk.tenant, alice) is None
    c = Client()
    forbidden, ok_before = registers("forbidden"), registers("ok")
    try:
        wrong = c.register(desk.domain, alice, "wrong", contact=f"<sip:{alice}@127.0.0.1:{c.port}>")
        unknown = c.register(desk.domain, "nobody", "wrong", contact=f"<sip:nobody@127.0.0.1:{c.port}>")
        # Same status and reason: nothing tells an unknown agent from a wrong password.
        assert (wrong[0], wrong[1]) == (unknown[0], unknown[1]) == (403, "Forbidden"), (wrong, unknown)
        assert binding(desk.tenant, alice) is None and binding(desk.tenant, "nobody") is None
        # The right password through the same client binds.
        ok = c.register(desk.domain, alice, "right", contact=f"<sip:{alice}@127.0.0.1:{c.port}>", expires=120)
        assert ok[0] == 200, ok
        assert binding(desk.tenant, alice)[0] == f"sip:{alice}@127.0.0.1:{c.port}"
        assert registers("forbidden") >= forbidden + 2 and registers("ok") >= ok_before + 1, "counted by outcome"
        # Unauthenticated, it is only challenged: the binding stays.
        status, _, headers = c.send(desk.domain, alice, contact="*", expires=0)
        assert status == 401 and f'realm="{desk.domain}"' in headers["www-authenticate"][0], headers
        assert binding(desk.tenant, alice) is not None
        assert c.register(desk.domain, alice, "right", contact="*", expires=0)[0] == 200
        assert binding(desk.tenant, alice) is None
    finally:
        c.close()


def test_a_captured_register_cannot_be_replayed_to_move_the_binding(m, desk):
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    desk.setup({alice: "pw"})
    c = Client()
    mine = f"<sip:{alice}@127.0.0.1:{c.port}>"
    try:
        assert c.register(desk.domain, alice, "pw", contact=mine, expires=120)[0] == 200
        authorization = c.last_authorization
        # The same Authorization again (within the nonce's lifetime), pointing the binding
        # elsewhere: challenged, the binding stays.
        status, _, headers = c.send(desk.domain, alice, contact="<sip:attacker@127.0.0.1:9>", expires=120,
                                    authorization=authorization)
        assert status == 401 and "www-authenticate" in headers, (status, headers)
        assert binding(desk.tenant, alice)[0] == f"sip:{alice}@127.0.0.1:{c.port}"
    finally:
        c.close()


def test_expiry_bounds_and_removal(m, desk):
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    desk.setup({alice: "pw"})
    c = Client()
    contact = f"<sip:{alice}@127.0.0.1:{c.port}>"
    try:
        status, reason, headers = c.register(desk.domain, alice, "pw", contact=contact, expires=30)
        assert (status, reason) == (423, "Interval Too Brief") and headers["min-expires"] == ["60"], headers
        assert binding(desk.tenant, alice) is None
        status, _, headers = c.register(desk.domain, alice, "pw", contact=contact, expires=86400)
        assert status == 200 and headers["contact"][0].endswith(";expires=3600"), headers
        assert 3590 <= binding(desk.tenant, alice)[1] <= 3600, "shortened to the maximum"
        status, _, headers = c.register(desk.domain, alice, "pw", contact=f"{contact};expires=90", expires=3000)
        assert status == 200 and headers["contact"][0].endswith(";expires=90"), headers
        assert 80 <= binding(desk.tenant, alice)[1] <= 90, "the contact's parameter wins"
        # A query (no Contact) tells the binding; Expires: 0 for another contact keeps it.
        status, _, headers = c.register(desk.domain, alice, "pw")
        assert status == 200 and f"sip:{alice}@127.0.0.1:{c.port}" in headers["contact"][0], headers
        assert c.register(desk.domain, alice, "pw", contact=f"<sip:{alice}@127.0.0.1:9>", expires=0)[0] == 200
        assert binding(desk.tenant, alice) is not None
        assert c.register(desk.domain, alice, "pw", contact=contact, expires=0)[0] == 200
        assert binding(desk.tenant, alice) is None
        # Contact: * without Expires: 0 is malformed, and so is an unreadable Expires; the
        # registrar still serves.
        assert c.register(desk.domain, alice, "pw", contact="*", expires=60)[0] == 400
        assert c.send(desk.domain, alice, contact=contact, expires="soon")[0] == 400
        assert c.register(desk.domain, alice, "pw", contact=contact, expires=60)[0] == 200
    finally:
        c.close()


def test_another_tenants_credentials_never_register_here(m, desk, tmp_path):
    """Tenant B has an agent with the same id as A's, with its own password."""
    agent = f"alice-{uuid.uuid4().hex[:6]}"
    desk.setup({agent: "a-password"})
    other = f"{desk.tenant}-b"
    other_domain = f"{other}.sip.test"
    b_secret = secrets_dir() / f"{other}-phones"
    b_secret.mkdir(parents=True, exist_ok=True)
    (b_secret / agent).write_text(ha1(agent, other_domain, "b-password"))
    (b_secret / "bob").write_text(ha1("bob", other_domain, "bob-password"))
    (tmp_path / "b.yaml").write_text(registrar_tenant(other, f"+3495{random.randrange(10_000_000, 99_999_999)}",
                                                      other_domain))
    cli("admin", "tenant", "apply", "-f", str(tmp_path / "b.yaml"))
    c = Client()
    contact = f"<sip:{agent}@127.0.0.1:{c.port}>"
    try:
        assert wait_for(lambda: c.register(other_domain, "bob", "bob-password", contact=f"<sip:bob@127.0.0.1:{c.port}>",
                                           expires=60)[0] == 200, 15), "tenant B's registrar is up"
        # B's agent's password for the same agent id, on A's domain: refused.
        assert c.register(desk.domain, agent, "b-password", contact=contact)[0] == 403
        # B's agent bob on A's domain: refused (no such agent in A).
        assert c.register(desk.domain, "bob", "bob-password", contact=contact)[0] == 403
        # Credentials computed for B's realm, sent to A's domain: challenged again, not taken.
        status, _, headers = c.register(desk.domain, "bob", "bob-password", contact=contact, realm=other_domain)
        assert status == 401 and f'realm="{desk.domain}"' in headers["www-authenticate"][0], (status, headers)
        assert binding(desk.tenant, agent) is None and binding(desk.tenant, "bob") is None
        # A REGISTER for A's domain naming an address of B's domain is no address of A's.
        assert c.send(desk.domain, agent, to_domain=other_domain)[0] == 404
        # Each tenant's binding is under its own keys only.
        assert c.register(other_domain, agent, "b-password", contact=contact, expires=60)[0] == 200
        assert binding(other, agent) is not None and binding(desk.tenant, agent) is None
        assert binding(other, "bob") is not None
    finally:
        c.close()
        for a in (agent, "bob"):
            redis("DEL", f"{{t:{other}}}:sip:reg:{a}")
        shutil.rmtree(b_secret, ignore_errors=True)


def test_calls_reach_an_agent_only_while_its_phone_is_registered(m, desk, tmp_path):
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    desk.setup({alice: "pa"})
    caller_audio = CallerAudio()
    caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
    name = f"agents/{alice}"

    def phones():
        got = desk.agents.GetAgent(m.s.GetAgentRequest(name=name), metadata=auth(desk.sup), timeout=5)
        return [p.tenant for p in got.phones]

    # Media reports the registration to sessions, and its end when baresip quits.
    assert phones() == []
    phone = Registering(tmp_path, alice, desk.domain, "pa")
    try:
        assert wait_for(lambda: binding(desk.tenant, alice) is not None, 15), phone.text()[-3000:]
        assert wait_for(lambda: phones() == [desk.tenant], 5), "sessions never heard of the registration"
    finally:
        phone.close()
    assert wait_for(lambda: binding(desk.tenant, alice) is None, 10), "baresip did not unregister"
    assert wait_for(lambda: phones() == [], 5), "sessions never heard the phone was gone"

    # Signed in and available without a phone: the call waits and is never offered to her.
    # Her desktop in the console (Chromium) says so, then shows the registration.
    desk.sign_in(alice)
    from playwright.sync_api import expect, sync_playwright
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_context(locale="en-GB").new_page()
    sign_in(page, console_url(), desk.tenant, "agent", alice)
    expect(page.get_by_test_id("phone-status")).to_have_text(re.compile("not registered"), timeout=20_000)
    offers = []
    stream = desk.agents.StreamAgentEvents(m.s.StreamAgentEventsRequest(name=name),
                                           metadata=auth(mint("--tenant", desk.tenant, "--role", "agent",
                                                              "--agent-id", alice)))

    def listen():
        try:
            for ev in stream:
                if ev.WhichOneof("event") == "offer":
                    offers.append((time.monotonic(), ev.offer))
        except grpc.RpcError:
            pass

    threading.Thread(target=listen, daemon=True).start()
    stop, watcher = desk.watching(caller)
    phone = None
    try:
        proc, err = queued_call(desk.number, caller, 25000, caller_audio.port)
        assert wait_for(lambda: desk.states and desk.states[-1] == (m.s.CONTACT_STATE_QUEUED, ""), 10), desk.states
        time.sleep(4)
        assert offers == [] and desk.states == [(m.s.CONTACT_STATE_QUEUED, "")], (offers, desk.states)
        # Her phone registers: the waiting call is offered to her, rings it, and connects.
        started = time.monotonic()
        phone = Registering(tmp_path, alice, desk.domain, "pa")
        assert wait_for(lambda: binding(desk.tenant, alice) is not None, 15), phone.text()[-3000:]
        assert wait_for(lambda: offers, 5), "not offered once the phone registered"
        print(f"offered {offers[0][0] - started:.2f} s after baresip started (and registered)")
        expect(page.get_by_test_id("phone-status")).to_have_text(re.compile("registered until"), timeout=10_000)
        page.screenshot(path=str(SHOTS / "desktop-phone-registered.png"))
        assert wait_for(lambda: (m.s.CONTACT_STATE_CONNECTED, alice) in desk.states, 15), desk.states
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"sipp: {out[-2000:]} {err.read_text() if err.exists() else ''}"
    finally:
        stop.set()
        watcher.join(5)
        stream.cancel()
        caller_audio.close()
        if phone is not None:
            phone.close()
        browser.close()
        playwright.stop()
    assert len(offers) == 1, offers
