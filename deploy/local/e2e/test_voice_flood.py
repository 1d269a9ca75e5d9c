"""An INVITE flood from one source is limited; the service keeps serving the others.

A voice-only media process of the test's own (test_voice_crash's OwnMedia) with a low
limit per source (`CENTRALITA_SIP_INVITE_RATE=1`, `CENTRALITA_SIP_INVITE_BURST=5`); the
tenant's trunk sends from 127.0.0.1 and 127.0.0.2. sipp (Debian `sip-tester`) floods from
127.0.0.1: 30 INVITEs with SDP at 100 a second, each from its own caller number
(`sipp/caller_flood.xml`: a 503 is acknowledged and done, an answer is held 8 s, then
BYE). The INVITEs over the limit get 503 and create nothing: sessions holds exactly as many
open contacts as INVITEs were admitted (the burst, a refill at most), media counts the rest
under `refused_flood`. Meanwhile a call from the other trunk address, 127.0.0.2, is answered
and queued as usual.
"""
import re
import uuid

import pytest

from conftest import http_get, wait_for
from test_voice import SIPP
from test_voice_crash import Desk, OwnMedia, call, m  # noqa: F401  (m: the module's fixture)

pytestmark = pytest.mark.skipif(SIPP is None, reason="needs sipp")

FLOOD, BURST = 30, 5


def invites(admin_port, outcome):
    status, body = http_get(admin_port, "/metrics")
    assert status == 200
    found = re.search(rf'^centralita_media_sip_invites_total\{{[^}}]*outcome="{outcome}"[^}}]*\}} (\d+)', body, re.M)
    return int(found.group(1)) if found else 0


def test_an_invite_flood_from_one_source_is_refused_503_creating_nothing_and_others_are_served(m, spawn, tmp_path):
    s = m.s
    run = uuid.uuid4().hex[:8]
    media = OwnMedia(spawn, run, CENTRALITA_SIP_INVITE_RATE="1", CENTRALITA_SIP_INVITE_BURST=str(BURST))
    desk = Desk(m, tmp_path, run, None, sources=("127.0.0.1", "127.0.0.2"))
    media.start()
    flood, flood_err = call(media.sip_port, "caller_flood", desk.number, "+3469900000", 8_000, 9,
                            extra=("-r", "100", "-m", str(FLOOD)))
    try:
        # The flood's answer or refusal comes at once; the admitted calls are held 8 s.
        assert wait_for(lambda: invites(media.admin_port, "refused_flood") + invites(media.admin_port, "created")
                        == FLOOD, 10), (invites(media.admin_port, "refused_flood"), invites(media.admin_port, "created"))
        created, refused = invites(media.admin_port, "created"), invites(media.admin_port, "refused_flood")
        assert BURST <= created <= BURST + 1, created
        assert refused == FLOOD - created
        # Nothing was created for the refused ones: the tenant's open contacts are exactly the
        # admitted calls, each a flood caller queued.
        flood_contacts = [c for c in desk.open_contacts()
                          if any(i.value.startswith("+3469900000") for i in c.customer_identities)]
        assert len(flood_contacts) == created, [c.name for c in flood_contacts]
        assert all(c.state == s.CONTACT_STATE_QUEUED for c in flood_contacts)

        # The other source is served while 127.0.0.1 is still over its rate.
        other = "+34688000111"
        served, served_err = call(media.sip_port, "queued_hangup", desk.number, other, 2_000, 9, source="127.0.0.2")
        assert wait_for(lambda: desk.state_of(other) == (s.CONTACT_STATE_QUEUED, ""), 10), desk.state_of(other)
        out, _ = served.communicate(timeout=30)
        assert served.returncode == 0, f"{out[-2000:]} {served_err.read_text() if served_err.exists() else ''}"
        assert invites(media.admin_port, "refused_flood") == refused, "the other source was not limited"

        out, _ = flood.communicate(timeout=60)
        assert flood.returncode == 0, f"every flood call was refused 503 or answered: {out[-2000:]} " \
                                      f"{flood_err.read_text() if flood_err.exists() else ''}"
        assert wait_for(lambda: not [c for c in desk.open_contacts()
                                     if any(i.value.startswith("+3469900000") for i in c.customer_identities)], 10)
    finally:
        if flood.poll() is None:
            flood.kill()
