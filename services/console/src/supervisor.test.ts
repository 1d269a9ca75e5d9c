import { describe, expect, it } from "vitest";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { agentRows, BURNOUT_OCCUPANCY_PERCENT, checkStaffing, dayStart, MONITOR_MODES, monitorView, slaChart } from "./supervisor";
import { AgentTimeSchema, RealtimeAgentSchema, SlaPeriodSchema } from "./gen/centralita/reporting/v1/reporting_pb";
import { AgentSchema, ContactMonitorSchema, ContactSchema, ContactState, MonitorMode } from "./gen/centralita/sessions/v1/sessions_pb";
import { Channel } from "./gen/centralita/tenancy/v1/tenancy_pb";

describe("agentRows", () => {
  const live = [
    create(RealtimeAgentSchema, {
      agent: "zoe",
      state: "AGENT_STATE_AVAILABLE",
      handling: true,
      rolling15m: create(AgentTimeSchema, { occupancyPercent: BURNOUT_OCCUPANCY_PERCENT + 5 }),
      today: create(AgentTimeSchema, { occupancyPercent: 40 }),
    }),
    create(RealtimeAgentSchema, { agent: "ana", state: "AGENT_STATE_AVAILABLE", stateSince: timestampFromMs(1_000) }),
    create(RealtimeAgentSchema, { agent: "bea", state: "AGENT_STATE_AWAY", awayReason: "training" }),
    create(RealtimeAgentSchema, { agent: "cid", state: "AGENT_STATE_OFFLINE", today: create(AgentTimeSchema, { occupancyPercent: 95 }) }),
  ];
  const agents = [
    create(AgentSchema, { name: "agents/zoe", displayName: "Zoe", contacts: ["tenants/acme/contacts/c1", "tenants/acme/contacts/c2"] }),
    create(AgentSchema, { name: "agents/ana", displayName: "Ana" }),
    // Known to sessions, not yet to reporting.
    create(AgentSchema, { name: "agents/dan", displayName: "Dan" }),
  ];

  it("joins reporting's figures with sessions' agents, busy first", () => {
    const rows = agentRows(live, agents);
    expect(rows.map((r) => [r.id, r.activity])).toEqual([
      ["zoe", "busy"],
      ["ana", "available"],
      ["bea", "away"],
      ["cid", "offline"],
      ["dan", "offline"],
    ]);
    expect(rows[0]).toMatchObject({ displayName: "Zoe", contacts: ["c1", "c2"], burnout: true, occupancyTodayPercent: 40 });
    expect(rows[0].contactNames).toEqual(["tenants/acme/contacts/c1", "tenants/acme/contacts/c2"]);
    expect(rows[1]).toMatchObject({ displayName: "Ana", sinceMs: 1_000, burnout: false, contacts: [] });
    expect(rows[2]).toMatchObject({ displayName: "bea", awayReason: "training" });
  });

  it("judges burnout on the last 15 minutes, else today", () => {
    const rows = agentRows(live, []);
    expect(rows.find((r) => r.id === "cid")?.burnout).toBe(true);
    const exactly = agentRows([create(RealtimeAgentSchema, { agent: "x", rolling15m: create(AgentTimeSchema, { occupancyPercent: BURNOUT_OCCUPANCY_PERCENT }) })], []);
    expect(exactly[0].burnout).toBe(false);
  });
});

