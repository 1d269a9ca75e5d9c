"""Mutual TLS on every service's gRPC port and between the services (CENTRALITA_TLS=true).

A second set of every service is started by deploy/local/services.sh with
CENTRALITA_TLS=true (ports, topic prefix, database and Redis database of its own); its CA
and certificates come from deploy/local/tls-certs.sh (openssl). The peers are independent
TLS stacks: grpcio (BoringSSL) and Python's `ssl` (OpenSSL).

Shown: a grpcio client holding a certificate the CA signed is served; refused are a
plaintext client, a TLS client without a certificate (the server's alert, seen by `ssl`),
and one whose certificate another CA signed. Service to service: a web chat started at
media's front door becomes a contact only through media's certificate-authenticated call to
sessions, read back over mutual TLS; the certificate does not stand in for the tenant check
(another tenant's token is refused the contact). Rotation: sessions' certificate is issued
again under the running process; within its reload interval new handshakes get the new one,
the process is the same, and calls go on — media still creates contacts through sessions.
"""
import json
import os
import pathlib
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import grpc
import pytest

from conftest import REPO, auth, cli, http_get, mint, second_run_env, wait_for
from test_erasure_everywhere import superuser_psql
from test_webchat import tenant_yaml

# This run's ports (services.sh): gRPC 31551-31556, admin 9701-9706, so web chat 9080, SIP
# 5660, SMTP 26025, playback 9790: clear of the suite's run, the replay's (31451, 9601), the
# chaos runs' and the dev run.
GRPC_BASE, ADMIN_BASE, REDIS_DB = 31551, 9701, 12
WEBCHAT = 8480 + ADMIN_BASE - 9101


@pytest.fixture(scope="module")
def m(pb):
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        s = sessions_pb2
        sg = sessions_pb2_grpc

    return M


def start_chat(tenant, key, origin, request_id):
    body = json.dumps({"widgetKey": key, "requestId": request_id}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{WEBCHAT}/v1/tenants/{tenant}/webchat/chats", data=body,
                                 method="POST", headers={"content-type": "application/json", "origin": origin})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


