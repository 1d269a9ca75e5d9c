"""The BPO admin's console in a real browser (Debian's Chromium driven by Playwright): every
tenant with its status, quota and a month's usage, and the shared agent pool with each agent's
assignments across tenants — compared with the APIs (ListTenants, reporting's GetUsage per
tenant, sessions' ListAgents) at the same moment. One agent serves two tenants and handles a
contact of each through the real services; a third tenant is suspended. A tenant's own
supervisor gets none of this: the BPO sign-in is its own role, and the APIs refuse another
tenant's usage and list only the caller's tenant.
"""
import datetime
import uuid

import grpc
import pytest

from conftest import auth, cli, endpoints, mint, tenant_manifest, wait_for
from test_console import CHROMIUM, SHOTS, console_url, m, sign_in  # noqa: F401 (m: the module's stubs)


def test_bpo_admin_sees_tenants_usage_and_the_shared_pool(m, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    s, r = m.s, m.r
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    a, b, c = f"bpo-{run}-a", f"bpo-{run}-b", f"bpo-{run}-c"
    path = tmp_path / "tenants.yaml"
    path.write_text(tenant_manifest(a, "id: support, displayName: Support", display=f"Alpha {run}", channels="chat",
                                    time_zone="UTC")
                    + "---\n" + tenant_manifest(b, "id: claims, displayName: Claims", display=f"Beta {run}",
                                                channels="chat", time_zone="UTC")
                    + "---\n" + tenant_manifest(c, "id: sales", display=f"Gamma {run}", channels="chat",
                                                time_zone="UTC").replace("  channels:", "  status: suspended\n  channels:"))
    cli("admin", "tenant", "apply", "-f", str(path))
    bpo = mint("--role", "bpo_admin")
    sessions, rep = grpc.insecure_channel(eps["sessions"]), grpc.insecure_channel(eps["reporting"])
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)
    reporting = m.rg.ReportingServiceStub(rep)
    from centralita.tenancy.v1 import tenancy_pb2_grpc

    tenants_api = tenancy_pb2_grpc.TenantServiceStub(sessions)

    def known():
        try:
            for t in (a, b):
                contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(mint("--tenant", t, "--role", "tenant_admin")),
                                        timeout=5)
            names = {x.name for x in tenants_api.ListTenants(m.t.ListTenantsRequest(page_size=1000), metadata=auth(bpo),
                                                               timeout=5).tenants}
            return {f"tenants/{a}", f"tenants/{b}", f"tenants/{c}"} <= names
        except grpc.RpcError:
            return False

    assert wait_for(known, 60), "sessions never saw the tenants"
    # Ana serves both A and B (the shared pool); Bea serves A only.
    ana, bea = f"ana-{run}", f"bea-{run}"
    chat = s.ChannelCapacity(channel=m.t.CHANNEL_CHAT, max_contacts=1)
    agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
        name=f"agents/{ana}", display_name="Ana", capacity=[chat],
        queues=[s.QueueAssignment(tenant=a, queue="support"), s.QueueAssignment(tenant=b, queue="claims")])),
        metadata=auth(bpo), timeout=10)
    agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
        name=f"agents/{bea}", display_name="Bea", capacity=[chat], queues=[s.QueueAssignment(tenant=a, queue="support")])),
        metadata=auth(bpo), timeout=10)
    ana_token = mint("--tenant", a, "--role", "agent", "--agent-id", ana)
    agents.SignIn(s.SignInRequest(name=f"agents/{ana}", available=True), metadata=auth(ana_token), timeout=10)

    # One contact of A and two of B, each handled by Ana and wrapped up.
    def handle(tenant, queue, tag):
        channel = mint("--tenant", tenant, "--role", "channel")
        admin = mint("--tenant", tenant, "--role", "tenant_admin")
        # The shared agent acts on each tenant's contact with a token of that tenant.
        as_ana = auth(mint("--tenant", tenant, "--role", "agent", "--agent-id", ana))
        made = contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
            channel=m.t.CHANNEL_CHAT, queue=queue,
            customer_identities=[m.c.Identity(kind=m.c.IDENTITY_KIND_CHAT, value=f"v-{run}-{tag}")]),
            request_id=f"{run}-{tag}"), metadata=auth(channel), timeout=10)

        def offered():
            got = contacts.GetContact(s.GetContactRequest(name=made.name), metadata=auth(admin), timeout=10)
            return got if got.state == s.CONTACT_STATE_OFFERED and got.agent_id == ana else None

        assert wait_for(offered, 30), made.name
        contacts.AcceptContact(s.AcceptContactRequest(name=made.name, offer_id=offered().offer_id), metadata=as_ana,
                               timeout=10)
        contacts.EndContact(s.EndContactRequest(name=made.name), metadata=as_ana, timeout=10)
        contacts.WrapUpContact(s.WrapUpContactRequest(name=made.name, disposition="resolved"), metadata=as_ana,
                               timeout=10)

    handle(a, "support", "a1")
    handle(b, "claims", "b1")
    handle(b, "claims", "b2")
    month = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m")

    def usage(tenant):
        return reporting.GetUsage(r.GetUsageRequest(tenant=tenant, month=month), metadata=auth(bpo), timeout=10)

    def handled(u):
        return sum(ch.handled for ch in u.channels)

    assert wait_for(lambda: handled(usage(a)) == 1 and handled(usage(b)) == 2, 30), (usage(a), usage(b))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB").new_page()
            page.goto(console_url())
            page.get_by_test_id("role").select_option("bpo_admin")
            expect(page.get_by_test_id("tenant")).to_be_disabled()
            page.get_by_test_id("sign-in").click()
            expect(page.get_by_test_id("who")).to_have_text("BPO admin", timeout=20_000)

            # Each tenant: status, and the month's usage as reporting gives it to a BPO admin.
            for tenant, status in ((a, "active"), (b, "active"), (c, "suspended")):
                row = page.get_by_test_id(f"tenant-{tenant}")
                expect(row.get_by_test_id("status")).to_have_text(status, timeout=20_000)
                u = usage(tenant)
                expect(row.get_by_test_id("handled")).to_have_text(str(handled(u)), timeout=20_000)
                expect(row.get_by_test_id("handle-minutes")).to_have_text(
                    f"{sum(ch.handle_minutes for ch in u.channels):.1f}")
            assert "(month not over)" in page.get_by_test_id(f"tenant-{a}").get_by_test_id("agent-hours").inner_text()
            listed = {x.name for x in tenants_api.ListTenants(m.t.ListTenantsRequest(page_size=1000), metadata=auth(bpo),
                                                                timeout=10).tenants}
            assert page.locator("[data-testid^=tenant-]").count() == len(listed) + 1  # + the table itself
            page.screenshot(path=str(SHOTS / "console-bpo-tenants.png"))

            # The pool: Ana serves A and B, Bea A only; as sessions lists them.
            page.get_by_test_id("tab-pool").click()
            expect(page.get_by_test_id(f"pool-{ana}").get_by_test_id("assignments")).to_have_text(
                f"{a}/support, {b}/claims", timeout=20_000)
            expect(page.get_by_test_id(f"pool-{bea}").get_by_test_id("assignments")).to_have_text(f"{a}/support")
            all_agents = []
            token = ""
            while True:
                page_ = agents.ListAgents(s.ListAgentsRequest(page_size=500, page_token=token), metadata=auth(bpo), timeout=10)
                all_agents += page_.agents
                token = page_.next_page_token
                if not token:
                    break
            shared = sum(1 for x in all_agents if len({q.tenant for q in x.queues}) > 1)

            def same_summary():
                return page.get_by_test_id("pool-summary").inner_text().startswith(
                    f"{len(all_agents)} agents · {shared} serve more than one tenant")

            assert wait_for(same_summary, 15), page.get_by_test_id("pool-summary").inner_text()
            # The filter narrows the pool to this run's agents and tenants.
            page.get_by_test_id("pool-filter").fill(run)
            expect(page.locator("[data-testid^=pool-]").filter(has=page.get_by_test_id("assignments"))).to_have_count(2)
            page.screenshot(path=str(SHOTS / "console-bpo-pool.png"))
        finally:
            browser.close()

    # A tenant's supervisor gets none of this through the same APIs.
    sup_a = mint("--tenant", a, "--role", "supervisor")
    with pytest.raises(grpc.RpcError) as denied:
        reporting.GetUsage(r.GetUsageRequest(tenant=b, month=month), metadata=auth(sup_a), timeout=10)
    assert denied.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)
    own = tenants_api.ListTenants(m.t.ListTenantsRequest(page_size=1000), metadata=auth(sup_a), timeout=10).tenants
    assert [x.name for x in own] == [f"tenants/{a}"]
    seen = agents.ListAgents(s.ListAgentsRequest(page_size=500), metadata=auth(sup_a), timeout=10).agents
    mine = [x for x in seen if x.name == f"agents/{ana}"]
    assert mine and {q.tenant for q in mine[0].queues} == {a}, mine
