// The supervisor's views beyond the wallboard, as pure functions (tested in
// supervisor.test.ts): the agent list (reporting's live agent figures joined with sessions'
// agents and the contacts they hold), the service-level chart's geometry from reporting's
// compliance intervals, the staffing calculator's input checks, and what a supervisor may do
// on an agent's call (monitor, whisper, barge).

import type { RealtimeAgent, SlaPeriod } from "./gen/centralita/reporting/v1/reporting_pb";
import { ContactState, MonitorMode, type Agent, type Contact } from "./gen/centralita/sessions/v1/sessions_pb";
import { Channel } from "./gen/centralita/tenancy/v1/tenancy_pb";
import { timestampMs } from "@bufbuild/protobuf/wkt";

/**
 * Occupancy above about 85–90 % sustained burns agents out (docs/metrics.md, "Occupancy");
 * the console marks agents and queues above this.
 */
export const BURNOUT_OCCUPANCY_PERCENT = 85;

export type AgentActivity = "available" | "busy" | "away" | "offline";

export interface AgentRow {
  id: string;
  displayName: string;
  activity: AgentActivity;
  awayReason: string;
  /** When the agent's state began (ms since the epoch), if known. */
  sinceMs?: number;
  occupancyTodayPercent?: number;
  occupancy15mPercent?: number;
  /** The last 15 minutes' occupancy (else today's) is above the burnout threshold. */
  burnout: boolean;
  /** Ids of the tenant's contacts the agent is offered or holds. */
  contacts: string[];
  /** The same contacts' full names (`tenants/t/contacts/id`). */
  contactNames: string[];
}

function activityOf(state: string, handling: boolean): AgentActivity {
  if (handling) return "busy";
  switch (state) {
    case "AGENT_STATE_AVAILABLE":
      return "available";
    case "AGENT_STATE_AWAY":
      return "away";
    default:
      return "offline";
  }
}

/**
 * One row per agent serving the tenant: reporting's live figures, joined by id with
 * sessions' agents (display name, held contacts — sessions already keeps only the caller's
 * tenant's). Agents sessions lists that reporting has not seen yet appear signed out. Busy
 * first, then available, away, offline; by id within each.
 */
