"""Consult, warm transfer and conference on real calls, measured by ear.

The peers are independent of the platform, as in `test_voice_agents.py`: sipp signals the
customer's call from a trunk, the customer's audio is this test's own RTP endpoint saying
440 Hz (PCMU, 20 ms) and recording what media sends back with its arrival time; the agents'
phones are **baresip** answering by themselves, Ana's microphone a 1000 Hz tone, Bob's
1500 Hz, each recording what it hears. The contact operations are sessions' API
(`ConsultContact`, `CompleteConsult`) called as the agents would from their desktops;
media follows them.

Cases:
- warm transfer: Ana consults Bob; his phone rings for the consult leg and answers; Ana and
  Bob hear each other while the customer hears the music on hold and neither agent; TRANSFER
  → the customer and Bob hear each other, Ana's phone gets a BYE;
- conference: CONFERENCE → each of the three hears the other two (the customer 1000 and
  1500 Hz in the same windows, Ana 440 and 1500, Bob 440 and 1000); Ana leaves (TRANSFER) →
  the customer and Bob still hear each other, Ana's phone gets a BYE and is no longer heard;
  the customer hanging up ends Bob's phone too;
- cancel: Bob's phone is hung up, Ana keeps the (held) customer; resumed, they hear each
  other again;
- a supervisor (Sue, 2000 Hz, her phone under her id in `spec.voice.phones`) monitors Ana's
  call through sessions' MonitorContact: LISTEN → Sue hears both, no one hears Sue; WHISPER
  → Ana hears Sue, the customer does not (and the customer and Ana still hear each other);
  BARGE → all three hear each other; StopMonitoring → Sue's phone gets a BYE and the call is
  the two of them again. Refusals: an agent (PERMISSION_DENIED), tenant B's supervisor
  (NOT_FOUND), a second supervisor while Sue is on (FAILED_PRECONDITION).

The conference and the supervisor's calls are recorded (`recording.voice: all`): the
recording, fetched with StreamRecordingAudio, has the customer on the left and on the right
what the customer heard — Ana and Bob together during the conference, Bob alone after Ana
left; Ana alone while Sue listens or whispers, Ana and Sue together when Sue barges in.
"""
import random
import time

import grpc
import pytest

from conftest import auth, cli, mint, sessions_knows_tenant, wait_for
from test_voice import goertzel, queued_call, ulaw_to_linear
from test_voice_agents import (  # noqa: F401 (fixtures)
    AGENT_HZ, BARESIP, CALLER_HZ, MUSIC_HZ, SIPP, SOX, WINDOW, Baresip, CallerAudio, desk, desk_tenant, m, rec,
    recordings_of, watching,
)

pytestmark = pytest.mark.skipif(None in (SIPP, BARESIP, SOX), reason="needs sipp, baresip and sox")

ANA_HZ, BOB_HZ, SUE_HZ = AGENT_HZ, 1500.0, 2000.0
LOUD = 1e6  # Goertzel power of a tone of amplitude ~2000 (the parties say ~8000)


def heard(samples, hz):
    return goertzel(samples, hz) > LOUD


def windows(samples):
    return [samples[at:at + WINDOW] for at in range(0, len(samples) - WINDOW + 1, WINDOW)]


def count(samples, *tones, without=()):
    """Windows of `samples` in which every tone of `tones` is heard and none of `without`."""
    return sum(all(heard(w, t) for t in tones) and not any(heard(w, t) for t in without) for w in windows(samples))


def received_between(audio, start, end):
    """The PCM the customer received between two monotonic instants."""
    return [ulaw_to_linear(u) for at, pt, _, payload in audio.received if pt == 0 and start <= at < end
            for u in payload]


