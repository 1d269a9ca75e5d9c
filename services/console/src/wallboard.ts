// The wallboard's rows from reporting's RealtimeMetrics and the tenant's contract. Pure.

import type { RealtimeMetrics, RealtimeQueue } from "./gen/centralita/reporting/v1/reporting_pb";
import type { Tenant } from "./gen/centralita/tenancy/v1/tenancy_pb";
import { num } from "./format";
import { BURNOUT_OCCUPANCY_PERCENT } from "./supervisor";

export interface WallboardRow {
  queue: string;
  displayName: string;
  waiting: number;
  longestWaitSeconds: number;
  /** Today's service level (tenant's day); undefined when no contact counted yet. */
  serviceLevelPercent?: number;
  /** The contracted target: the queue's own, else the tenant's. */
  targetPercent?: number;
  /** Met, breached, or nothing to judge yet. */
  slStatus: "met" | "breached" | "none";
  asaSeconds?: number;
  ahtSeconds?: number;
  abandonRatePercent?: number;
  answered: number;
  /** The last 15 minutes' service level and its status against the same target. */
  serviceLevel15mPercent?: number;
  sl15mStatus: "met" | "breached" | "none";
  /** Occupancy of the queue's agents over the last 15 minutes; above the burnout threshold is flagged. */
  occupancy15mPercent?: number;
  burnout: boolean;
  agents: { available: number; busy: number; away: number; offline: number };
}

export function targetOf(tenant: Tenant | undefined, queue: string): number | undefined {
  const q = tenant?.routing?.queues.find((x) => x.id === queue);
  if (q && q.serviceLevelTargetPercent > 0) return q.serviceLevelTargetPercent;
  const t = tenant?.serviceLevel?.targetPercent;
  return t && t > 0 ? t : undefined;
}

export function row(q: RealtimeQueue, tenant: Tenant | undefined): WallboardRow {
  const today = q.today;
  const sl = today?.serviceLevelPercent;
  const target = targetOf(tenant, q.queue);
  const sl15 = q.rolling15m?.serviceLevelPercent;
  const occupancy = q.agentsRolling15m?.occupancyPercent;
  const status = (v: number | undefined) => (v === undefined || target === undefined ? "none" : v >= target ? "met" : "breached");
  const display = tenant?.routing?.queues.find((x) => x.id === q.queue)?.displayName || q.queue;
  return {
    queue: q.queue,
    displayName: display,
    waiting: num(q.waiting),
    longestWaitSeconds: num(q.longestWaitMs) / 1000,
    serviceLevelPercent: sl,
    targetPercent: target,
    slStatus: status(sl),
    serviceLevel15mPercent: sl15,
    sl15mStatus: status(sl15),
    occupancy15mPercent: occupancy,
    burnout: occupancy !== undefined && occupancy > BURNOUT_OCCUPANCY_PERCENT,
    asaSeconds: today?.asaSeconds,
    ahtSeconds: today?.ahtSeconds,
    abandonRatePercent: today?.abandonRatePercent,
    answered: num(today?.answered),
    agents: {
      available: q.agents?.available ?? 0,
      busy: q.agents?.busy ?? 0,
      away: q.agents?.away ?? 0,
      offline: q.agents?.offline ?? 0,
    },
  };
}

/** Rows of every queue (or only `queue`), in the order reporting gives them. */
export function rows(m: RealtimeMetrics | undefined, tenant: Tenant | undefined, queue = ""): WallboardRow[] {
  return (m?.queues ?? []).filter((q) => !queue || q.queue === queue).map((q) => row(q, tenant));
}
