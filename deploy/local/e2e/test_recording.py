"""A call recorded by the recording service, checked by independent peers.

Two legs of G.711 µ-law tones (customer 440 Hz, agent 1000 Hz, encoded by Python's own
`audioop`) streamed into the running service with grpcio as the media service would, with a
PCI pause in the middle; the WAV file fetched through the signed playback URL and checked
by `sox` and `ffprobe` (a valid 8 kHz 16-bit stereo WAV, the call's duration within 100 ms)
and by tone detection per window (left = customer, right = agent, the pause digital
silence). The stored object is decrypted by an independent implementation (Python
`cryptography`) from docs/recording-format.md alone, and refused when the tenant id or the
recording id are swapped or another tenant's key is used. Another tenant reaches nothing.
"""
import base64
import hashlib
import hmac
import json
import math
import os
import pathlib
import shutil
import struct
import subprocess
import urllib.error
import urllib.request
import uuid
import warnings

import grpc
import pytest
import yaml

from conftest import REPO, auth, cli, endpoints, mint, wait_for

RATE = 8000
CALL_SECONDS = 5.0
PAUSE = (2.0, 3.0)
KEYS_FILE = pathlib.Path(os.environ.get("CENTRALITA_RECORDING_KEYS_FILE",
                                        REPO / "deploy/local/dev-keys/recording-keys.yaml"))


@pytest.fixture(scope="module")
def m(pb):
    from centralita.recording.v1 import recording_pb2, recording_pb2_grpc

    class M:
        r = recording_pb2
        rg = recording_pb2_grpc

    return M


def manifest(tenant):
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: Recording {tenant}
  channels: [voice]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: Europe/Madrid }}
  dataRetentionDays: 30
  recording: {{ voice: all, allowPause: true }}
  routing:
    queues:
      - {{ id: support }}