def recorded(rec, desk):
    """The call's recording (the longest complete one of the desk's contact): its start as
    wall-clock seconds, and its left and right channels."""
    from test_recording import channels

    done = []
    assert wait_for(lambda: (done.extend(r for r in recordings_of(rec, desk)
                                         if r.state == rec.r.RECORDING_STATE_COMPLETE) or bool(done)), 20), \
        f"no complete recording: {recordings_of(rec, desk)}"
    r = max(done, key=lambda r: r.duration.seconds + r.duration.nanos / 1e9)
    wav = b"".join(chunk.data for chunk in rec.stub.StreamRecordingAudio(
        rec.r.StreamRecordingAudioRequest(name=r.name), metadata=auth(desk.sup), timeout=30))
    left, right = channels(wav)
    return r.start_time.seconds + r.start_time.nanos / 1e9, list(left), list(right)


def span(samples, start, t0, t1):
    """The samples of a recording starting at wall-clock `start` between wall-clock `t0`
    and `t1`."""
    return samples[max(0, int((t0 - start) * 8000)):max(0, int((t1 - start) * 8000))]


def ended_by_media(phone):
    """The phone's call ended while the phone still ran: media's BYE."""
    return "terminated (duration" in phone.log.read_text()


class Call:
    """A customer's call connected to Ana's phone, with Bob signed in for the consult."""

    def __init__(self, m, desk, tmp_path, hold_ms, recording="none"):
        self.m, self.desk = m, desk
        self.ana = self.bob = self.audio = self.sipp = self.stop = None
        try:
            self.start(tmp_path, hold_ms, recording)
        except BaseException:
            self.close()
            raise

    def start(self, tmp_path, hold_ms, recording):
        m, desk = self.m, self.desk
        self.ana = Baresip(tmp_path, "ana", ANA_HZ)
        self.bob = Baresip(tmp_path, "bob", BOB_HZ)
        self.audio = CallerAudio(CALLER_HZ)
        self.caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
        self.ids = desk.setup({"ana": self.ana.uri, "bob": self.bob.uri}, recording=recording)
        desk.sign_in(self.ids["ana"])
        self.stop, self.watcher = watching(desk, self.caller)
        self.sipp, self.sipp_err = queued_call(desk.number, self.caller, hold_ms, self.audio.port)
        s = m.s
        assert wait_for(lambda: (s.CONTACT_STATE_CONNECTED, self.ids["ana"]) in desk.states, 20), desk.states
        self.name = desk.name
        self.ta = mint("--tenant", desk.tenant, "--role", "agent", "--agent-id", self.ids["ana"])
        self.tb = mint("--tenant", desk.tenant, "--role", "agent", "--agent-id", self.ids["bob"])
        desk.sign_in(self.ids["bob"])

    def read(self, name):
        return self.desk.contacts.GetContact(self.m.s.GetContactRequest(name=name), metadata=auth(self.desk.sup),
                                             timeout=5)

    def consult(self):
        """Ana consults her queue, where Bob is the one agent free; returns once his phone
        answered the leg."""
        s = self.m.s
        leg = self.desk.contacts.ConsultContact(s.ConsultContactRequest(name=self.name, queue="support"),
                                                metadata=auth(self.ta), timeout=10)
        assert wait_for(lambda: self.read(leg.name).state == s.CONTACT_STATE_CONNECTED, 20), self.read(leg.name)
        assert self.read(leg.name).agent_id == self.ids["bob"], "the leg was answered by Bob's phone"
        return leg

    def complete(self, outcome, token=None):
        s = self.m.s
        return self.desk.contacts.CompleteConsult(s.CompleteConsultRequest(name=self.name, outcome=outcome),
                                                  metadata=auth(token or self.ta), timeout=10)

    def finish(self):
        out, _ = self.sipp.communicate(timeout=90)
        assert self.sipp.returncode == 0, f"sipp: {out[-2000:]} {self.sipp_err.read_text() if self.sipp_err.exists() else ''}"
        self.stop.set()
        self.watcher.join(5)

    def close(self):
        if self.stop is not None:
            self.stop.set()
        if self.sipp is not None and self.sipp.poll() is None:
            self.sipp.kill()
        for part in (self.audio, self.ana, self.bob):
            if part is not None:
                part.close()


