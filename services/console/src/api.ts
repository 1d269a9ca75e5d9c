// The console's connection to the platform: the server's /api/config (where each service
// is, whether development sign-in is on, the identity provider, the server's clock), the
// development sign-in, and
// gRPC-Web clients of the services' own APIs (generated from proto/ by protoc-gen-es),
// each call carrying the user's bearer token.

import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AgentService, ContactService } from "./gen/centralita/sessions/v1/sessions_pb";
import { CustomerService } from "./gen/centralita/crm/v1/crm_pb";
import { ReportingService, StaffingService } from "./gen/centralita/reporting/v1/reporting_pb";
import { TenantService } from "./gen/centralita/tenancy/v1/tenancy_pb";
import { ConversationService } from "./gen/centralita/media/v1/media_pb";
import { clockOffset } from "./clock";
import type { OidcConfig } from "./oidc";

export interface ServerConfig {
  endpoints: Record<string, string>;
  devSignIn: boolean;
  /** The BPO's identity provider (authorization code with PKCE); absent when none. */
  oidc?: OidcConfig;
  /** Add to Date.now() for the server's clock. */
  clockOffsetMs: number;
}

export async function loadConfig(): Promise<ServerConfig> {
  const sent = Date.now();
  const r = await fetch("/api/config", { cache: "no-store" });
  const received = Date.now();
  if (!r.ok) throw new Error(`/api/config: HTTP ${r.status}`);
  const body = (await r.json()) as {
    endpoints: Record<string, string>;
    devSignIn: boolean;
    oidc?: OidcConfig | null;
    serverTimeMs: number;
  };
  return {
    endpoints: body.endpoints,
    devSignIn: body.devSignIn,
    oidc: body.oidc ?? undefined,
    clockOffsetMs: clockOffset(sent, body.serverTimeMs, received),
  };
}

export interface Session {
  token: string;
  tenant: string;
  role: "agent" | "supervisor" | "bpo_admin";
  agentId?: string;
  subject: string;
  expireTime: number;
  /** How the token was obtained: the identity provider, or the development sign-in. */
  via?: "oidc" | "dev";
}

export async function devSignIn(tenant: string, role: Session["role"], agentId?: string): Promise<Session> {
  const r = await fetch("/api/dev/sign-in", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(role === "agent" ? { tenant, role, agentId } : { tenant, role }),
  });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ?? `HTTP ${r.status}`);
  return body as Session;
}

export interface Clients {
  agents: Client<typeof AgentService>;
  contacts: Client<typeof ContactService>;
  customers: Client<typeof CustomerService>;
  reporting: Client<typeof ReportingService>;
  /** Erlang C, served beside reporting. */
  staffing: Client<typeof StaffingService>;
  tenants: Client<typeof TenantService>;
  /** media's chat conversations; absent when /api/config lists no media endpoint. */
  conversations?: Client<typeof ConversationService>;
}

export function clients(config: ServerConfig, token: string): Clients {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = (service: string) =>
    createGrpcWebTransport({ baseUrl: config.endpoints[service], interceptors: [auth] });
  const sessions = transport("sessions");
  return {
    agents: createClient(AgentService, sessions),
    contacts: createClient(ContactService, sessions),
    customers: createClient(CustomerService, transport("crm")),
    reporting: createClient(ReportingService, transport("reporting")),
    staffing: createClient(StaffingService, transport("reporting")),
    // Every service serves the tenant API; sessions is the one every console user reaches.
    tenants: createClient(TenantService, sessions),
    conversations: config.endpoints.media ? createClient(ConversationService, transport("media")) : undefined,
  };
}
