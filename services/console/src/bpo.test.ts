import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { monthOf, poolRows, sharedAgents, tenantRows } from "./bpo";
import { AgentSchema, AgentState, QueueAssignmentSchema } from "./gen/centralita/sessions/v1/sessions_pb";
import { ChannelUsageSchema, UsageSchema } from "./gen/centralita/reporting/v1/reporting_pb";
import { Channel, QuotasSchema, TenantSchema, TenantStatus } from "./gen/centralita/tenancy/v1/tenancy_pb";

describe("tenantRows", () => {
  it("shows status, channels, quota and the month's usage summed over channels", () => {
    const tenants = [
      create(TenantSchema, { name: "tenants/zeta", status: TenantStatus.SUSPENDED, channels: [Channel.VOICE] }),
      create(TenantSchema, {
        name: "tenants/acme",
        displayName: "Acme",
        status: TenantStatus.ACTIVE,
        channels: [Channel.VOICE, Channel.CHAT],
        quotas: create(QuotasSchema, { maxConcurrentContacts: 500 }),
      }),
    ];
    const usage = {
      acme: create(UsageSchema, {
        channels: [
          create(ChannelUsageSchema, { channel: "voice", handled: 10n, handleMinutes: 42.5 }),
          create(ChannelUsageSchema, { channel: "chat", handled: 3n, handleMinutes: 7.5 }),
        ],
        agentSignedInHours: 12.25,
        complete: true,
      }),
    };
    const [acme, zeta] = tenantRows(tenants, usage);
    expect(acme).toMatchObject({
      id: "acme",
      displayName: "Acme",
      status: "active",
      channels: ["voice", "chat"],
      maxConcurrentContacts: 500,
      usage: { handled: 13, handleMinutes: 50, byChannel: { voice: 10, chat: 3 }, agentHours: 12.25, complete: true },
    });
    expect(zeta).toMatchObject({ id: "zeta", displayName: "zeta", status: "suspended", usage: undefined });
  });
});

describe("poolRows", () => {
  it("lists each agent's assignments across tenants and counts the shared ones", () => {
    const agents = [
      create(AgentSchema, {
        name: "agents/bob",
        agentPool: "default",
        state: AgentState.AVAILABLE,
        queues: [
          create(QueueAssignmentSchema, { tenant: "zeta", queue: "claims" }),
          create(QueueAssignmentSchema, { tenant: "acme", queue: "support" }),
        ],
        contacts: ["tenants/acme/contacts/1"],
      }),
      create(AgentSchema, { name: "agents/ana", displayName: "Ana", agentPool: "default", state: AgentState.AWAY,
        queues: [create(QueueAssignmentSchema, { tenant: "acme", queue: "support" })] }),
      create(AgentSchema, { name: "agents/cid", agentPool: "eu" }),
    ];
    const rows = poolRows(agents);
    expect(rows.map((r) => r.id)).toEqual(["ana", "bob", "cid"]);
    expect(rows[1]).toMatchObject({ state: "available", assignments: ["acme/support", "zeta/claims"], tenants: ["acme", "zeta"], contacts: 1 });
    expect(rows[0]).toMatchObject({ displayName: "Ana", state: "away" });
    expect(rows[2]).toMatchObject({ state: "offline", assignments: [], pool: "eu" });
    expect(sharedAgents(rows)).toBe(1);
  });
});

describe("monthOf", () => {
  it("steps back across a year", () => {
    const ms = Date.UTC(2026, 0, 15);
    expect(monthOf(ms)).toBe("2026-01");
    expect(monthOf(ms, 1)).toBe("2025-12");
    expect(monthOf(ms, 13)).toBe("2024-12");
  });
});
