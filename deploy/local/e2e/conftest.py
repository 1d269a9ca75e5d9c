"""End-to-end tests against running service binaries, with independent clients.

`deploy/local/test.sh` starts the stack and a set of services (run name `e2e`, own topic
prefix and ports) and then runs these tests. They talk to the services only through gRPC
(grpcio), the admin HTTP port, the `centralita` CLI and Kafka (kafka-python), never
through the Rust code.
"""
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
BIN = TARGET / "debug"
CLI = str(BIN / "centralita")
PREFIX = os.environ.get("CENTRALITA_KAFKA_TOPIC_PREFIX", "centralita.")
BROKERS = os.environ.get("CENTRALITA_KAFKA_BROKERS", "127.0.0.1:9092")
LOGS = pathlib.Path(os.environ.get("CENTRALITA_E2E_LOGS", REPO / ".local/logs/e2e"))
DEV_KEY = REPO / "deploy/local/dev-keys/jwt-ed25519.key"
DEV_PUB = REPO / "deploy/local/dev-keys/jwt-ed25519.pub"
OTHER_KEY = REPO / "services/platform/tests/fixtures/other-ed25519.key"


def endpoints():
    raw = os.environ.get("CENTRALITA_ENDPOINTS", "")
    assert raw, "CENTRALITA_ENDPOINTS is not set: run these tests through deploy/local/test.sh"
    return dict(e.split("=", 1) for e in raw.split(","))


def cli(*args, check=True, env=None):
    proc = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"centralita {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def mint(*args, key=DEV_KEY):
    return cli("token", "mint", "--private-key-file", str(key), *args).stdout.strip()


def tenant_manifest(tenant, queue, *, display=None, channels="voice, chat", time_zone="Europe/Madrid",
                    recording="none", away_reasons="break", max_concurrent=100):
    """A tenant manifest with one routing queue (`queue`: the YAML flow mapping's inside) and
    the disposition code `resolved`."""
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: {display or tenant}
  channels: [{channels}]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: {max_concurrent}, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: {time_zone} }}
  dataRetentionDays: 30
  recording: {{ voice: {recording} }}
  routing:
    awayReasons: [{away_reasons}]
    dispositionCodes: [resolved]
    queues:
      - {{ {queue} }}
"""


def auth(token):
    """gRPC call metadata carrying a bearer token."""
    return (("authorization", f"Bearer {token}"),)


_HANDED_OUT = set()


def free_port():
    """A port free now and not handed out before in this run: the kernel can give the same
    ephemeral port to two binds in a row once the first socket is closed (a service was once
    given one port for both its gRPC and admin addresses and could not start)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def wait_for(predicate, timeout, interval=0.25):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def sessions_knows_tenant(contacts, s, supervisor_token, timeout=60):
    """Waits until sessions answers the tenant's supervisor (it has read the tenant from the
    tenants topic); False if it did not within `timeout` seconds."""
    import grpc

    def known():
        try:
            contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(supervisor_token), timeout=5)
            return True
        except grpc.RpcError:
            return False

    return wait_for(known, timeout)


def upsert_voice_agents(agents, s, voice_channel, tenant, ids, admin_token):
    """One agent per id on the tenant's `support` queue, holding one exclusive voice call."""
    voice = s.ChannelCapacity(channel=voice_channel, max_contacts=1, exclusive=True)
    for agent in ids:
        a = s.Agent(name=f"agents/{agent}", display_name=agent, capacity=[voice],
                    queues=[s.QueueAssignment(tenant=tenant, queue="support")])
        agents.UpsertAgent(s.UpsertAgentRequest(agent=a), metadata=auth(admin_token), timeout=10)


@pytest.fixture(scope="session")
def pb():
    """Python protobuf/gRPC modules generated from proto/ with grpcio-tools."""
    from grpc_tools import protoc
    import grpc_tools

    out = tempfile.mkdtemp(prefix="centralita-pb-")
    protos = [str(p.relative_to(REPO / "proto")) for p in (REPO / "proto").rglob("*.proto")]
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{REPO / 'proto'}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", *protos])
    assert rc == 0, "protoc failed"
    sys.path.insert(0, out)
    from centralita.tenancy.v1 import tenancy_pb2, tenancy_pb2_grpc
    from centralita.events.v1 import envelope_pb2

    class PB:
        tenancy = tenancy_pb2
        tenancy_grpc = tenancy_pb2_grpc
        envelope = envelope_pb2

    return PB


@pytest.fixture
def spawn():
    """Starts processes for one test and stops them afterwards."""
    procs = []

    def start(args, env, log):
        f = open(log, "ab")
        p = subprocess.Popen(args, env={**os.environ, **env}, stdout=f, stderr=subprocess.STDOUT)
        procs.append((p, f))
        return p

    yield start
    for p, f in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        f.close()


class OfferedAgent:
    """An agent signed in on `tenant`'s support queue with capacity `max_contacts` (3) on
    `channel` (a tenancy channel enum value, or a list of them), collecting the offers its
    event stream brings."""

    def __init__(self, m, tenant, agent_id, channel, max_contacts=3):
        import threading

        import grpc
        self.m, self.name = m, f"agents/{agent_id}"
        self.token = mint("--tenant", tenant, "--role", "agent", "--agent-id", agent_id)
        sessions = grpc.insecure_channel(endpoints()["sessions"])
        self.agents, self.contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)
        caps = [m.s.ChannelCapacity(channel=c, max_contacts=max_contacts, exclusive=False)
                for c in (channel if isinstance(channel, list) else [channel])]
        self.agents.UpsertAgent(m.s.UpsertAgentRequest(agent=m.s.Agent(
            name=self.name, display_name=agent_id, capacity=caps,
            queues=[m.s.QueueAssignment(tenant=tenant, queue="support")])),
            metadata=auth(mint("--role", "bpo_admin")), timeout=10)
        self.agents.SignIn(m.s.SignInRequest(name=self.name, available=True), metadata=auth(self.token), timeout=10)
        self.offers, self.errors = [], []
        self.stream = self.agents.StreamAgentEvents(m.s.StreamAgentEventsRequest(name=self.name),
                                                    metadata=auth(self.token))
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self):
        import grpc
        try:
            for ev in self.stream:
                if ev.WhichOneof("event") == "offer":
                    self.offers.append(ev.offer)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self.errors.append(e)


