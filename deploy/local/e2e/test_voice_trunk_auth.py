"""Carrier trunks with digest credentials (RFC 3261 §22.3), against sipp's own digest code.

A tenant's trunk lists no source address, only credentials (its Secret: `username` and
`password` files in the run's secrets directory, as the chart mounts it for media). sipp,
playing the carrier, sends an INVITE without credentials: `407` with a Proxy-Authenticate for
the tenant's realm, nothing created. With the right username and password (sipp's `-au` /
`-ap`, answering the challenge itself): the call is answered and queued with the trunk's name,
then abandoned by its BYE. With a wrong password: `403`, nothing created. Another tenant's
credentials (its own trunk's Secret) do not open this tenant's number. The Secret rotated
(a new password written): the old one no longer works, the new one does, without a restart.
"""
import random
import time
import uuid

import pytest

from conftest import auth, cli, endpoints, mint, wait_for
from test_voice import SIPP, invites, m, run_async, sipp, voice_tenant  # noqa: F401 (m: the fixture)
from test_voice_register import secrets_dir

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")


def tenant_with_credential_trunk(tenant, number, secret):
    """test_voice's tenant, its trunk by credentials only (no source address)."""
    by_source = '- { name: carrier, sources: ["127.0.0.1"] }'
    text = voice_tenant(tenant, number, "127.0.0.1")
    assert by_source in text
    return text.replace(by_source, f"- {{ name: sbc, credentials: {{ secretName: {secret} }} }}")


def write_secret(name, username, password):
    d = secrets_dir() / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "username").write_text(username + "\n")
    (d / "password").write_text(password + "\n")


def test_a_trunk_with_credentials_must_prove_them(m, tmp_path):
    import grpc

    run = uuid.uuid4().hex[:8]
    base = random.randrange(10_000_000, 99_999_000)
    a, b = f"trunkauth-a-{run}", f"trunkauth-b-{run}"
    numbers = {a: f"+3495{base}", b: f"+3495{base + 1}"}
    secrets = {a: f"{a}-sbc", b: f"{b}-sbc"}
    users = {a: f"acme-sbc-{run}", b: f"globex-sbc-{run}"}
    passwords = {a: "correct horse", b: "battery staple"}
    for t in (a, b):
        write_secret(secrets[t], users[t], passwords[t])
        path = tmp_path / f"{t}.yaml"
        path.write_text(tenant_with_credential_trunk(t, numbers[t], secrets[t]))
        cli("admin", "tenant", "apply", "-f", str(path))
    bpo = mint("--role", "bpo_admin")
    directory = m.tg.TenantServiceStub(grpc.insecure_channel(endpoints()["media"]))

    def media_knows():
        try:
            return all(len(directory.GetTenant(m.t.GetTenantRequest(name=f"tenants/{t}"), metadata=auth(bpo),
                                               timeout=5).voice.trunks) == 1 for t in (a, b))
        except grpc.RpcError:
            return False

    assert wait_for(media_knows, 60), "media never read the tenants"
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(endpoints()["sessions"]))
    sup = mint("--tenant", a, "--role", "supervisor")

    def listed():
        try:
            return list(contacts.ListContacts(m.s.ListContactsRequest(page_size=100), metadata=auth(sup),
                                              timeout=5).contacts)
        except grpc.RpcError:
            return []

    def sessions_knows():
        try:
            contacts.ListQueueStats(m.s.ListQueueStatsRequest(), metadata=auth(sup), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(sessions_knows, 60), "sessions never read the tenant"
    challenged = invites("challenged")

    # No credentials: 407, nothing created.
    rc, log = sipp("refused_407", numbers[a], "+34600200001", source="127.0.0.1")
    assert rc == 0, log
    assert invites("challenged") >= challenged + 1
    # A wrong password, and B's own trunk credentials, for A's number: 403.
    for user, password in [(users[a], "wrong"), (users[b], passwords[b])]:
        rc, log = sipp("trunk_auth_refused", numbers[a], "+34600200002", source="127.0.0.1",
                       extra=("-au", user, "-ap", password, "-key", "rtp_port", "9"))
        assert rc == 0, f"{user}: {log}"
    time.sleep(1)
    assert listed() == [], "nothing created for refused calls"

    # The right credentials: answered, queued under the trunk, then abandoned by the BYE.
    proc, err = run_async("trunk_auth", numbers[a], "+34600200003",
                          extra=("-au", users[a], "-ap", passwords[a], "-key", "rtp_port", "9", "-d", "3000"))
    seen = []
    found = wait_for(lambda: bool(seen.extend(listed()) or seen), 10)
    out, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0, f"sipp: {out[-2000:]} {err.read_text() if err.exists() else ''}"
    assert found, "no contact for the admitted call"
    c = seen[0]
    assert c.attributes["voice_trunk"] == "sbc" and c.attributes["voice_number"] == numbers[a]
    assert [(i.kind, i.value) for i in c.customer_identities] == [(1, "+34600200003")]

    def state():
        return contacts.GetContact(m.s.GetContactRequest(name=c.name), metadata=auth(sup), timeout=5).state

    assert wait_for(lambda: state() == m.s.CONTACT_STATE_ABANDONED, 10), state()

    # The Secret rotated: the old password is refused, the new one admitted, no restart.
    write_secret(secrets[a], users[a], "rotated password")
    rc, log = sipp("trunk_auth_refused", numbers[a], "+34600200004", source="127.0.0.1",
                   extra=("-au", users[a], "-ap", passwords[a], "-key", "rtp_port", "9"))
    assert rc == 0, log
    proc, err = run_async("trunk_auth", numbers[a], "+34600200005",
                          extra=("-au", users[a], "-ap", "rotated password", "-key", "rtp_port", "9", "-d", "3000"))
    others = []
    found = wait_for(lambda: bool(others.extend(x for x in listed() if x.name != c.name) or others), 10)
    out, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0, f"sipp: {out[-2000:]} {err.read_text() if err.exists() else ''}"
    assert found, "the rotated password admitted no call"
    assert [(i.kind, i.value) for i in others[0].customer_identities] == [(1, "+34600200005")]