export function agentRows(live: RealtimeAgent[], agents: Agent[]): AgentRow[] {
  const byId = new Map(agents.map((a) => [a.name.replace(/^agents\//, ""), a]));
  const rows: AgentRow[] = live.map((r) => {
    const a = byId.get(r.agent);
    byId.delete(r.agent);
    const today = r.today?.occupancyPercent;
    const last15 = r.rolling15m?.occupancyPercent;
    const judged = last15 ?? today;
    return {
      id: r.agent,
      displayName: a?.displayName || r.agent,
      activity: activityOf(r.state, r.handling),
      awayReason: r.awayReason,
      sinceMs: r.stateSince ? timestampMs(r.stateSince) : undefined,
      occupancyTodayPercent: today,
      occupancy15mPercent: last15,
      burnout: judged !== undefined && judged > BURNOUT_OCCUPANCY_PERCENT,
      contacts: (a?.contacts ?? []).map(contactId),
      contactNames: [...(a?.contacts ?? [])],
    };
  });
  for (const [id, a] of byId) {
    rows.push({
      id,
      displayName: a.displayName || id,
      activity: a.contacts.length > 0 ? "busy" : "offline",
      awayReason: "",
      burnout: false,
      contacts: a.contacts.map(contactId),
      contactNames: [...a.contacts],
    });
  }
  const order: Record<AgentActivity, number> = { busy: 0, available: 1, away: 2, offline: 3 };
  return rows.sort((x, y) => order[x.activity] - order[y.activity] || x.id.localeCompare(y.id));
}

/** `tenants/t/contacts/id` → `id`. */
export function contactId(name: string): string {
  return name.slice(name.lastIndexOf("/") + 1);
}

export interface SlaBar {
  startMs: number;
  /** Absent: nothing was judged in the interval (no bar drawn). */
  achievedPercent?: number;
  targetPercent: number;
  judged: number;
  breached: boolean;
  /** Geometry in the chart's own units (see `slaChart`). */
  x: number;
  width: number;
  y: number;
  height: number;
}

export interface SlaChart {
  width: number;
  height: number;
  bars: SlaBar[];
  /** The target line's y (the queue's target; the latest interval's if it changed). */
  targetY?: number;
}

/**
 * Bars of a day's 15-minute intervals: x by time from `dayStartMs` (96 slots), height by the
 * achieved service level (0–100 %), a breach wherever achieved < target — the same rule as
 * reporting's `breaches`, which the chart must agree with.
 */
export function slaChart(intervals: SlaPeriod[], dayStartMs: number, width = 960, height = 200): SlaChart {
  const slot = width / 96;
  const yOf = (p: number) => height - (Math.max(0, Math.min(100, p)) / 100) * height;
  const bars = intervals
    .map((p) => {
      const startMs = p.periodStart ? timestampMs(p.periodStart) : dayStartMs;
      const index = Math.floor((startMs - dayStartMs) / 900_000);
      const achieved = p.achievedPercent;
      const y = achieved === undefined ? height : yOf(achieved);
      return {
        startMs,
        achievedPercent: achieved,
        targetPercent: p.targetPercent,
        judged: Number(p.judged),
        breached: achieved !== undefined && achieved < p.targetPercent,
        x: index * slot + 1,
        width: Math.max(1, slot - 2),
        y,
        height: height - y,
      };
    })
    .filter((b) => b.x >= 0 && b.x < width)
    .sort((a, b) => a.startMs - b.startMs);
  const last = bars.at(-1);
  return { width, height, bars, targetY: last ? yOf(last.targetPercent) : undefined };
}

export interface StaffingInput {
  arrivalsPerHour: string;
  ahtSeconds: string;
  thresholdSeconds: string;
  targetPercent: string;
  maxOccupancyPercent: string;
}

export type StaffingCheck =
  | { ok: true; arrivalsPerSecond: number; ahtSeconds: number; thresholdSeconds: number; targetPercent: number; maxOccupancyPercent: number }
  | { ok: false; field: keyof StaffingInput };

/** The calculator's form as numbers, or the first field that is not acceptable. */
export function checkStaffing(i: StaffingInput): StaffingCheck {
  const n = (s: string) => (s.trim() === "" ? NaN : Number(s));
  const arrivals = n(i.arrivalsPerHour);
  if (!(arrivals > 0) || !Number.isFinite(arrivals)) return { ok: false, field: "arrivalsPerHour" };
  const aht = n(i.ahtSeconds);
  if (!(aht > 0) || !Number.isFinite(aht)) return { ok: false, field: "ahtSeconds" };
  const threshold = n(i.thresholdSeconds);
  if (!(threshold >= 0) || !Number.isFinite(threshold)) return { ok: false, field: "thresholdSeconds" };
  const target = n(i.targetPercent);
  if (!(target > 0 && target < 100)) return { ok: false, field: "targetPercent" };
  const cap = i.maxOccupancyPercent.trim() === "" ? 0 : n(i.maxOccupancyPercent);
  if (!(cap >= 0 && cap <= 100)) return { ok: false, field: "maxOccupancyPercent" };
  return {
    ok: true,
    arrivalsPerSecond: arrivals / 3600,
    ahtSeconds: aht,
    thresholdSeconds: threshold,
    targetPercent: target,
    maxOccupancyPercent: cap,
  };
}

/** Midnight of the day containing `ms` in `timeZone`, as ms since the epoch. */
export function dayStart(ms: number, timeZone: string): number {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-GB", {
      timeZone,
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hourCycle: "h23",
    })
      .formatToParts(new Date(ms))
      .map((p) => [p.type, p.value]),
  );
  const sinceMidnight = ((Number(parts.hour) * 60 + Number(parts.minute)) * 60 + Number(parts.second)) * 1000 + (ms % 1000);
  return ms - sinceMidnight;
}

export type MonitorModeName = "listen" | "whisper" | "barge";

/** What the supervisor's call controls show for a contact. */
export interface MonitorView {
  /** A connected voice call of a customer (not a consult leg): the only calls sessions lets a supervisor join. */
  monitorable: boolean;
  /** The supervisor on the call and how, if any. */
  mode?: MonitorModeName;
  supervisor?: string;
}

const MODE_NAMES: Record<number, MonitorModeName> = {
  [MonitorMode.LISTEN]: "listen",
  [MonitorMode.WHISPER]: "whisper",
  [MonitorMode.BARGE]: "barge",
};

export const MONITOR_MODES: Record<MonitorModeName, MonitorMode> = {
  listen: MonitorMode.LISTEN,
  whisper: MonitorMode.WHISPER,
  barge: MonitorMode.BARGE,
};

export function monitorView(c: Contact): MonitorView {
  const monitorable = c.channel === Channel.VOICE && c.state === ContactState.CONNECTED && !c.consultOf;
  const mode = c.monitor ? MODE_NAMES[c.monitor.mode] : undefined;
  return mode ? { monitorable, mode, supervisor: c.monitor?.supervisor } : { monitorable };
}
