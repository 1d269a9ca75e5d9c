"""The wallboard at floor size: a tenant with many queues and agents (50 and 2,000 by default),
its supervisor's wallboard open in Debian's Chromium (Playwright), and contacts created one at a
time through sessions' API. For each contact it measures when the new waiting count is
visible (a) through reporting's API (GetRealtimeMetrics polled every 20 ms: the pipeline
sessions -> Kafka -> reporting, the part the browser cannot be faster than) and (b) on the
screen (a MutationObserver in the page stamps every change of the queue's "waiting" cell), both
from the moment CreateContact returned. It also records the stream message's size, the page's
long tasks (main-thread work over 50 ms: rendering cost) and the browser's heap.

Run through loadtest/wallboard-bench.sh (it starts the services and the console); alone:
  CENTRALITA_ENDPOINTS=sessions=127.0.0.1:…,reporting=… CENTRALITA_CONSOLE_URL=http://… \\
    $CENTRALITA_VENV/bin/python loadtest/wallboard_bench.py --queues 50 --agents 2000 --rounds 40
"""
import argparse
import concurrent.futures
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import grpc

REPO = pathlib.Path(__file__).resolve().parents[1]
CLI = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / os.environ.get("CENTRALITA_PROFILE", "release") / "centralita"
DEV_KEY = REPO / "deploy/local/dev-keys/jwt-ed25519.key"
CHROMIUM = "/usr/bin/chromium"


def stubs():
    from grpc_tools import protoc
    import grpc_tools

    out = tempfile.mkdtemp(prefix="centralita-pb-")
    protos = [str(p.relative_to(REPO / "proto")) for p in (REPO / "proto").rglob("*.proto")]
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    assert protoc.main(["protoc", f"-I{REPO / 'proto'}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", *protos]) == 0
    sys.path.insert(0, out)


def cli(*args):
    p = subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise SystemExit(f"centralita {' '.join(args)}: {p.stderr}")
    return p.stdout.strip()


def mint(*args):
    return cli("token", "mint", "--private-key-file", str(DEV_KEY), *args)


def auth(token):
    return (("authorization", f"Bearer {token}"),)