class FakeProvider:
    """A provider's REST API on loopback (Twilio's, Meta's Cloud API) standing in for the real
    one in media's outbound sends: records each POST as {"path", "auth", "body"} (the body
    read by `parse`) and answers the next planned status (`ok` when nothing is planned) with
    the JSON `answer(status)` gives; each GET is recorded in `gets` and answered from
    `files` (path → (status, content type or a redirect's Location, bytes))."""

    def __init__(self, port, ok, parse, answer):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests, self.plan, self.gets, self.files = [], [], [], {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                fake.requests.append({"path": self.path, "auth": self.headers.get("authorization", ""),
                                      "body": parse(body)})
                status = fake.plan.pop(0) if fake.plan else ok
                raw = json.dumps(answer(status)).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                # Files the provider serves (media lookups and downloads): `fake.files[path]`
                # is (status, content type, bytes); anything else 404.
                fake.gets.append({"path": self.path, "auth": self.headers.get("authorization", "")})
                status, ctype, raw = fake.files.get(self.path, (404, "text/plain", b"not found"))
                self.send_response(status)
                if 300 <= status < 400:
                    # A redirect: the second item is where to.
                    self.send_header("location", ctype)
                    ctype = "text/plain"
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        """Stops serving (again: a no-op)."""
        if self.server.socket.fileno() != -1:
            self.server.shutdown()
            self.server.server_close()


def front_door():
    """media's customers' front door (web chat, provider webhooks): its base URL, where
    deploy/local/services.sh puts it."""
    port = os.environ.get("CENTRALITA_WEBCHAT_PORT") or 8480 + int(os.environ.get("CENTRALITA_ADMIN_BASE", "9101")) - 9101
    return f"http://127.0.0.1:{port}"


def provider_port(base_url_var, default):
    """The port of the fake provider media sends to (`base_url_var`, else `default` plus the
    run's offset, as services.sh sets it)."""
    import urllib.parse
    url = os.environ.get(base_url_var)
    return urllib.parse.urlparse(url).port if url else default + int(os.environ.get("CENTRALITA_ADMIN_BASE", "9101")) - 9101


def provider_secrets(var):
    """Where media reads the tenants' provider Secrets (`var`, else the SMS directory, else
    the run's secrets directory, as services.sh sets them)."""
    for v in (var, "CENTRALITA_SMS_SECRETS_DIR"):
        if os.environ.get(v):
            return pathlib.Path(os.environ[v])
    data = pathlib.Path(os.environ.get("CENTRALITA_DATA", REPO / ".local"))
    return data / "secrets" / os.environ.get("CENTRALITA_RUN_NAME", "dev")


# What deploy/local/services.sh derives from a run's port bases unless set: a second set of
# services started from a test must not inherit the suite's.
RUN_DERIVED = ("CENTRALITA_ENDPOINTS", "CENTRALITA_SIP_PORT", "CENTRALITA_WEBCHAT_PORT", "CENTRALITA_SMTP_PORT",
               "CENTRALITA_PLAYBACK_PORT", "CENTRALITA_CONSOLE_PORT", "CENTRALITA_RTP_PORTS",
               "CENTRALITA_TWILIO_BASE_URL", "CENTRALITA_WHATSAPP_BASE_URL", "CENTRALITA_TELEGRAM_BASE_URL",
               "CENTRALITA_MESSENGER_BASE_URL", "CENTRALITA_RECORDING_STORE_URL", "CENTRALITA_RECORDING_SPOOL_DIR",
               "CENTRALITA_GRPC_WEB_ORIGINS", "CENTRALITA_SIP_TLS_ADDR", "CENTRALITA_SIP_TLS_CERT_FILE",
               "CENTRALITA_SIP_TLS_KEY_FILE", "CENTRALITA_PEER_SESSIONS_ENDPOINT")


def second_run_env(name, grpc_base, admin_base, prefix, database, redis_db, **extra):
    """The environment of a second set of every service (services.sh) beside the suite's:
    run name, port bases, topic prefix, a database and a Redis database of its own, the
    binaries already built, no identity provider, SIP over TLS or console; then `extra`."""
    redis_url = os.environ.get("CENTRALITA_REDIS_URL", "redis://127.0.0.1:6390")
    database_url = os.environ.get("CENTRALITA_DATABASE_URL",
                                  "postgres://centralita:centralita@127.0.0.1:5440/centralita")
    env = {k: v for k, v in os.environ.items() if k not in RUN_DERIVED}
    env.update({"CENTRALITA_RUN_NAME": name, "CENTRALITA_GRPC_BASE": str(grpc_base),
                "CENTRALITA_ADMIN_BASE": str(admin_base), "CENTRALITA_KAFKA_TOPIC_PREFIX": prefix,
                "CENTRALITA_DATABASE_URL": database_url.rsplit("/", 1)[0] + "/" + database,
                "CENTRALITA_REDIS_URL": f"{redis_url.rstrip('/')}/{redis_db}",
                "CENTRALITA_SKIP_BUILD": "1", "CENTRALITA_LOCAL_IDP": "false", "CENTRALITA_SIP_TLS": "false",
                "CENTRALITA_CONSOLE": "false", **extra})
    return env
