import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { rows, targetOf } from "./wallboard";
import { AgentTimeSchema, FiguresSchema, RealtimeMetricsSchema, RealtimeQueueSchema } from "./gen/centralita/reporting/v1/reporting_pb";
import { QueueSchema, RoutingConfigSchema, ServiceLevelSchema, TenantSchema } from "./gen/centralita/tenancy/v1/tenancy_pb";

const tenant = create(TenantSchema, {
  name: "tenants/acme",
  serviceLevel: create(ServiceLevelSchema, { targetPercent: 80 }),
  routing: create(RoutingConfigSchema, {
    queues: [
      create(QueueSchema, { id: "support", displayName: "Support", serviceLevelTargetPercent: 90 }),
      create(QueueSchema, { id: "sales" }),
    ],
  }),
});

const metrics = create(RealtimeMetricsSchema, {
  tenant: "acme",
  queues: [
    create(RealtimeQueueSchema, {
      queue: "support",
      waiting: 3n,
      longestWaitMs: 42_500n,
      today: create(FiguresSchema, { answered: 10n, serviceLevelPercent: 85, asaSeconds: 12.5, ahtSeconds: 240, abandonRatePercent: 4 }),
      agents: { available: 2, busy: 5, away: 1, offline: 7 },
      rolling15m: create(FiguresSchema, { serviceLevelPercent: 92 }),
      agentsRolling15m: create(AgentTimeSchema, { occupancyPercent: 91 }),
    }),
    create(RealtimeQueueSchema, {
      queue: "sales",
      today: create(FiguresSchema, { serviceLevelPercent: 95 }),
      rolling15m: create(FiguresSchema, { serviceLevelPercent: 60 }),
      agentsRolling15m: create(AgentTimeSchema, { occupancyPercent: 85 }),
    }),
    create(RealtimeQueueSchema, { queue: "billing" }),
  ],
});

describe("wallboard rows", () => {
  it("judges each queue against its contract: the queue's target, else the tenant's", () => {
    expect(targetOf(tenant, "support")).toBe(90);
    expect(targetOf(tenant, "sales")).toBe(80);
    expect(targetOf(undefined, "sales")).toBeUndefined();
    const [support, sales, billing] = rows(metrics, tenant);
    expect(support).toMatchObject({
      displayName: "Support",
      waiting: 3,
      longestWaitSeconds: 42.5,
      serviceLevelPercent: 85,
      targetPercent: 90,
      slStatus: "breached",
      asaSeconds: 12.5,
      ahtSeconds: 240,
      abandonRatePercent: 4,
      answered: 10,
      agents: { available: 2, busy: 5, away: 1, offline: 7 },
    });
    expect(sales).toMatchObject({ displayName: "sales", slStatus: "met", targetPercent: 80 });
    // The last 15 minutes, judged against the same target; occupancy above 85 % is flagged.
    expect(support).toMatchObject({ serviceLevel15mPercent: 92, sl15mStatus: "met", occupancy15mPercent: 91, burnout: true });
    expect(sales).toMatchObject({ serviceLevel15mPercent: 60, sl15mStatus: "breached", occupancy15mPercent: 85, burnout: false });
    expect(billing).toMatchObject({ sl15mStatus: "none", occupancy15mPercent: undefined, burnout: false });
    // Nothing judged yet: no service level, no verdict.
    expect(billing).toMatchObject({ serviceLevelPercent: undefined, slStatus: "none", asaSeconds: undefined });
  });
  it("filters one queue", () => {
    expect(rows(metrics, tenant, "sales").map((r) => r.queue)).toEqual(["sales"]);
    expect(rows(undefined, tenant)).toEqual([]);
  });
});
