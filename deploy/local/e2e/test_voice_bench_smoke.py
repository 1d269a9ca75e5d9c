"""A short run of the voice benchmark (loadtest/voice-bench.sh, issue 17), so the suite keeps
it working: its own sessions, routing and media (debug binaries, run name vbench-smoke, the
vbench port block: gRPC 29261+, admin 10461+, SIP 25461, RTP 17000-17999, sipp 18100/18102)
under a fresh topic prefix; a tenant of its own with 40 agents whose fixed phones are one
sipp; 20 sipp callers set up at 20/s and held while `centralita-loadtest voice-rtp` sends
and counts G.711 both ways for 5 s, once every call has audio both ways (it waits up to 20 s
for that: with no warm-up step, a fresh topic prefix and debug binaries the first offers
wait for routing's consumer group to settle, ~5 s on a cold machine; the window opens as
soon as all calls are bridged).

Asserted from the run's results.json: every call attempted succeeded (sipp counted no
failure) and each was answered within the INVITE's response-time record; every call had
audio both ways; of the packets sent in the window (20 calls x 2 directions x 50/s x 5 s,
within 5 %) at least 99 % arrived (the benchmark's criterion is 0 % loss on release
binaries; here debug binaries share the machine with the suite); the agents' phone's
answers were matched to first audio for every call; media's CPU was measured.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import LOGS, REPO

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) is not installed")


def test_voice_bench_smoke(tmp_path):
    out = tmp_path / "run"
    env = {
        **os.environ,
        "CENTRALITA_PROFILE": "debug",
        "CENTRALITA_RUN_NAME": "vbench-smoke",
        "CENTRALITA_GRPC_BASE": "29261",
        "CENTRALITA_ADMIN_BASE": "10461",
        "CENTRALITA_SIP_PORT": "25461",
        "CENTRALITA_RTP_PORTS": "17000-17999",
        "VB_PHONE_PORT": "18100",
        "VB_CALLER_PORT": "18102",
    }
    env.pop("CENTRALITA_KAFKA_TOPIC_PREFIX", None)
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(LOGS / "voice-bench-smoke.log", "w") as log:
        proc = subprocess.run(
            [str(REPO / "loadtest/voice-bench.sh"), "--no-build", "--no-relay", "--no-rates", "--calls", "20",
             "--no-warmup", "--ramp-rate", "20", "--window-seconds", "5", "--ready-margin", "20", "--agents", "40", "--out", str(out)],
            env=env, stdout=log, stderr=subprocess.STDOUT, timeout=150)
    took = time.monotonic() - started
    assert proc.returncode == 0, f"voice-bench.sh failed ({proc.returncode}); see {LOGS / 'voice-bench-smoke.log'}"
    results = json.loads((out / "results.json").read_text())
    step = results["calls-20"]
    sipp, rtp = step["sipp"], step["rtp"]
    assert (sipp["attempted"], sipp["successful"], sipp["failed"]) == (20, 20, 0), sipp
    assert sipp["invite_to_200_ms"]["count"] == 20, sipp
    assert rtp["calls_with_audio_both_ways"] == 20, rtp
    expected = 20 * 2 * 50 * 5
    assert abs(rtp["packets_sent_in_window"] - expected) <= expected * 0.05, rtp
    assert rtp["packets_received_of_those"] >= 0.99 * rtp["packets_sent_in_window"], rtp
    assert rtp["agent_answer_to_first_audio_ms"]["count"] == 20, rtp
    assert rtp["processes"]["media"]["cpu_percent_of_one_core"] is not None, rtp
    print(f"voice bench smoke: {took:.0f} s; loss {rtp['loss_percent']} %, "
          f"transit p99 {rtp['transit_ms']['p99']} ms, media {rtp['processes']['media']['cpu_percent_of_one_core']} %")