describe("slaChart", () => {
  const day = Date.UTC(2026, 11, 5);
  const at = (i: number) => timestampFromMs(day + i * 900_000);
  const periods = [
    create(SlaPeriodSchema, { periodStart: at(40), achievedPercent: 100, targetPercent: 80, judged: 4n, met: true }),
    create(SlaPeriodSchema, { periodStart: at(2), achievedPercent: 50, targetPercent: 80, judged: 2n }),
    create(SlaPeriodSchema, { periodStart: at(3), targetPercent: 80 }),
    create(SlaPeriodSchema, { periodStart: at(95), achievedPercent: 79.9, targetPercent: 80, judged: 10n }),
    // The next day's first interval is not drawn.
    create(SlaPeriodSchema, { periodStart: at(96), achievedPercent: 10, targetPercent: 80, judged: 1n }),
  ];

  it("places each interval in its slot, sized by the achieved level, breaches as reporting judges them", () => {
    const chart = slaChart(periods, day, 960, 200);
    expect(chart.bars.map((b) => b.startMs)).toEqual([2, 3, 40, 95].map((i) => day + i * 900_000));
    const [b2, b3, b40, b95] = chart.bars;
    expect(b2).toMatchObject({ x: 21, width: 8, y: 100, height: 100, breached: true, judged: 2 });
    expect(b3).toMatchObject({ achievedPercent: undefined, height: 0, breached: false });
    expect(b40).toMatchObject({ x: 401, y: 0, height: 200, breached: false });
    expect(b95.breached).toBe(true);
    expect(chart.targetY).toBeCloseTo(40);
  });

  it("draws nothing for no intervals", () => {
    expect(slaChart([], day)).toMatchObject({ bars: [], targetY: undefined });
  });
});

describe("checkStaffing", () => {
  const ok = { arrivalsPerHour: "360", ahtSeconds: "240", thresholdSeconds: "20", targetPercent: "80", maxOccupancyPercent: "" };

  it("turns the form into the API's units", () => {
    expect(checkStaffing(ok)).toEqual({ ok: true, arrivalsPerSecond: 0.1, ahtSeconds: 240, thresholdSeconds: 20, targetPercent: 80, maxOccupancyPercent: 0 });
  });

  it.each([
    ["arrivalsPerHour", "0"],
    ["arrivalsPerHour", "abc"],
    ["ahtSeconds", "-1"],
    ["ahtSeconds", ""],
    ["thresholdSeconds", "-5"],
    ["targetPercent", "100"],
    ["targetPercent", "0"],
    ["maxOccupancyPercent", "101"],
  ] as const)("refuses %s = %s", (field, value) => {
    expect(checkStaffing({ ...ok, [field]: value })).toEqual({ ok: false, field });
  });
});

describe("dayStart", () => {
  it("is midnight in the tenant's zone, not the browser's", () => {
    // 2026-12-05 00:30 in Madrid (UTC+1) is 2026-12-04 23:30 UTC.
    const ms = Date.UTC(2026, 11, 4, 23, 30, 0, 250);
    expect(dayStart(ms, "Europe/Madrid")).toBe(Date.UTC(2026, 11, 4, 23, 0));
    expect(dayStart(ms, "UTC")).toBe(Date.UTC(2026, 11, 4));
    expect(dayStart(ms, "America/Bogota")).toBe(Date.UTC(2026, 11, 4, 5, 0));
  });
});

describe("monitorView", () => {
  const call = (over: MessageInitShape<typeof ContactSchema> = {}) =>
    create(ContactSchema, { name: "tenants/acme/contacts/c1", channel: Channel.VOICE, state: ContactState.CONNECTED, ...over });

  it("offers the controls on a connected voice call of a customer only", () => {
    expect(monitorView(call())).toEqual({ monitorable: true });
    expect(monitorView(call({ channel: Channel.CHAT })).monitorable).toBe(false);
    expect(monitorView(call({ state: ContactState.OFFERED })).monitorable).toBe(false);
    expect(monitorView(call({ state: ContactState.QUEUED })).monitorable).toBe(false);
    // A consult leg is the agents' own call: sessions refuses it, the console does not offer it.
    expect(monitorView(call({ consultOf: "tenants/acme/contacts/c0" })).monitorable).toBe(false);
  });

  it("names the supervisor on the call and how", () => {
    const on = call({ monitor: create(ContactMonitorSchema, { supervisor: "sam", mode: MonitorMode.WHISPER }) });
    expect(monitorView(on)).toEqual({ monitorable: true, mode: "whisper", supervisor: "sam" });
    expect(MONITOR_MODES[monitorView(on).mode!]).toBe(MonitorMode.WHISPER);
    // Still shown (so it can be stopped) once the call is no longer one a supervisor may join.
    const ended = call({ state: ContactState.AFTER_CONTACT_WORK, monitor: create(ContactMonitorSchema, { supervisor: "sam", mode: MonitorMode.BARGE }) });
    expect(monitorView(ended)).toEqual({ monitorable: false, mode: "barge", supervisor: "sam" });
  });
});