@pytest.fixture
def call_factory(m, desk, tmp_path):
    calls = []

    def make(hold_ms, recording="none"):
        c = Call(m, desk, tmp_path, hold_ms, recording)
        calls.append(c)
        return c

    yield make
    for c in calls:
        c.close()


def test_warm_transfer_agents_hear_each_other_the_customer_music_then_bob(m, call_factory):
    s = m.s
    call = call_factory(20000)
    time.sleep(2)
    call.consult()
    consult_from = time.monotonic()
    time.sleep(4)
    consult_to = time.monotonic()
    done = call.complete(s.CompleteConsultRequest.OUTCOME_TRANSFER)
    assert done.agent_id == call.ids["bob"]
    transfer_at = time.monotonic()
    assert wait_for(lambda: ended_by_media(call.ana), 10), "Ana's phone got a BYE at the transfer"
    assert not ended_by_media(call.bob), "Bob is still on the call"
    time.sleep(4)
    after_to = time.monotonic()
    call.finish()
    assert wait_for(lambda: ended_by_media(call.bob), 10), "the customer's hang-up ends Bob's phone"

    # While consulting: the customer hears the music, never an agent.
    held = received_between(call.audio, consult_from + 0.5, consult_to)
    assert count(held, without=(ANA_HZ, BOB_HZ)) == len(windows(held)) >= 15, "no agent heard while held"
    assert sum(any(heard(w, hz) for hz in MUSIC_HZ) for w in windows(held)) >= 10, "the music on hold played"
    # After the transfer: Bob, and not Ana.
    after = received_between(call.audio, transfer_at + 0.5, after_to)
    assert count(after, BOB_HZ, without=(ANA_HZ,)) >= 10, "the customer hears Bob after the transfer"
    # Ana heard the customer, then Bob; Bob heard Ana, then the customer.
    ana, bob = call.ana.heard(), call.bob.heard()
    assert count(ana, CALLER_HZ, without=(BOB_HZ,)) >= 5, "Ana heard the customer before the consult"
    assert count(ana, BOB_HZ, without=(CALLER_HZ,)) >= 10, "Ana heard Bob during the consult, not the customer"
    assert count(bob, ANA_HZ, without=(CALLER_HZ,)) >= 10, "Bob heard Ana during the consult, not the customer"
    assert count(bob, CALLER_HZ, without=(ANA_HZ,)) >= 10, "Bob heard the customer after the transfer"
    # Never the two at once (but for the one window astride the transfer).
    assert count(bob, CALLER_HZ, ANA_HZ) <= 1, "never the two at once"


