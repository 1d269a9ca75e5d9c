"""Queue announcements: two callers (sipp, an independent SIP implementation, playing the
carrier trunk) wait in a Spanish tenant's queue with no agent; each hears, between the
music, "Usted es la llamada número" and *its own* position ("uno" for the first, "dos" for
the second), a pause and "Gracias por esperar…" — the wait is left out, as no agent serves
the queue. The test is each caller's RTP endpoint: it decodes what media sends (µ-law, with
its own decoder) and finds there, aligned on a packet, the announcement composed by the test
from the prompt files themselves (read with Python's `wave`, made by
deploy/prompts/generate.sh with espeak-ng), within µ-law's quantisation. A tenant without
announcements hears music only. Another tenant's supervisor cannot read the position of the
first tenant's caller (NOT_FOUND).
"""
import os
import pathlib
import random
import socket
import threading
import time
import uuid
import wave

import grpc
import pytest

from conftest import auth, cli, endpoints, mint, wait_for
from test_voice import SIPP, m, queued_call, ulaw_to_linear, voice_tenant  # noqa: F401 (m: the fixture)

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

PROMPTS = pathlib.Path(os.environ.get("CENTRALITA_PROMPTS_DIR")
                       or pathlib.Path(os.environ.get("CENTRALITA_DATA", ".local/data")) / "prompts")
FRAME = 160
PAUSE = 3200  # 400 ms


def prompt(language, name):
    with wave.open(str(PROMPTS / language / f"{name}.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2), name
        raw = w.readframes(w.getnframes())
    return [int.from_bytes(raw[i:i + 2], "little", signed=True) for i in range(0, len(raw), 2)]


def expected(language, position):
    """The announcement of `position` with no known wait, as media should compose it."""
    audio = prompt(language, "position") + prompt(language, f"n-{position}") + [0] * PAUSE
    audio += prompt(language, "thanks")
    return audio + [0] * (-len(audio) % FRAME)


def find(heard, audio):
    """The packet at which `audio` starts in `heard` (a list of payloads decoded), within
    µ-law's quantisation error for 99% of its samples; None if nowhere."""
    flat = [s for p in heard for s in p]

    def close(a, b):
        return abs(a - b) <= abs(b) / 8 + 40

    for start in range(len(heard)):
        at = start * FRAME
        if at + len(audio) > len(flat):
            return None
        if not all(close(flat[at + i], audio[i]) for i in range(FRAME)):
            continue
        ok = sum(close(flat[at + i], audio[i]) for i in range(len(audio)))
        if ok >= 0.99 * len(audio):
            return start
    return None


def listen(rtp, seconds, into):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data, _ = rtp.recvfrom(2048)
        except socket.timeout:
            continue
        cc = data[0] & 0x0F
        into.append([ulaw_to_linear(u) for u in data[12 + 4 * cc:]])


def announcing_tenant(tenant, number, announcements=True):
    text = voice_tenant(tenant, number, "127.0.0.1")
    if announcements:
        text += "    announcements: { everySeconds: 60, language: es }\n"
    return text


def test_each_waiting_caller_hears_its_own_position_in_the_tenants_language(m, tmp_path):
    assert (PROMPTS / "es" / "n-2.wav").exists(), f"no prompts in {PROMPTS} (services.sh makes them)"
    run = uuid.uuid4().hex[:8]
    base = random.randrange(10_000_000, 99_999_000)
    tenants = {"es": (f"announce-{run}", f"+3493{base}"), "plain": (f"plain-{run}", f"+3493{base + 1}")}
    for key, (tenant, number) in tenants.items():
        path = tmp_path / f"{key}.yaml"
        path.write_text(announcing_tenant(tenant, number, announcements=key == "es"))
        cli("admin", "tenant", "apply", "-f", str(path))
    bpo = mint("--role", "bpo_admin")
    directory = m.tg.TenantServiceStub(grpc.insecure_channel(endpoints()["media"]))

    def media_knows(tenant):
        try:
            t = directory.GetTenant(m.t.GetTenantRequest(name=f"tenants/{tenant}"), metadata=auth(bpo), timeout=5)
            return len(t.voice.numbers) == 1
        except grpc.RpcError:
            return False

    assert wait_for(lambda: all(media_knows(t) for t, _ in tenants.values()), 60), "media never read the tenants"
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(endpoints()["sessions"]))
    sup = mint("--tenant", tenants["es"][0], "--role", "supervisor")

    def queued(token):
        try:
            return [c for c in contacts.ListContacts(m.s.ListContactsRequest(page_size=100), metadata=auth(token),
                                                     timeout=5).contacts if c.state == m.s.CONTACT_STATE_QUEUED]
        except grpc.RpcError:
            return []

    sockets, heard, procs, threads = [], [], [], []
    try:
        # The first caller, then (once it is queued) the second and a caller of the plain
        # tenant; each held 12 s, heard for 10 s from its answer.
        calls = [("es", "+34600100001"), ("es", "+34600100002"), ("plain", "+34600100003")]
        for i, (key, caller) in enumerate(calls):
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.bind(("127.0.0.1", 0))
            rtp.settimeout(0.5)
            sockets.append(rtp)
            heard.append([])
            procs.append(queued_call(tenants[key][1], caller, 12_000, rtp.getsockname()[1]))
            t = threading.Thread(target=listen, args=(rtp, 10, heard[i]))
            t.start()
            threads.append(t)
            if i == 0:
                assert wait_for(lambda: len(queued(sup)) == 1, 10), "the first caller is not queued"
        for t in threads:
            t.join()
        waiting = sorted(queued(sup), key=lambda c: c.create_time.ToMilliseconds())
        assert len(waiting) == 2, waiting
        # sessions' own answer, as media asked it: positions 1 and 2, no wait known.
        for n, c in enumerate(waiting, 1):
            p = contacts.GetQueuePosition(m.s.GetQueuePositionRequest(name=c.name), metadata=auth(sup), timeout=5)
            assert (p.position, p.waiting, p.agents_available, p.expected_wait_ms) == (n, 2, 0, -1), p
        other = mint("--tenant", tenants["plain"][0], "--role", "supervisor")
        with pytest.raises(grpc.RpcError) as e:
            contacts.GetQueuePosition(m.s.GetQueuePositionRequest(name=waiting[0].name), metadata=auth(other),
                                      timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        for proc, err in procs:
            out, _ = proc.communicate(timeout=40)
            assert proc.returncode == 0, f"sipp: {out[-2000:]} {err.read_text() if err.exists() else ''}"
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
        for s in sockets:
            s.close()

    one, two = expected("es", 1), expected("es", 2)
    for audio, mine, not_mine, who in [(heard[0], one, two, "first"), (heard[1], two, one, "second")]:
        assert len(audio) >= 400, f"the {who} caller heard {len(audio)} packets in 10 s"
        at = find(audio, mine)
        assert at is not None, f"the {who} caller never heard its position announced"
        # A few seconds of music first (media waits 3 s), then the whole announcement.
        assert 100 <= at <= 250, (who, at)
        assert find(audio, not_mine) is None, f"the {who} caller heard the other position"
    assert find(heard[2], one) is None and find(heard[2], expected("es", 2)) is None, "music only without announcements"