def pct(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queues", type=int, default=50)
    ap.add_argument("--agents", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--json", type=pathlib.Path)
    ap.add_argument("--screenshot", type=pathlib.Path)
    args = ap.parse_args()
    stubs()
    from centralita.reporting.v1 import reporting_pb2 as r, reporting_pb2_grpc as rg
    from centralita.sessions.v1 import sessions_pb2 as s, sessions_pb2_grpc as sg
    from centralita.tenancy.v1 import tenancy_pb2 as t
    from centralita.crm.v1 import crm_pb2 as c

    eps = dict(e.split("=", 1) for e in os.environ["CENTRALITA_ENDPOINTS"].split(","))
    console = os.environ["CENTRALITA_CONSOLE_URL"]
    run = uuid.uuid4().hex[:6]
    tenant = f"wb-{run}"
    queues = [f"q{i:02d}" for i in range(args.queues)]
    manifest = REPO / f".local/wallboard-{run}.yaml"
    manifest.parent.mkdir(exist_ok=True)
    qlines = "\n".join(f"      - {{ id: {q}, displayName: Queue {q}, offerTimeoutSeconds: 60 }}" for q in queues)
    manifest.write_text(f"""apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: Wallboard {tenant}
  channels: [chat]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 5000, apiRequestsPerSecond: 5000 }}
  businessHours: {{ timeZone: Europe/Madrid }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing:
    awayReasons: [break]
    dispositionCodes: [resolved]
    queues:
{qlines}
""")
    cli("admin", "tenant", "apply", "-f", str(manifest))  # to CENTRALITA_KAFKA_TOPIC_PREFIX's tenants topic
    bpo, admin = mint("--role", "bpo_admin"), mint("--tenant", tenant, "--role", "tenant_admin")
    channel, supervisor = mint("--tenant", tenant, "--role", "channel"), mint("--tenant", tenant, "--role", "supervisor")
    sessions, rep = grpc.insecure_channel(eps["sessions"]), grpc.insecure_channel(eps["reporting"])
    agents, contacts = sg.AgentServiceStub(sessions), sg.ContactServiceStub(sessions)
    reporting = rg.ReportingServiceStub(rep)

    deadline = time.monotonic() + 90
    while True:
        try:
            contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(admin), timeout=5)
            reporting.GetRealtimeMetrics(r.GetRealtimeMetricsRequest(), metadata=auth(supervisor), timeout=5)
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise SystemExit("the services never saw the tenant")
            time.sleep(0.5)

    # Every agent signed in and away: the figures have 2,000 agents to count, and no offer
    # takes a waiting contact away while we measure.
    chat = s.ChannelCapacity(channel=t.CHANNEL_CHAT, max_contacts=1)
    started = time.monotonic()

    def one(i):
        a = f"a{i:04d}-{run}"
        qs = sorted({queues[i % len(queues)], queues[(i * 7 + 3) % len(queues)]})
        agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
            name=f"agents/{a}", display_name=a, capacity=[chat],
            queues=[s.QueueAssignment(tenant=tenant, queue=q) for q in qs])), metadata=auth(bpo), timeout=30)
        token = bpo  # a BPO admin may act for any agent (no token minted per agent)
        agents.SignIn(s.SignInRequest(name=f"agents/{a}", available=False), metadata=auth(token), timeout=30)
        agents.SetAgentState(s.SetAgentStateRequest(name=f"agents/{a}", state=s.AGENT_STATE_AWAY, away_reason="break"),
                             metadata=auth(token), timeout=30)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(args.agents)))
    print(f"[wallboard] {args.agents} agents signed in and away in {time.monotonic() - started:.1f} s", file=sys.stderr)

    def live():
        return reporting.GetRealtimeMetrics(r.GetRealtimeMetricsRequest(), metadata=auth(supervisor), timeout=10)

    deadline = time.monotonic() + 60
    while True:
        m = live()
        away = sum(1 for a in m.agents if a.state == "AGENT_STATE_AWAY")
        if len(m.queues) == len(queues) and away == args.agents:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"reporting shows {len(m.queues)} queues, {away} agents away")
        time.sleep(0.5)
    message_bytes = m.ByteSize()

    from playwright.sync_api import sync_playwright

    api_ms, screen_ms = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--enable-precise-memory-info"])
        page = browser.new_context(viewport={"width": 1600, "height": 1000}, locale="en-GB", bypass_csp=True).new_page()
        page.goto(console)
        page.get_by_test_id("tenant").fill(tenant)
        page.get_by_test_id("role").select_option("supervisor")
        page.get_by_test_id("sign-in").click()
        page.wait_for_function(f"document.querySelectorAll('[data-testid^=wb-q]').length === {len(queues)}", timeout=60_000)
        # Stamp every change of each queue's waiting cell (epoch ms), and collect long tasks.
        page.evaluate("""() => {
          window.__changes = [];
          window.__long = [];
          new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); })
            .observe({ type: 'longtask', buffered: false });
          for (const row of document.querySelectorAll('[data-testid^=wb-q]')) {
            const cell = row.querySelector('[data-testid=waiting]');
            const q = row.getAttribute('data-testid').slice(3);
            new MutationObserver(() => window.__changes.push([q, cell.textContent, performance.timeOrigin + performance.now()]))
              .observe(cell, { childList: true, characterData: true, subtree: true });
          }
        }""")
        waiting = {q.queue: q.waiting for q in live().queues}
        for i in range(args.rounds):
            q = queues[(i * 13) % len(queues)]
            want = waiting[q] + 1
            contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
                channel=t.CHANNEL_CHAT, queue=q,
                customer_identities=[c.Identity(kind=c.IDENTITY_KIND_CHAT, value=f"v-{run}-{i}")]),
                request_id=f"{run}-{i}"), metadata=auth(channel), timeout=10)
            created = time.time() * 1000
            while True:
                got = {x.queue: x.waiting for x in live().queues}
                if got.get(q, 0) >= want:
                    api_ms.append(time.time() * 1000 - created)
                    break
                if time.time() * 1000 - created > 15_000:
                    raise SystemExit(f"reporting never showed contact {i} waiting in {q}")
                time.sleep(0.02)
            waiting = got
            try:
                page.wait_for_function(
                    f"window.__changes.some(([q, v]) => q === '{q}' && Number(v) >= {want})", timeout=15_000)
            except Exception:
                raise SystemExit(f"the wallboard never showed contact {i} waiting in {q}")
            seen = page.evaluate(f"window.__changes.find(([q, v]) => q === '{q}' && Number(v) >= {want})[2]")
            screen_ms.append(seen - created)
            time.sleep(0.3)
        long_tasks = page.evaluate("window.__long")
        heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : null")
        if args.screenshot:
            page.screenshot(path=str(args.screenshot), full_page=False)
        browser.close()

    result = {
        "queues": len(queues), "agents": args.agents, "rounds": args.rounds,
        "realtime_message_bytes": message_bytes,
        "api_visible_ms": {"p50": pct(api_ms, 50), "p95": pct(api_ms, 95), "max": max(api_ms),
                           "mean": statistics.mean(api_ms)},
        "screen_ms": {"p50": pct(screen_ms, 50), "p95": pct(screen_ms, 95), "max": max(screen_ms),
                      "mean": statistics.mean(screen_ms)},
        "screen_minus_api_ms": {"p50": pct([a - b for a, b in zip(screen_ms, api_ms)], 50),
                                "p95": pct([a - b for a, b in zip(screen_ms, api_ms)], 95)},
        "long_tasks": {"count": len(long_tasks), "max_ms": max(long_tasks) if long_tasks else 0},
        "js_heap_bytes": heap,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