def test_a_conference_mixes_all_three_and_ana_leaving_leaves_the_customer_with_bob(m, call_factory, desk, rec):
    s = m.s
    call = call_factory(22000, recording="all")
    time.sleep(1)
    call.consult()
    time.sleep(1)
    conf = call.complete(s.CompleteConsultRequest.OUTCOME_CONFERENCE)
    assert call.ids["bob"] in [p.agent_id for p in conf.participants if not p.HasField("leave_time")]
    conf_from, conf_wall = time.monotonic(), time.time()
    time.sleep(5)
    conf_to, conf_wall_to = time.monotonic(), time.time()
    # Ana leaves the conference: the call is Bob's.
    left = call.complete(s.CompleteConsultRequest.OUTCOME_TRANSFER)
    assert left.agent_id == call.ids["bob"]
    left_at, left_wall = time.monotonic(), time.time()
    assert wait_for(lambda: ended_by_media(call.ana), 10), "Ana's phone got a BYE when she left"
    time.sleep(4)
    after_to, after_wall_to = time.monotonic(), time.time()
    call.finish()
    assert wait_for(lambda: ended_by_media(call.bob), 10), "the customer's hang-up ends Bob's phone"

    mixed = received_between(call.audio, conf_from + 1.0, conf_to)
    assert count(mixed, ANA_HZ, BOB_HZ) >= 15, "the customer hears Ana and Bob at once"
    assert count(mixed, CALLER_HZ) <= 2, "the customer does not hear itself"
    after = received_between(call.audio, left_at + 0.5, after_to)
    assert count(after, BOB_HZ, without=(ANA_HZ,)) >= 10, "after Ana left, the customer hears Bob only"
    ana, bob = call.ana.heard(), call.bob.heard()
    assert count(ana, CALLER_HZ, BOB_HZ) >= 15, "Ana hears the customer and Bob at once"
    assert count(ana, ANA_HZ) <= 2, "Ana does not hear herself"
    assert count(bob, CALLER_HZ, ANA_HZ) >= 15, "Bob hears the customer and Ana at once"
    assert count(bob, BOB_HZ) <= 2, "Bob does not hear himself"
    assert count(bob, CALLER_HZ, without=(ANA_HZ,)) >= 10, "Bob hears the customer alone after Ana left"
    # The recording: the customer left, and right what the customer heard.
    start, left_ch, right_ch = recorded(rec, desk)
    in_conf = span(right_ch, start, conf_wall + 1.0, conf_wall_to)
    print(f"recorded conference: {count(in_conf, ANA_HZ, BOB_HZ)} of {len(windows(in_conf))} windows Ana and Bob")
    assert count(in_conf, ANA_HZ, BOB_HZ) >= 15, "the conference's third party is in the recording"
    assert count(span(left_ch, start, conf_wall + 1.0, conf_wall_to), CALLER_HZ, without=(ANA_HZ, BOB_HZ)) >= 15
    after_rec = span(right_ch, start, left_wall + 0.5, after_wall_to)
    assert count(after_rec, BOB_HZ, without=(ANA_HZ,)) >= 10, "after Ana left, Bob alone on the right"


def test_a_cancelled_consult_hangs_up_bob_and_gives_ana_her_customer_back(m, call_factory):
    s = m.s
    call = call_factory(16000)
    time.sleep(1)
    call.consult()
    time.sleep(2)
    cancelled = call.complete(s.CompleteConsultRequest.OUTCOME_CANCEL)
    assert (cancelled.agent_id, cancelled.consult_leg) == (call.ids["ana"], "")
    assert wait_for(lambda: ended_by_media(call.bob), 10), "Bob's phone got a BYE"
    assert not ended_by_media(call.ana)
    # Still held (sessions leaves the customer on hold with Ana): she resumes.
    if cancelled.on_hold:
        call.desk.contacts.ResumeContact(s.ResumeContactRequest(name=call.name), metadata=auth(call.ta), timeout=10)
    back_at = time.monotonic()
    time.sleep(4)
    back_to = time.monotonic()
    call.finish()
    back = received_between(call.audio, back_at + 1.0, back_to)
    assert count(back, ANA_HZ, without=(BOB_HZ,)) >= 10, "the customer hears Ana again, not Bob"
    ana = call.ana.heard()
    # Ana heard the customer before the consult and again after it (most of the call).
    assert count(ana, CALLER_HZ, without=(BOB_HZ,)) >= 20


def test_consult_operations_are_refused_across_tenants_and_to_another_agent(m, call_factory, desk, tmp_path):
    """Tenant B's agent and supervisor, and Bob (not the holder), cannot drive Ana's call."""
    s = m.s
    call = call_factory(8000)
    tenant_b = f"{desk.tenant}-b"
    (tmp_path / "b.yaml").write_text(desk_tenant(tenant_b, f"+3493{random.randrange(10_000_000, 99_999_999)}", {}))
    cli("admin", "tenant", "apply", "-f", str(tmp_path / "b.yaml"))
    other_sup = mint("--tenant", tenant_b, "--role", "supervisor")
    assert sessions_knows_tenant(desk.contacts, s, other_sup)
    other = mint("--tenant", tenant_b, "--role", "agent", "--agent-id", call.ids["ana"])
    for token in (other, other_sup):
        with pytest.raises(grpc.RpcError) as refused:
            desk.contacts.ConsultContact(s.ConsultContactRequest(name=call.name, queue="support"),
                                         metadata=auth(token), timeout=10)
        assert refused.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED), refused.value
    with pytest.raises(grpc.RpcError) as refused:
        desk.contacts.ConsultContact(s.ConsultContactRequest(name=call.name, queue="support"),
                                     metadata=auth(call.tb), timeout=10)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND, refused.value
    assert call.read(call.name).consult_leg == "", "nothing started"
    call.finish()


