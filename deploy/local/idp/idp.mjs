// The local stack's stand-in for a BPO's identity provider: node-oidc-provider (a certified
// OpenID Provider) on loopback, so the console's sign-in (authorization code with PKCE) and
// the services' validation of the provider's tokens (JWKS) run against a real, independent
// OP. Started by deploy/local/services.sh; never deployed (a BPO brings its own IdP).
//
// Who signs in: the development login page accepts any name, and the name says who it is —
// `agent:<tenant>:<agent id>`, `supervisor:<tenant>`, `tenant_admin:<tenant>` or `bpo_admin`
// — as a real IdP's claim mappers would from its directory. The access token (a JWT, RS256,
// for the resource `urn:centralita:api`, audience IDP_AUDIENCE) carries the platform's
// claims: `tenant`, `roles`, `agent_id`.
//
// Environment: IDP_PORT, IDP_CONSOLE_ORIGINS (comma-separated; each origin's `/` is a
// redirect URI, and only they get CORS), IDP_AUDIENCE (default centralita-api).
import Provider, { errors } from "oidc-provider";

const port = Number(process.env.IDP_PORT);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error("IDP_PORT must be a port number");
  process.exit(2);
}
const origins = (process.env.IDP_CONSOLE_ORIGINS ?? "").split(",").map((o) => o.trim()).filter(Boolean);
const audience = process.env.IDP_AUDIENCE || "centralita-api";
export const RESOURCE = "urn:centralita:api";
const ROLES = new Set(["agent", "supervisor", "tenant_admin", "bpo_admin"]);
const CODE = /^[a-z0-9][a-z0-9_.-]{0,63}$/;

/** The platform's claims of account `id`, or null when the name says nothing valid. */
export function claimsOf(id) {
  const [role, tenant, agent, ...rest] = String(id).split(":");
  if (!ROLES.has(role) || rest.length > 0) return null;
  if (role === "bpo_admin") return tenant === undefined ? { roles: [role] } : null;
  if (!tenant || !CODE.test(tenant)) return null;
  if (role === "agent") return agent && CODE.test(agent) ? { tenant, roles: [role], agent_id: agent } : null;
  return agent === undefined ? { tenant, roles: [role] } : null;
}

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [
    {
      client_id: "centralita-console",
      // A public client: the browser holds no secret, PKCE protects the code.
      token_endpoint_auth_method: "none",
      grant_types: ["authorization_code"],
      response_types: ["code"],
      redirect_uris: origins.map((o) => `${o}/`),
    },
  ],
  pkce: { required: () => true },
  scopes: ["openid", "profile"],
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        if (resource !== RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: "openid profile",
          audience,
          accessTokenTTL: 3600,
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: "RS256" } },
        };
      },
    },
  },
  async findAccount(ctx, id) {
    if (!claimsOf(id)) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, name: id }) };
  },
  async extraTokenClaims(ctx, token) {
    return claimsOf(token.accountId) ?? {};
  },
  clientBasedCORS: (ctx, origin) => origins.includes(origin),
});
provider.proxy = false;
provider.on("server_error", (ctx, err) => console.error("server_error", err));
provider.listen(port, "127.0.0.1", () => {
  console.log(`[idp] OpenID Provider http://127.0.0.1:${port} (console origins: ${origins.join(" ") || "none"})`);
});