"""


def ulaw_tone(freq, seconds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    n = int(seconds * RATE)
    pcm = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * i / RATE))) for i in range(n))
    return audioop.lin2ulaw(pcm, 2)


def call_messages(m, tenant, contact):
    from google.protobuf import duration_pb2, timestamp_pb2

    def d(seconds):
        return duration_pb2.Duration(seconds=int(seconds), nanos=int(round((seconds - int(seconds)) * 1e9)))

    r = m.r
    start = timestamp_pb2.Timestamp()
    start.GetCurrentTime()
    yield r.IngestCallRequest(header=r.CallHeader(tenant=tenant, contact_id=contact, queue="support",
                                                  agent_ids=["agent-1"], start_time=start,
                                                  codec=r.AUDIO_CODEC_PCMU))
    customer, agent = ulaw_tone(440, CALL_SECONDS), ulaw_tone(1000, CALL_SECONDS)
    chunk = 160  # 20 ms
    for i in range(0, len(customer), chunk):
        t = i / RATE
        if t == PAUSE[0]:
            yield r.IngestCallRequest(pause=r.RecordingPause(offset=d(t)))
        if t == PAUSE[1]:
            yield r.IngestCallRequest(resume=r.RecordingResume(offset=d(t)))
        yield r.IngestCallRequest(audio=r.AudioChunk(leg=r.LEG_CUSTOMER, offset=d(t), payload=customer[i:i + chunk]))
        yield r.IngestCallRequest(audio=r.AudioChunk(leg=r.LEG_AGENT, offset=d(t), payload=agent[i:i + chunk]))
    yield r.IngestCallRequest(end=r.CallEnd(offset=d(CALL_SECONDS)))


def goertzel(samples, freq):
    coeff = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def channels(wav_bytes):
    assert wav_bytes[:4] == b"RIFF" and wav_bytes[8:12] == b"WAVE"
    data = wav_bytes[44:]
    frames = struct.unpack(f"<{len(data) // 2}h", data)
    return frames[0::2], frames[1::2]


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# --- The independent decryptor: docs/recording-format.md, nothing else. ---------------------

def tenant_key(root, tenant):
    return hmac.new(root, b"centralita.recording.tenant-key.v1\0" + tenant.encode(), hashlib.sha256).digest()


def lp(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def unwrap(kek, version, tenant, recording, wrapped):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    aad = b"centralita.recording.data-key.v1\0" + lp(tenant) + lp(recording) + struct.pack(">I", version)
    return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], aad)


def decrypt_object(data_key, tenant, recording, obj):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    header = obj[:16]
    assert header[:4] == b"CREC" and header[4] == 1
    segment = struct.unpack(">I", header[5:9])[0]
    prefix = header[9:16]
    aad = header + lp(tenant) + lp(recording)
    body = obj[16:]
    sealed = segment + 16
    count = max(1, -(-len(body) // sealed))
    aead, out = AESGCM(data_key), bytearray()
    for i in range(count):
        last = i == count - 1
        nonce = prefix + struct.pack(">I", i) + (b"\x01" if last else b"\x00")
        out += aead.decrypt(nonce, body[i * sealed:(i + 1) * sealed], aad)
    return bytes(out)


def psql(sql):
    url = os.environ.get("CENTRALITA_DATABASE_URL",
                         "postgres://centralita:centralita@127.0.0.1:5440/centralita")
    out = subprocess.run(["psql", url, "-At", "-c", sql], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip().splitlines()


def store_dir():
    url = os.environ.get("CENTRALITA_RECORDING_STORE_URL")
    if url:
        return pathlib.Path(url.removeprefix("file://"))
    data = os.environ.get("CENTRALITA_DATA", str(REPO / ".local"))
    return pathlib.Path(data) / "recordings" / os.environ.get("CENTRALITA_RUN_NAME", "dev") / "objects"


@pytest.mark.skipif(not shutil.which("sox") or not shutil.which("ffprobe"), reason="install.sh installs sox, ffmpeg")
def test_a_recorded_call_plays_back_left_customer_right_agent_and_decrypts_independently(m, tmp_path):
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    tenant, other = f"rec-{run}", f"rec-{run}-b"
    (tmp_path / "t.yaml").write_text(manifest(tenant) + "---\n" + manifest(other))
    cli("admin", "tenant", "apply", "-f", str(tmp_path / "t.yaml"))
    channel = mint("--tenant", tenant, "--role", "channel")
    supervisor = mint("--tenant", tenant, "--role", "supervisor")
    other_sup = mint("--tenant", other, "--role", "supervisor")
    other_admin = mint("--tenant", other, "--role", "tenant_admin")
    rec = m.rg.RecordingServiceStub(grpc.insecure_channel(eps["recording"]))
    r = m.r

    def knows(token):
        def check():
            try:
                rec.ListRecordings(r.ListRecordingsRequest(contact_id="none"), metadata=auth(token), timeout=5)
                return True
            except grpc.RpcError:
                return False
        return check

    assert wait_for(knows(supervisor), 60) and wait_for(knows(other_sup), 60), "recording never learnt the tenants"

    contact = f"c-{run}"
    done = rec.IngestCall(call_messages(m, tenant, contact), metadata=auth(channel), timeout=60)
    assert done.state == r.RECORDING_STATE_COMPLETE
    assert done.duration.seconds == 5 and done.duration.nanos == 0
    assert [(s.start_offset.seconds, s.end_offset.seconds) for s in done.paused_spans] == [(2, 3)]

    url = rec.CreatePlaybackUrl(r.CreatePlaybackUrlRequest(name=done.name), metadata=auth(supervisor)).url
    status, headers, wav = get(url)
    assert status == 200 and headers.get("content-type") == "audio/wav"
    path = tmp_path / "call.wav"
    path.write_bytes(wav)

    # sox and ffprobe: a proper WAV of the call's length.
    soxi = subprocess.run(["soxi", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Channels       : 2" in soxi and "Sample Rate    : 8000" in soxi and "16-bit" in soxi, soxi
    sox_seconds = float(subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True, check=True).stdout)
    assert abs(sox_seconds - CALL_SECONDS) <= 0.1, sox_seconds
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json",
                                       str(path)], capture_output=True, text=True, check=True).stdout)
    stream = probe["streams"][0]
    assert (stream["codec_name"], stream["channels"], stream["sample_rate"]) == ("pcm_s16le", 2, "8000")
    assert abs(float(probe["format"]["duration"]) - CALL_SECONDS) <= 0.1
    stat = subprocess.run(["sox", str(path), "-n", "trim", "2.05", "0.9", "stat"], capture_output=True, text=True)
    assert "Maximum amplitude:     0.000000" in stat.stderr, stat.stderr

    # The tones: each 100 ms window outside the pause, left is 440 Hz and right 1000 Hz.
    left, right = channels(wav)
    window = 800
    for start in range(0, len(left) - window, window):
        t = start / RATE
        lw, rw = left[start:start + window], right[start:start + window]
        if PAUSE[0] <= t < PAUSE[1]:
            assert not any(lw) and not any(rw), f"audio in the pause at {t}s"
            continue
        assert goertzel(lw, 440) > 50 * goertzel(lw, 1000), f"left at {t}s is not the customer"
        assert goertzel(rw, 1000) > 50 * goertzel(rw, 440), f"right at {t}s is not the agent"

    # A range, as a media player asks.
    status, headers, part = get(url, {"Range": "bytes=100-199"})
    assert status == 206 and part == wav[100:200], headers

    # The stored object, decrypted from the documented format alone.
    rec_id = done.name.removeprefix("recordings/")
    row = psql(f"SELECT set_config('centralita.tenant', '{tenant}', false); "
               f"SELECT k.key_version, encode(k.wrapped, 'hex'), r.object_key FROM recording.data_keys k "
               f"JOIN recording.recordings r ON r.tenant = k.tenant AND r.id = k.recording_id "
               f"WHERE k.recording_id = '{rec_id}'")[-1].split("|")
    version, wrapped, key = int(row[0]), bytes.fromhex(row[1]), row[2]
    obj = (store_dir() / key).read_bytes()
    ring = yaml.safe_load(KEYS_FILE.read_text())
    root = base64.b64decode(ring["roots"][version])
    data_key = unwrap(tenant_key(root, tenant), version, tenant, rec_id, wrapped)
    assert decrypt_object(data_key, tenant, rec_id, obj) == wav[44:]

    from cryptography.exceptions import InvalidTag
    with pytest.raises(InvalidTag):
        decrypt_object(data_key, other, rec_id, obj)
    with pytest.raises(InvalidTag):
        decrypt_object(data_key, tenant, uuid.uuid4().hex, obj)
    with pytest.raises(InvalidTag):
        decrypt_object(data_key, rec_id, tenant, obj)
    with pytest.raises(InvalidTag):
        unwrap(tenant_key(root, other), version, tenant, rec_id, wrapped)
    with pytest.raises(InvalidTag):
        unwrap(tenant_key(root, tenant), version, other, rec_id, wrapped)

    # Another tenant reaches nothing, on every API and the URL.
    for call, req, token in [
        (rec.GetRecording, r.GetRecordingRequest(name=done.name), other_sup),
        (rec.CreatePlaybackUrl, r.CreatePlaybackUrlRequest(name=done.name), other_sup),
        (rec.SetLegalHold, r.SetLegalHoldRequest(name=done.name, reason="x"), other_admin),
        (rec.ClearLegalHold, r.ClearLegalHoldRequest(name=done.name, reason="x"), other_admin),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            call(req, metadata=auth(token), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND, call
    with pytest.raises(grpc.RpcError) as e:
        list(rec.StreamRecordingAudio(r.StreamRecordingAudioRequest(name=done.name), metadata=auth(other_sup)))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert not rec.ListRecordings(r.ListRecordingsRequest(contact_id=contact), metadata=auth(other_sup)).recordings
    other_channel = mint("--tenant", other, "--role", "channel")
    with pytest.raises(grpc.RpcError) as e:
        rec.IngestCall(call_messages(m, tenant, contact), metadata=auth(other_channel), timeout=30)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert get(url.replace(f"/{tenant}/", f"/{other}/"))[0] == 403
    assert get(url.replace("exp=", "exp=1"))[0] == 403
