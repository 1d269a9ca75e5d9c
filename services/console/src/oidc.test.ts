import { describe, expect, it } from "vitest";
import {
  authorizationUrl,
  base64url,
  callback,
  checkDiscovery,
  checkIdToken,
  codeChallenge,
  randomString,
  sessionFromToken,
  type OidcConfig,
  type Pending,
} from "./oidc";

const config: OidcConfig = { issuer: "https://idp.example/realms/bpo", clientId: "centralita-console", scope: "openid profile", resource: "urn:centralita:api" };
const pending: Pending = {
  issuer: config.issuer,
  verifier: "v",
  state: "s-1",
  nonce: "n-1",
  redirectUri: "https://console.example/",
  tokenEndpoint: "https://idp.example/realms/bpo/token",
};

/** An unsigned JWT with `claims` (the console never verifies: the services do). */
function jwt(claims: Record<string, unknown>): string {
  const enc = (o: unknown) => base64url(new TextEncoder().encode(JSON.stringify(o)));
  return `${enc({ alg: "RS256", kid: "k" })}.${enc(claims)}.sig`;
}

describe("PKCE", () => {
  it("derives the S256 challenge of RFC 7636's appendix B", async () => {
    expect(await codeChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")).toBe("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
  });
  it("makes verifiers of 43 unreserved characters, never twice the same", () => {
    const a = randomString(32);
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(randomString(32)).not.toBe(a);
  });
});

describe("the authorization request", () => {
  it("asks for a code with the challenge, state, nonce and the API resource", () => {
    const d = checkDiscovery(config, {
      issuer: config.issuer,
      authorization_endpoint: "https://idp.example/realms/bpo/auth?kc=1",
      token_endpoint: pending.tokenEndpoint,
      code_challenge_methods_supported: ["plain", "S256"],
    });
    const u = new URL(authorizationUrl(config, d, pending, "CH"));
    expect(u.origin + u.pathname).toBe("https://idp.example/realms/bpo/auth");
    expect(Object.fromEntries(u.searchParams)).toEqual({
      kc: "1",
      response_type: "code",
      client_id: "centralita-console",
      redirect_uri: "https://console.example/",
      scope: "openid profile",
      state: "s-1",
      nonce: "n-1",
      code_challenge: "CH",
      code_challenge_method: "S256",
      resource: "urn:centralita:api",
    });
    expect(new URL(authorizationUrl({ ...config, resource: "" }, d, pending, "CH")).searchParams.has("resource")).toBe(false);
  });
  it("refuses a discovery document of another issuer, without endpoints or S256", () => {
    const ok = { issuer: config.issuer, authorization_endpoint: "https://a", token_endpoint: "https://t" };
    expect(() => checkDiscovery(config, { ...ok, issuer: "https://evil.example" })).toThrow(/issuer/);
    expect(() => checkDiscovery(config, { ...ok, token_endpoint: undefined })).toThrow(/endpoint/);
    expect(() => checkDiscovery(config, { ...ok, code_challenge_methods_supported: ["plain"] })).toThrow(/S256/);
  });
});

describe("the provider's answer", () => {
  it("is nothing on an ordinary page load, a code only with this sign-in's state", () => {
    expect(callback(new URLSearchParams(""), pending)).toEqual({ kind: "none" });
    expect(callback(new URLSearchParams("code=c&state=s-1"), pending)).toEqual({ kind: "code", code: "c", pending });
    expect(callback(new URLSearchParams("code=c&state=other"), pending).kind).toBe("error");
    expect(callback(new URLSearchParams("code=c&state=s-1"), null).kind).toBe("error");
    expect(callback(new URLSearchParams("error=access_denied&error_description=no&state=s-1"), pending)).toEqual({
      kind: "error",
      message: "access_denied: no",
    });
  });
  it("checks the ID token's issuer, audience and nonce", () => {
    const ok = { iss: config.issuer, aud: "centralita-console", nonce: "n-1" };
    expect(() => checkIdToken(jwt(ok), config, pending)).not.toThrow();
    expect(() => checkIdToken(jwt({ ...ok, aud: ["x", "centralita-console"] }), config, pending)).not.toThrow();
    expect(() => checkIdToken(jwt({ ...ok, iss: "https://evil.example" }), config, pending)).toThrow(/issuer/);
    expect(() => checkIdToken(jwt({ ...ok, aud: "other" }), config, pending)).toThrow(/client/);
    expect(() => checkIdToken(jwt({ ...ok, nonce: "n-2" }), config, pending)).toThrow(/nonce/);
  });
});

describe("the session from the access token", () => {
  it("takes the role, tenant, agent id and expiry from the platform's claims", () => {
    const agent = sessionFromToken(jwt({ sub: "agent:acme:ana", tenant: "acme", roles: ["agent"], agent_id: "ana", exp: 2000000000 }));
    expect(agent).toMatchObject({ role: "agent", tenant: "acme", agentId: "ana", subject: "agent:acme:ana", expireTime: 2000000000 });
    expect(sessionFromToken(jwt({ sub: "s", tenant: "acme", roles: ["tenant_admin"], exp: 1 })).role).toBe("supervisor");
    expect(sessionFromToken(jwt({ sub: "b", roles: ["bpo_admin"], exp: 1 }))).toMatchObject({ role: "bpo_admin", tenant: "" });
    // Named in Spanish: claims are UTF-8.
    expect(sessionFromToken(jwt({ sub: "Lucía", tenant: "acme", roles: ["supervisor"], exp: 1 })).subject).toBe("Lucía");
  });
  it("refuses a token that gives the console nothing to show", () => {
    expect(() => sessionFromToken(jwt({ sub: "x", tenant: "acme", roles: ["channel"], exp: 1 }))).toThrow(/role/);
    expect(() => sessionFromToken(jwt({ sub: "x", roles: ["supervisor"], exp: 1 }))).toThrow(/tenant/);
    expect(() => sessionFromToken(jwt({ sub: "x", tenant: "acme", roles: ["agent"], exp: 1 }))).toThrow(/agent id/);
    expect(() => sessionFromToken(jwt({ sub: "x", tenant: "acme", roles: ["supervisor"] }))).toThrow(/expiry/);
    expect(() => sessionFromToken("opaque-token")).toThrow(/JWT/);
  });
});
