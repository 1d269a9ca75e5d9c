// The BPO admin's views as pure functions (tested in bpo.test.ts): each tenant with its
// status and a month's usage, and the shared agent pool with each agent's assignments.

import { AgentState, type Agent } from "./gen/centralita/sessions/v1/sessions_pb";
import type { Usage } from "./gen/centralita/reporting/v1/reporting_pb";
import { Channel, TenantStatus, type Tenant } from "./gen/centralita/tenancy/v1/tenancy_pb";

export interface TenantRow {
  id: string;
  displayName: string;
  status: "active" | "suspended" | "unknown";
  channels: string[];
  maxConcurrentContacts: number;
  /** Handled contacts and handle minutes per channel in the month; absent until loaded. */
  usage?: { handled: number; handleMinutes: number; byChannel: Record<string, number>; agentHours: number; complete: boolean };
}

export function tenantRows(tenants: Tenant[], usage: Record<string, Usage | undefined>): TenantRow[] {
  return tenants
    .map((t) => {
      const id = t.name.replace(/^tenants\//, "");
      const u = usage[id];
      return {
        id,
        displayName: t.displayName || id,
        status: t.status === TenantStatus.ACTIVE ? "active" : t.status === TenantStatus.SUSPENDED ? "suspended" : "unknown",
        channels: t.channels.map((c) => Channel[c]?.toLowerCase() ?? String(c)),
        maxConcurrentContacts: t.quotas?.maxConcurrentContacts ?? 0,
        usage: u && {
          handled: u.channels.reduce((n, c) => n + Number(c.handled), 0),
          handleMinutes: u.channels.reduce((n, c) => n + c.handleMinutes, 0),
          byChannel: Object.fromEntries(u.channels.map((c) => [c.channel, Number(c.handled)])),
          agentHours: u.agentSignedInHours,
          complete: u.complete,
        },
      } satisfies TenantRow;
    })
    .sort((a, b) => a.id.localeCompare(b.id));
}

export interface PoolRow {
  id: string;
  displayName: string;
  pool: string;
  state: "available" | "away" | "offline";
  /** `tenant/queue` of every assignment. */
  assignments: string[];
  tenants: string[];
  contacts: number;
}

/** The shared pool: every agent with the tenants and queues it serves, by pool then id. */
export function poolRows(agents: Agent[]): PoolRow[] {
  return agents
    .map((a) => ({
      id: a.name.replace(/^agents\//, ""),
      displayName: a.displayName || a.name.replace(/^agents\//, ""),
      pool: a.agentPool,
      state: (a.state === AgentState.AVAILABLE ? "available" : a.state === AgentState.AWAY ? "away" : "offline") as PoolRow["state"],
      assignments: a.queues.map((q) => `${q.tenant}/${q.queue}`).sort(),
      tenants: [...new Set(a.queues.map((q) => q.tenant))].sort(),
      contacts: a.contacts.length,
    }))
    .sort((x, y) => x.pool.localeCompare(y.pool) || x.id.localeCompare(y.id));
}

/** Agents serving more than one tenant (the pool's sharing at a glance). */
export function sharedAgents(rows: PoolRow[]): number {
  return rows.filter((r) => r.tenants.length > 1).length;
}

/** `YYYY-MM` of the month containing `ms`, and of the `back`-th month before it (UTC). */
export function monthOf(ms: number, back = 0): string {
  const d = new Date(ms);
  const m = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - back, 1));
  return `${m.getUTCFullYear()}-${String(m.getUTCMonth() + 1).padStart(2, "0")}`;
}
