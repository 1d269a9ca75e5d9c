"""The load simulator (`centralita-loadtest simulate`) against the running services.

A short mixed scenario (two tenants, voice and chat, rejects, offers left to ring out,
customers who hang up) must finish with every contact in a terminal state, no contact
accepted twice and no agent above capacity; a bad scenario file is refused with the field
named; a stack that is down is reported as such. The simulator talks to the services only
over gRPC (tenants are published on the tenants topic, as the CLI does).
"""
import json
import os
import subprocess

from conftest import BIN, REPO, endpoints

SIM = str(BIN / "centralita-loadtest")
KEY = str(REPO / "deploy/local/dev-keys/jwt-ed25519.key")


def simulate(*args, timeout=240):
    env = {**os.environ, "CENTRALITA_JWT_PRIVATE_KEY_FILE": KEY, "RUST_BACKTRACE": "0"}
    return subprocess.run([SIM, "simulate", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_a_mixed_floor_conserves_every_contact(tmp_path):
    eps = endpoints()
    out = tmp_path / "smoke.json"
    proc = simulate("--scenario", str(REPO / "loadtest/scenarios/smoke.yaml"),
                    "--sessions", f"http://{eps['sessions']}", "--reporting", f"http://{eps['reporting']}",
                    "--json", str(out), "--progress-seconds", "5")
    assert proc.returncode == 0, proc.stderr[:4000]
    result = json.loads(out.read_text())
    assert result["problems"] == [], result["problems"]
    created = result["contacts_created"]
    assert created > 20, result
    states = result["final_states"]
    assert sum(states.values()) == created
    assert set(states) <= {"CONTACT_STATE_CLOSED", "CONTACT_STATE_ABANDONED", "CONTACT_STATE_TIMED_OUT"}, states
    assert result["conservation"] == {"not_terminal": 0, "accepted_twice": 0, "capacity_violations": 0}
    assert result["errors"] == {}, result["errors"]
    # The progress display ran, and both queues were measured.
    assert "[sim]" in proc.stderr and "created" in proc.stderr
    assert {"alpha/support", "beta/sales"} == set(result["queues"])
    assert result["api_calls_ms"]["CreateContact"]["count"] == created


def test_a_bad_scenario_is_refused_with_the_field_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (REPO / "loadtest/scenarios/smoke.yaml").read_text()
    bad.write_text(text.replace("meanSeconds: 30", "meanSeconds: -30").replace("count: 2", "count: 0"))
    proc = simulate("--scenario", str(bad))
    assert proc.returncode != 0
    assert "tenants[0].queues[0].handle.meanSeconds" in proc.stderr, proc.stderr
    assert "tenants[1].agents[0].count" in proc.stderr, proc.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(text.replace("timeScale: 10", "timeScale: 10\nspeed: fast"))
    proc = simulate("--scenario", str(unknown))
    assert proc.returncode != 0 and "speed" in proc.stderr, proc.stderr


def test_a_stack_that_is_down_is_reported(tmp_path):
    proc = simulate("--scenario", str(REPO / "loadtest/scenarios/smoke.yaml"),
                    "--sessions", "http://127.0.0.1:9", "--reporting", "http://127.0.0.1:9", timeout=60)
    assert proc.returncode != 0
    assert "not reachable" in proc.stderr, proc.stderr


def test_the_simulator_rides_out_a_sessions_restart(spawn, tmp_path):
    """Sessions killed with -9 mid-run and started again: the simulated frontends behave as
    real ones do — agents reopen their event streams (and come back from being made away),
    calls that failed while sessions was down are retried with their request ids — and the
    run still ends with its verdict: every contact terminal, none accepted twice, no agent
    above capacity. The floor runs against its own sessions, routing and reporting under
    a topic prefix of its own, so the suite's services are not disturbed."""
    import time
    import uuid

    from conftest import wait_for
    from test_acd_crash import Service

    prefix = f"e2e-simfault-{uuid.uuid4().hex[:8]}."
    routing = Service(spawn, "routing", prefix, tmp_path)
    sessions = Service(spawn, "sessions", prefix, tmp_path)
    reporting = Service(spawn, "reporting", prefix, tmp_path)
    for s in (routing, sessions, reporting):
        s.start()
    for s in (routing, sessions, reporting):
        s.wait_ready("start")
    out = tmp_path / "fault.json"
    env = {**os.environ, "CENTRALITA_JWT_PRIVATE_KEY_FILE": KEY, "CENTRALITA_KAFKA_TOPIC_PREFIX": prefix,
           "RUST_BACKTRACE": "0"}
    log = open(tmp_path / "simulate.log", "w")
    sim = subprocess.Popen([SIM, "simulate", "--scenario", str(REPO / "loadtest/scenarios/smoke.yaml"),
                            "--sessions", f"http://{sessions.addr}", "--reporting", f"http://{reporting.addr}",
                            "--json", str(out), "--progress-seconds", "2"], env=env, stdout=log, stderr=log)
    try:
        # Once the floor is busy, sessions dies without a drain and comes back 2 s later.
        assert wait_for(lambda: "created" in (tmp_path / "simulate.log").read_text() or sim.poll() is not None, 60)
        time.sleep(4)
        assert sim.poll() is None, (tmp_path / "simulate.log").read_text()[-3000:]
        sessions.kill()
        time.sleep(2)
        sessions.start()
        sessions.wait_ready("restart")
        code = sim.wait(300)
    finally:
        if sim.poll() is None:
            sim.kill()
        log.close()
    text = (tmp_path / "simulate.log").read_text()
    assert code == 0, text[-4000:]
    result = json.loads(out.read_text())
    assert result["problems"] == [], result["problems"]
    assert result["conservation"] == {"not_terminal": 0, "accepted_twice": 0, "capacity_violations": 0}, result
    assert result["recovered"].get("StreamAgentEvents: reopened", 0) >= 6, result["recovered"]
    assert "StreamAgentEvents: ended" not in result["errors"], result["errors"]
