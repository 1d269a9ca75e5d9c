"""Sign-in through the BPO's identity provider, in a real browser (Debian's Chromium driven
by Playwright) against the local stack, under the console's Content-Security-Policy.

The provider is node-oidc-provider (a certified OpenID Provider, deploy/local/idp, started
by deploy/local/services.sh): the console runs the authorization-code flow with PKCE (S256)
as a public client; the provider's login and consent pages are its own. An agent of tenant A
signs in there, lands on the agent desktop, and goes available — sessions accepted the
provider's access token (RS256, verified against the provider's JWKS) and the agent is
available there. The token the browser holds is A's only: with it, B's tenant and queue
stats are refused and A's agent cannot be read as B's. A supervisor of A signs in the same
way and sees A's wallboard. A forged answer (a state this browser never sent) is refused on
the page and signs nobody in. The dev sign-in stays available beside it (marked as such).
"""
import uuid

import grpc
import pytest

from conftest import auth, cli, endpoints, mint, tenant_manifest, wait_for
from test_console import CHROMIUM, SHOTS, console_url


@pytest.fixture(scope="module")
def m(pb):
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        s, sg = sessions_pb2, sessions_pb2_grpc
        t, tg = pb.tenancy, pb.tenancy_grpc

    return M


def sign_in_at_the_provider(page, login, expect):
    """From the console's sign-in page through the provider's login and consent pages, back."""
    page.get_by_test_id("sso-sign-in").click()
    page.wait_for_url("**/interaction/**", timeout=20_000)
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "anything")
    page.click("button[type=submit]")
    # The consent page asks once per account and client.
    page.wait_for_load_state()
    if "/interaction/" in page.url:
        page.click("button[type=submit]")
    expect(page.get_by_test_id("who")).to_be_visible(timeout=20_000)


def test_an_agent_and_a_supervisor_sign_in_through_the_identity_provider(m, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    run = uuid.uuid4().hex[:8]
    a, b = f"sso-a-{run}", f"sso-b-{run}"
    for t in (a, b):
        path = tmp_path / f"{t}.yaml"
        path.write_text(tenant_manifest(t, "id: support", display=f"SSO {t}", channels="chat"))
        cli("admin", "tenant", "apply", "-f", str(path))
    eps = endpoints()
    agents = m.sg.AgentServiceStub(grpc.insecure_channel(eps["sessions"]))
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))
    tenants = m.tg.TenantServiceStub(grpc.insecure_channel(eps["sessions"]))
    bpo = mint("--role", "bpo_admin")
    s = m.s

    def known():
        try:
            for t in (a, b):
                tenants.GetTenant(m.t.GetTenantRequest(name=f"tenants/{t}"), metadata=auth(bpo), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(known, 60), "sessions never saw the tenants"
    agent = f"ana-{run}"
    chat = s.ChannelCapacity(channel=m.t.CHANNEL_CHAT, max_contacts=1, exclusive=False)
    agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
        name=f"agents/{agent}", display_name="Ana", capacity=[chat], queues=[s.QueueAssignment(tenant=a, queue="support")])),
        metadata=auth(bpo), timeout=10)

    url = console_url()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            ctx = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-GB")
            page = ctx.new_page()
            page.goto(url)
            # Both ways in; the development one says what it is.
            expect(page.get_by_test_id("sso-sign-in")).to_have_text("Sign in with your organisation's account")
            expect(page.get_by_test_id("dev-sign-in")).to_contain_text("Development only")

            # A forged answer: nobody is signed in, the page says why.
            page.goto(f"{url}/?code=stolen&state=forged")
            expect(page.get_by_test_id("sso-error")).to_contain_text("state mismatch", timeout=10_000)
            assert "code=" not in page.url, "the answer is cleaned from the address"
            assert page.evaluate("sessionStorage.getItem('centralita.session')") is None

            # The agent: provider's pages, back to the desktop, available in sessions.
            sign_in_at_the_provider(page, f"agent:{a}:{agent}", expect)
            expect(page.get_by_test_id("stream-status")).to_have_text("connected", timeout=20_000)
            assert page.get_by_test_id("dev-badge").count() == 0, "not marked as a development sign-in"
            page.get_by_test_id("go-available").click()
            expect(page.get_by_test_id("agent-state")).to_have_text("Available", timeout=10_000)
            page.screenshot(path=str(SHOTS / "console-sso-agent.png"))
            got = agents.GetAgent(s.GetAgentRequest(name=f"agents/{agent}"), metadata=auth(bpo), timeout=5)
            assert got.state == s.AGENT_STATE_AVAILABLE, got
            session = page.evaluate("JSON.parse(sessionStorage.getItem('centralita.session'))")
            assert session["role"] == "agent" and session["tenant"] == a and session["agentId"] == agent, session
            token = session["token"]
            assert token.count(".") == 2 and "urn" not in token, "a JWT access token"

            # The provider's token is A's agent's only.
            with pytest.raises(grpc.RpcError) as e:
                tenants.GetTenant(m.t.GetTenantRequest(name=f"tenants/{b}"), metadata=auth(token), timeout=5)
            assert e.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED), e.value
            with pytest.raises(grpc.RpcError) as e:
                contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(token), timeout=5)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, "an agent reads no queue stats"

            # A's supervisor, in a fresh browser: the wallboard of A.
            ctx2 = browser.new_context(viewport={"width": 1280, "height": 860}, locale="es-ES")
            page2 = ctx2.new_page()
            page2.goto(url)
            expect(page2.get_by_test_id("sso-sign-in")).to_have_text("Iniciar sesión con la cuenta de su organización")
            sign_in_at_the_provider(page2, f"supervisor:{a}", expect)
            expect(page2.get_by_test_id("wb-support")).to_be_visible(timeout=20_000)
            sup = page2.evaluate("JSON.parse(sessionStorage.getItem('centralita.session'))")
            assert (sup["role"], sup["tenant"]) == ("supervisor", a), sup
            stats = contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(sup["token"]), timeout=5)
            assert [q.queue for q in stats.queues] == ["support"]
            with pytest.raises(grpc.RpcError) as e:
                tenants.GetTenant(m.t.GetTenantRequest(name=f"tenants/{b}"), metadata=auth(sup["token"]), timeout=5)
            assert e.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED), e.value
            page2.screenshot(path=str(SHOTS / "console-sso-supervisor.png"))
        finally:
            browser.close()
