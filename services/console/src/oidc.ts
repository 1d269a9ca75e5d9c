// Sign-in through the BPO's identity provider: OpenID Connect authorization code with PKCE
// (RFC 7636, S256), the console a public client holding no secret.
//
// 1. `beginSignIn`: the provider's discovery document (its `issuer` must be the configured
//    one), a fresh code verifier, state and nonce kept in sessionStorage, then the browser
//    goes to the authorization endpoint (asking for the API `resource`, RFC 8707, when
//    configured).
// 2. The provider sends the browser back to the console's `/` with `code` and `state`
//    (or `error`). `completeSignIn` checks the state, redeems the code with the verifier at
//    the token endpoint, checks the ID token's issuer, audience and nonce, and makes the
//    session from the access token's claims (`tenant`, `roles`, `agent_id`, `sub`, `exp`).
//
// The console reads the token's claims only to choose its views; the services verify the
// token itself (signature against the provider's JWKS, issuer, audience, expiry) on every
// call. When the token expires the user signs in again (no refresh token is asked for).

import type { Session } from "./api";

export interface OidcConfig {
  issuer: string;
  clientId: string;
  scope: string;
  /** RFC 8707 resource of the API; "" when none is asked for. */
  resource: string;
}

export interface Discovery {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  code_challenge_methods_supported?: string[];
}

/** What is kept between leaving for the provider and coming back. */
export interface Pending {
  issuer: string;
  verifier: string;
  state: string;
  nonce: string;
  redirectUri: string;
  tokenEndpoint: string;
}

export const PENDING_KEY = "centralita.oidc.pending";

/** base64url without padding (RFC 4648 §5). */
export function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** A random string of `n` bytes, base64url (the verifier: 32 bytes, 43 characters). */
export function randomString(n = 32): string {
  return base64url(crypto.getRandomValues(new Uint8Array(n)));
}

