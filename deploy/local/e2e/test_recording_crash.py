"""Kill -9 of the recording service mid-call: what it wrote is readable, the next calls record.

A recording process of this test's own (own ports, topic prefix, spool and store; the
suite's database) gets a call's header and four seconds of the customer's 440 Hz tone (and
the agent's 1000 Hz) over grpcio and is killed with SIGKILL while the stream is still open.
The caller sees the stream fail; nothing else depends on it. Started again on the same
spool, it finishes the cut recording at start-up: `INTERRUPTED`, its length what reached the
disk (at least two of the four seconds, at most three), a valid WAV per `soxi` whose left
channel is the customer's tone in every window and right the agent's. A call recorded after
the restart is complete.
"""
import os
import signal
import subprocess
import threading
import time
import uuid

import grpc
import pytest

from conftest import BIN, DEV_PUB, REPO, auth, cli, free_port, http_get, mint, wait_for
from test_recording import RATE, call_messages, channels, get, goertzel, manifest, ulaw_tone


@pytest.fixture(scope="module")
def m(pb):
    from centralita.recording.v1 import recording_pb2, recording_pb2_grpc

    class M:
        r = recording_pb2
        rg = recording_pb2_grpc

    return M


def test_a_killed_recording_service_keeps_what_it_wrote_and_records_the_next_calls(m, spawn, tmp_path):
    from google.protobuf import duration_pb2, timestamp_pb2

    run = uuid.uuid4().hex[:8]
    prefix = f"{os.environ.get('CENTRALITA_KAFKA_TOPIC_PREFIX', 'centralita.')}reccrash-{run}."
    tenant = f"crash-{run}"
    grpc_port, admin_port, playback_port = free_port(), free_port(), free_port()
    env = {
        "CENTRALITA_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "CENTRALITA_ADMIN_ADDR": f"127.0.0.1:{admin_port}",
        "CENTRALITA_PLAYBACK_ADDR": f"127.0.0.1:{playback_port}",
        "CENTRALITA_KAFKA_TOPIC_PREFIX": prefix,
        "CENTRALITA_JWT_PUBLIC_KEY_FILE": str(DEV_PUB),
        "CENTRALITA_RECORDING_STORE_URL": f"file://{tmp_path / 'objects'}",
        "CENTRALITA_RECORDING_SPOOL_DIR": str(tmp_path / "spool"),
        "CENTRALITA_RECORDING_KEYS_FILE": str(REPO / "deploy/local/dev-keys/recording-keys.yaml"),
        "CENTRALITA_PLAYBACK_URL_KEY_FILE": str(REPO / "deploy/local/dev-keys/recording-url.key"),
        # Static membership of its own: the restarted process takes its partitions straight back.
        "CENTRALITA_KAFKA_GROUP_INSTANCE_ID": f"reccrash-{run}",
    }
    log = tmp_path / "recording.log"

    def start():
        p = spawn([str(BIN / "centralita-recording")], env, log)
        assert wait_for(lambda: http_get(admin_port, "/readyz")[0] == 200, 60), log.read_text()[-3000:]
        return p

    proc = start()
    (tmp_path / "t.yaml").write_text(manifest(tenant))
    cli("admin", "tenant", "apply", "-f", str(tmp_path / "t.yaml"), env={"CENTRALITA_KAFKA_TOPIC_PREFIX": prefix})
    channel = mint("--tenant", tenant, "--role", "channel")
    supervisor = mint("--tenant", tenant, "--role", "supervisor")
    r = m.r

    def stub():
        return m.rg.RecordingServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))

    def knows():
        try:
            stub().ListRecordings(r.ListRecordingsRequest(contact_id="x"), metadata=auth(supervisor), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(knows, 60), "the recording process never learnt the tenant"

    def d(seconds):
        return duration_pb2.Duration(seconds=int(seconds), nanos=int(round((seconds - int(seconds)) * 1e9)))

    contact = f"c-{run}"
    sent, hold = threading.Event(), threading.Event()

    def messages():
        start_time = timestamp_pb2.Timestamp()
        start_time.GetCurrentTime()
        yield r.IngestCallRequest(header=r.CallHeader(tenant=tenant, contact_id=contact, queue="support",
                                                      start_time=start_time, codec=r.AUDIO_CODEC_PCMU))
        customer, agent = ulaw_tone(440, 4.0), ulaw_tone(1000, 4.0)
        for i in range(0, len(customer), 160):
            yield r.IngestCallRequest(audio=r.AudioChunk(leg=r.LEG_CUSTOMER, offset=d(i / RATE), payload=customer[i:i + 160]))
            yield r.IngestCallRequest(audio=r.AudioChunk(leg=r.LEG_AGENT, offset=d(i / RATE), payload=agent[i:i + 160]))
        sent.set()
        hold.wait(30)  # the call goes on; the service dies meanwhile

    outcome = {}

    def call():
        try:
            outcome["ok"] = stub().IngestCall(messages(), metadata=auth(channel), timeout=60)
        except grpc.RpcError as e:
            outcome["error"] = e.code()

    caller = threading.Thread(target=call)
    caller.start()
    assert sent.wait(30)
    def synced():
        # Two sealed one-second segments reach the disk once four seconds were sent and applied.
        spools = list((tmp_path / "spool").rglob("*.crec"))
        return len(spools) == 1 and spools[0].stat().st_size >= 16 + 2 * 32016

    assert wait_for(synced, 10), list((tmp_path / "spool").rglob("*"))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    hold.set()
    caller.join(30)
    assert outcome.get("error") in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL), outcome

    start()

    def finished():
        got = stub().ListRecordings(r.ListRecordingsRequest(contact_id=contact), metadata=auth(supervisor), timeout=5)
        return got.recordings and got.recordings[0].state == r.RECORDING_STATE_INTERRUPTED and got.recordings[0]

    assert wait_for(finished, 30), log.read_text()[-3000:]
    cut = finished()
    seconds = cut.duration.seconds + cut.duration.nanos / 1e9
    assert 2.0 <= seconds <= 3.0, seconds
    url = stub().CreatePlaybackUrl(r.CreatePlaybackUrlRequest(name=cut.name), metadata=auth(supervisor)).url
    status, _, wav = get(url)
    assert status == 200
    (tmp_path / "cut.wav").write_bytes(wav)
    soxi = float(subprocess.run(["soxi", "-D", str(tmp_path / "cut.wav")], capture_output=True, text=True,
                                check=True).stdout)
    assert abs(soxi - seconds) < 0.01
    left, right = channels(wav)
    for s in range(0, len(left) - 800, 800):
        assert goertzel(left[s:s + 800], 440) > 50 * goertzel(left[s:s + 800], 1000), s
        assert goertzel(right[s:s + 800], 1000) > 50 * goertzel(right[s:s + 800], 440), s
    assert not list((tmp_path / "spool").rglob("*.crec")), "the spool was finished and removed"

    done = stub().IngestCall(call_messages(m, tenant, f"c2-{run}"), metadata=auth(channel), timeout=60)
    assert done.state == r.RECORDING_STATE_COMPLETE