class Run:
    """The TLS run: its certificate directory and how to reach its sessions."""

    def __init__(self, certs):
        self.certs = certs
        self.sessions = f"127.0.0.1:{GRPC_BASE}"

    def read(self, name):
        return (self.certs / name).read_bytes()

    def credentials(self, leaf="client", ca=None, certs=None):
        certs = certs or self.certs
        return grpc.ssl_channel_credentials(root_certificates=(ca or self.read("ca.crt")),
                                            private_key=(certs / f"{leaf}.key").read_bytes(),
                                            certificate_chain=(certs / f"{leaf}.crt").read_bytes())

    def stub(self, m, credentials):
        return m.sg.ContactServiceStub(grpc.secure_channel(self.sessions, credentials))

    def handshake(self, with_certificate=True):
        """(the certificate sessions presents, DER; what a first read after the handshake
        gave), over Python's ssl (OpenSSL)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=self.read("ca.crt").decode())
        if with_certificate:
            ctx.load_cert_chain(self.certs / "client.crt", self.certs / "client.key")
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", GRPC_BASE), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
                served = t.getpeercert(binary_form=True)
                t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                try:
                    return served, t.recv(64)
                except (ssl.SSLError, ConnectionResetError) as e:
                    return served, e


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    name = f"e2e-mtls-{uuid.uuid4().hex[:6]}"
    prefix = f"{name}."
    database = name.replace("-", "_")
    data = pathlib.Path(os.environ.get("CENTRALITA_DATA", REPO / ".local"))
    superuser_psql("postgres", f"CREATE DATABASE {database} OWNER centralita")
    env = second_run_env(name, GRPC_BASE, ADMIN_BASE, prefix, database, REDIS_DB, CENTRALITA_TLS="true",
                         CENTRALITA_TLS_RELOAD_INTERVAL="1s")
    services = str(REPO / "deploy/local/services.sh")
    log = tmp_path_factory.mktemp("mtls") / "services.log"
    try:
        with open(log, "w") as out:
            subprocess.run([services, "start"], env=env, stdout=out, stderr=subprocess.STDOUT, check=True,
                           timeout=300)
        assert wait_for(lambda: all(http_get(ADMIN_BASE + i, "/readyz")[0] == 200 for i in range(6)), 120), \
            log.read_text()[-3000:]
        r = Run(data / "certs" / name / "tls")
        r.name, r.prefix, r.env, r.services, r.data = name, prefix, env, services, data
        yield r
    finally:
        subprocess.run([services, "stop"], env=env, capture_output=True, timeout=120)
        superuser_psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_only_a_client_with_a_certificate_the_ca_signed_is_served(m, run, tmp_path):
    """grpcio with the CA's `client` certificate is served; plaintext, TLS without a
    certificate and a certificate of another CA are refused at the connection; the CLI's
    `status` goes through with its certificate."""
    # A tenant this run does not know: sessions answers (PERMISSION_DENIED) — the connection
    # was made; only a refused connection gives UNAVAILABLE.
    token = mint("--tenant", f"nobody-{uuid.uuid4().hex[:6]}", "--role", "supervisor")
    served = run.stub(m, run.credentials())
    with pytest.raises(grpc.RpcError) as answered:
        served.ListQueueStats(m.s.ListQueueStatsRequest(), metadata=auth(token), timeout=10)
    assert answered.value.code() == grpc.StatusCode.PERMISSION_DENIED, answered.value

    plain = m.sg.ContactServiceStub(grpc.insecure_channel(run.sessions))
    with pytest.raises(grpc.RpcError) as refused:
        plain.ListQueueStats(m.s.ListQueueStatsRequest(), metadata=auth(token), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    anonymous = run.stub(m, grpc.ssl_channel_credentials(root_certificates=run.read("ca.crt")))
    with pytest.raises(grpc.RpcError) as refused:
        anonymous.ListQueueStats(m.s.ListQueueStatsRequest(), metadata=auth(token), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    _, answer = run.handshake(with_certificate=False)
    assert isinstance(answer, (ssl.SSLError, ConnectionResetError)) or answer == b"", answer
    if isinstance(answer, ssl.SSLError):
        assert "CERTIFICATE_REQUIRED" in str(answer).upper().replace(" ", "_"), answer

    rogue = tmp_path / "rogue"
    for args in (["ca"], ["leaf", "client"]):
        subprocess.run([str(REPO / "deploy/local/tls-certs.sh"), str(rogue), *args], check=True, timeout=30)
    stranger = run.stub(m, run.credentials(ca=run.read("ca.crt"), certs=rogue))
    with pytest.raises(grpc.RpcError) as refused:
        stranger.ListQueueStats(m.s.ListQueueStatsRequest(), metadata=auth(token), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    # The CLI presents its certificate (services.sh status gives it the `client` pair).
    status = subprocess.run([run.services, "status"], env=run.env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and status.stdout.count("SERVING") == 6, status.stdout + status.stderr
    # The same CLI without a certificate reaches nothing.
    bare = {k: v for k, v in run.env.items() if not k.startswith("CENTRALITA_TLS")}
    endpoints = subprocess.run([run.services, "endpoints"], env=run.env, capture_output=True, text=True,
                               timeout=30).stdout.strip()
    unreached = cli("status", "--endpoints", endpoints, check=False, env=bare)
    assert unreached.returncode != 0 and "SERVING" not in unreached.stdout, unreached.stdout


def test_media_calls_sessions_over_mutual_tls_and_a_rotated_certificate_is_picked_up(m, run, tmp_path):
    run_id = uuid.uuid4().hex[:8]
    a, b = f"mtls-a-{run_id}", f"mtls-b-{run_id}"
    key_a, key_b = f"wk_{run_id}_aaaaaaaaaaaa", f"wk_{run_id}_bbbbbbbbbbbb"
    origin = "https://shop.example"
    manifest = tmp_path / "tenants.yaml"
    manifest.write_text(tenant_yaml(a, key_a, origin) + "---\n" + tenant_yaml(b, key_b, origin))
    cli("admin", "tenant", "apply", "-f", str(manifest), env={"CENTRALITA_KAFKA_TOPIC_PREFIX": run.prefix})
    contacts = run.stub(m, run.credentials())
    sup_a, sup_b = mint("--tenant", a, "--role", "supervisor"), mint("--tenant", b, "--role", "supervisor")

    def knows(token):
        try:
            contacts.ListQueueStats(m.s.ListQueueStatsRequest(), metadata=auth(token), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(lambda: knows(sup_a) and knows(sup_b), 60), "sessions never saw the tenants"
    assert wait_for(lambda: start_chat(a, "wrong-key-000000000", origin, "x")[0] == 401, 60), \
        "media never saw the tenant"

    # A chat becomes a contact only through media's call to sessions, over mutual TLS.
    status, started = start_chat(a, key_a, origin, f"start-{run_id}")
    assert status == 201, started
    contact = started["contact"]
    got = contacts.GetContact(m.s.GetContactRequest(name=contact), metadata=auth(sup_a), timeout=10)
    assert got.name == contact and got.queue == "support", got
    # The certificate is the service's identity, not the tenant's: B's token is refused A's contact.
    with pytest.raises(grpc.RpcError) as refused:
        contacts.GetContact(m.s.GetContactRequest(name=contact), metadata=auth(sup_b), timeout=10)
    assert refused.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)

    # Rotation: sessions' certificate issued again under the running process.
    pid = (run.data / "run" / run.name / "sessions.pid").read_text().strip()
    before, answer = run.handshake()
    assert not isinstance(answer, Exception), answer
    assert before == ssl.PEM_cert_to_DER_cert(run.read("sessions.crt").decode())
    subprocess.run([str(REPO / "deploy/local/tls-certs.sh"), str(run.certs), "leaf", "sessions"], check=True,
                   timeout=30)
    rotated = ssl.PEM_cert_to_DER_cert(run.read("sessions.crt").decode())
    assert rotated != before
    started_at = time.monotonic()
    assert wait_for(lambda: run.handshake()[0] == rotated, 15), "sessions never presented the rotated certificate"
    print(f"rotated certificate served after {time.monotonic() - started_at:.1f} s")
    assert (run.data / "run" / run.name / "sessions.pid").read_text().strip() == pid
    os.kill(int(pid), 0)
    # Calls go on: grpcio on a new channel, and media through sessions.
    again = run.stub(m, run.credentials())
    again.GetContact(m.s.GetContactRequest(name=contact), metadata=auth(sup_a), timeout=10)
    status, second = start_chat(a, key_a, origin, f"second-{run_id}")
    assert status == 201 and second["contact"] != contact, second
    status, metrics = http_get(ADMIN_BASE, "/metrics")
    assert status == 200 and 'centralita_tls_reloads_total{service="sessions",result="reloaded"} 1' in metrics, \
        [line for line in metrics.splitlines() if "tls" in line]