def test_a_supervisor_listens_whispers_and_barges_in(m, desk, rec, tmp_path):
    s = m.s
    ana = sue = audio = proc = stop = None
    caller = f"+346{random.randrange(10_000_000, 99_999_999)}"
    try:
        ana, sue = Baresip(tmp_path, "ana", ANA_HZ), Baresip(tmp_path, "sue", SUE_HZ)
        audio = CallerAudio(CALLER_HZ)
        ids = desk.setup({"ana": ana.uri, "sue": sue.uri}, recording="all")
        desk.sign_in(ids["ana"])
        stop, watcher = watching(desk, caller)
        proc, err = queued_call(desk.number, caller, 24000, audio.port)
        assert wait_for(lambda: (s.CONTACT_STATE_CONNECTED, ids["ana"]) in desk.states, 20), desk.states
        ana_from = desk.times[desk.states.index((s.CONTACT_STATE_CONNECTED, ids["ana"]))]
        name = desk.name
        sup = mint("--tenant", desk.tenant, "--role", "supervisor", "--agent-id", ids["sue"])

        # Refused: an agent, another tenant's supervisor.
        tenant_b = f"{desk.tenant}-b"
        (tmp_path / "b.yaml").write_text(desk_tenant(tenant_b, f"+3493{random.randrange(10_000_000, 99_999_999)}", {}))
        cli("admin", "tenant", "apply", "-f", str(tmp_path / "b.yaml"))
        sup_b = mint("--tenant", tenant_b, "--role", "supervisor", "--agent-id", ids["sue"])
        assert sessions_knows_tenant(desk.contacts, s, sup_b)
        ta = mint("--tenant", desk.tenant, "--role", "agent", "--agent-id", ids["ana"])
        for token, code in ((ta, grpc.StatusCode.PERMISSION_DENIED), (sup_b, grpc.StatusCode.NOT_FOUND)):
            for call in (lambda t: desk.contacts.MonitorContact(
                    s.MonitorContactRequest(name=name, mode=s.MONITOR_MODE_LISTEN), metadata=auth(t), timeout=10),
                         lambda t: desk.contacts.StopMonitoring(
                    s.StopMonitoringRequest(name=name), metadata=auth(t), timeout=10)):
                with pytest.raises(grpc.RpcError) as refused:
                    call(token)
                assert refused.value.code() == code, refused.value
        with pytest.raises(grpc.RpcError) as refused:
            desk.contacts.MonitorContact(s.MonitorContactRequest(name=name), metadata=auth(sup), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, "a mode is needed"

        def monitor(mode):
            return desk.contacts.MonitorContact(s.MonitorContactRequest(name=name, mode=mode), metadata=auth(sup),
                                                timeout=10)

        phases, walls = {}, {}
        on = monitor(s.MONITOR_MODE_LISTEN)
        assert (on.monitor.supervisor, on.monitor.mode) == (ids["sue"], s.MONITOR_MODE_LISTEN)
        assert wait_for(lambda: "answering call" in sue.log.read_text(), 10), "Sue's phone rang and answered"
        time.sleep(1.0)
        for mode in (s.MONITOR_MODE_LISTEN, s.MONITOR_MODE_WHISPER, s.MONITOR_MODE_BARGE):
            if mode != s.MONITOR_MODE_LISTEN:
                assert monitor(mode).monitor.mode == mode
            start, wall = time.monotonic(), time.time()
            time.sleep(4)
            phases[mode] = (start, time.monotonic())
            walls[mode] = (wall, time.time())
        other = mint("--tenant", desk.tenant, "--role", "supervisor", "--agent-id", f"tom-{ids['sue']}")
        with pytest.raises(grpc.RpcError) as refused:
            desk.contacts.MonitorContact(s.MonitorContactRequest(name=name, mode=s.MONITOR_MODE_LISTEN),
                                         metadata=auth(other), timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value
        off = desk.contacts.StopMonitoring(s.StopMonitoringRequest(name=name), metadata=auth(sup), timeout=10)
        assert not off.HasField("monitor")
        stopped = time.monotonic()
        assert wait_for(lambda: ended_by_media(sue), 10), "Sue's phone got a BYE"
        time.sleep(4)
        after = (stopped + 1.0, time.monotonic())
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"sipp: {out[-2000:]} {err.read_text() if err.exists() else ''}"
        stop.set()
        watcher.join(5)
        ana_heard, sue_heard = ana.heard(), sue.heard()
    finally:
        if stop is not None:
            stop.set()
        if proc is not None and proc.poll() is None:
            proc.kill()
        for part in (audio, ana, sue):
            if part is not None:
                part.close()

    def customer(phase):
        start, end = phase
        return received_between(audio, start + 1.0, end)

    def ana_in(phase):
        # Ana's recording starts when her phone answered (when the contact connected).
        start, end = phase
        return ana_heard[int((start + 1.0 - ana_from) * 8000):int((end - 0.3 - ana_from) * 8000)]

    listen, whisper, barge = (phases[k] for k in (s.MONITOR_MODE_LISTEN, s.MONITOR_MODE_WHISPER,
                                                  s.MONITOR_MODE_BARGE))
    # LISTEN: the parties hear each other, never Sue.
    assert count(customer(listen), ANA_HZ, without=(SUE_HZ,)) >= 10
    assert count(ana_in(listen), CALLER_HZ, without=(SUE_HZ,)) >= 10
    # WHISPER: Ana hears the customer and Sue; the customer hears Ana only.
    assert count(customer(whisper), ANA_HZ, without=(SUE_HZ,)) >= 10, "the customer does not hear the whisper"
    assert count(ana_in(whisper), CALLER_HZ, SUE_HZ) >= 10, "Ana hears the customer and the whisper"
    # BARGE: everyone hears everyone.
    assert count(customer(barge), ANA_HZ, SUE_HZ) >= 10, "the customer hears Ana and Sue"
    assert count(ana_in(barge), CALLER_HZ, SUE_HZ) >= 10
    # Sue heard both parties throughout, never herself.
    assert count(sue_heard, CALLER_HZ, ANA_HZ) >= 25, "Sue hears the customer and Ana"
    assert count(sue_heard, SUE_HZ) <= 2
    # Stopped: the two of them again.
    assert count(received_between(audio, *after), ANA_HZ, without=(SUE_HZ,)) >= 10
    # The recording: on the right what the customer heard, Sue only when she barged in.
    start, left_ch, right_ch = recorded(rec, desk)

    def right_in(mode):
        t0, t1 = walls[mode]
        return span(right_ch, start, t0 + 1.0, t1)

    assert count(right_in(s.MONITOR_MODE_LISTEN), ANA_HZ, without=(SUE_HZ,)) >= 10, "listening is not recorded"
    assert count(right_in(s.MONITOR_MODE_WHISPER), ANA_HZ, without=(SUE_HZ,)) >= 10, "a whisper is not recorded"
    assert count(right_in(s.MONITOR_MODE_BARGE), ANA_HZ, SUE_HZ) >= 10, "the barge is recorded"
    t0, t1 = walls[s.MONITOR_MODE_BARGE]
    assert count(span(left_ch, start, t0 + 1.0, t1), CALLER_HZ, without=(SUE_HZ,)) >= 10, "the customer alone left"