/** The S256 code challenge of `verifier`: base64url(SHA-256(verifier)). */
export async function codeChallenge(verifier: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

/** The provider's discovery document, checked: same issuer, both endpoints, S256. */
export function checkDiscovery(config: OidcConfig, d: Partial<Discovery>): Discovery {
  if (d.issuer !== config.issuer) throw new Error(`the provider says its issuer is ${d.issuer}, not ${config.issuer}`);
  if (!d.authorization_endpoint || !d.token_endpoint) throw new Error("the provider's discovery has no authorization or token endpoint");
  if (d.code_challenge_methods_supported && !d.code_challenge_methods_supported.includes("S256")) {
    throw new Error("the provider does not support PKCE with S256");
  }
  return d as Discovery;
}

export async function discover(config: OidcConfig): Promise<Discovery> {
  const url = `${config.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return checkDiscovery(config, (await r.json()) as Partial<Discovery>);
}

/** The authorization request's URL. */
export function authorizationUrl(config: OidcConfig, d: Discovery, p: Pending, challenge: string): string {
  const u = new URL(d.authorization_endpoint);
  const params: Record<string, string> = {
    response_type: "code",
    client_id: config.clientId,
    redirect_uri: p.redirectUri,
    scope: config.scope,
    state: p.state,
    nonce: p.nonce,
    code_challenge: challenge,
    code_challenge_method: "S256",
  };
  if (config.resource) params.resource = config.resource;
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u.toString();
}

/** Leaves for the provider's sign-in page. */
export async function beginSignIn(config: OidcConfig, origin = location.origin): Promise<void> {
  const d = await discover(config);
  const pending: Pending = {
    issuer: config.issuer,
    verifier: randomString(32),
    state: randomString(16),
    nonce: randomString(16),
    redirectUri: `${origin}/`,
    tokenEndpoint: d.token_endpoint,
  };
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  location.assign(authorizationUrl(config, d, pending, await codeChallenge(pending.verifier)));
}

/** The claims of a JWT, unverified (the services verify it). */
export function jwtClaims(token: string): Record<string, unknown> {
  const part = token.split(".")[1];
  if (!part) throw new Error("the token is not a JWT");
  const json = atob(part.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (part.length % 4)) % 4));
  const bytes = Uint8Array.from(json, (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
}

/** Checks the ID token of the response against the request (issuer, audience, nonce). */
export function checkIdToken(idToken: string, config: OidcConfig, pending: Pending): void {
  const c = jwtClaims(idToken);
  const aud = Array.isArray(c.aud) ? c.aud : [c.aud];
  if (c.iss !== pending.issuer) throw new Error("the ID token is from another issuer");
  if (!aud.includes(config.clientId)) throw new Error("the ID token is for another client");
  if (c.nonce !== pending.nonce) throw new Error("the ID token's nonce is not this sign-in's");
}

/** The console's session from the provider's access token. */
export function sessionFromToken(token: string): Session {
  const c = jwtClaims(token);
  const roles = Array.isArray(c.roles) ? (c.roles as unknown[]).map(String) : [];
  const role: Session["role"] | undefined = roles.includes("bpo_admin")
    ? "bpo_admin"
    : roles.includes("supervisor") || roles.includes("tenant_admin")
      ? "supervisor"
      : roles.includes("agent")
        ? "agent"
        : undefined;
  if (!role) throw new Error("the token gives no console role (agent, supervisor, tenant_admin or bpo_admin)");
  const tenant = typeof c.tenant === "string" ? c.tenant : "";
  if (role !== "bpo_admin" && !tenant) throw new Error("the token names no tenant");
  const agentId = typeof c.agent_id === "string" ? c.agent_id : undefined;
  if (role === "agent" && !agentId) throw new Error("an agent's token names no agent id");
  if (typeof c.exp !== "number") throw new Error("the token has no expiry");
  return {
    token,
    tenant: role === "bpo_admin" ? "" : tenant,
    role,
    agentId,
    subject: String(c.sub ?? ""),
    expireTime: c.exp,
    via: "oidc",
  };
}

/** What the provider's answer in `params` is: nothing (no sign-in under way), an error, or a
 * code to redeem with the pending request. */
export function callback(
  params: URLSearchParams,
  pending: Pending | null,
): { kind: "none" } | { kind: "error"; message: string } | { kind: "code"; code: string; pending: Pending } {
  const state = params.get("state");
  if (!params.has("code") && !params.has("error")) return { kind: "none" };
  if (!pending || state !== pending.state) return { kind: "error", message: "this sign-in answer is not for this page (state mismatch): sign in again" };
  const error = params.get("error");
  if (error) return { kind: "error", message: `${error}${params.get("error_description") ? `: ${params.get("error_description")}` : ""}` };
  return { kind: "code", code: params.get("code") ?? "", pending };
}

/** Finishes a sign-in the provider sent the browser back from; `null` when the page was
 * not opened by one. The URL is cleaned either way. */
export async function completeSignIn(config: OidcConfig): Promise<Session | null> {
  const params = new URLSearchParams(location.search);
  let pending: Pending | null = null;
  try {
    pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) ?? "null") as Pending | null;
  } catch {
    pending = null;
  }
  const answer = callback(params, pending);
  if (answer.kind === "none") return null;
  sessionStorage.removeItem(PENDING_KEY);
  history.replaceState(null, "", "/");
  if (answer.kind === "error") throw new Error(answer.message);
  const body = new URLSearchParams({
    grant_type: "authorization_code",
    code: answer.code,
    redirect_uri: answer.pending.redirectUri,
    client_id: config.clientId,
    code_verifier: answer.pending.verifier,
  });
  if (config.resource) body.set("resource", config.resource);
  const r = await fetch(answer.pending.tokenEndpoint, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body,
  });
  const tokens = (await r.json()) as { access_token?: string; id_token?: string; error?: string; error_description?: string };
  if (!r.ok || !tokens.access_token) {
    throw new Error(`the provider refused the code: ${tokens.error ?? `HTTP ${r.status}`}${tokens.error_description ? ` (${tokens.error_description})` : ""}`);
  }
  if (tokens.id_token) checkIdToken(tokens.id_token, config, answer.pending);
  return sessionFromToken(tokens.access_token);
}
