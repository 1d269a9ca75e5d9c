import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { translator } from "./i18n";
import { agentId, agentLabel, queueLoad } from "./directory";
import {
  AgentActivity,
  AgentState,
  TransferAgentSchema,
  TransferQueueSchema,
} from "./gen/centralita/sessions/v1/sessions_pb";

describe("transfer directory", () => {
  const en = translator("en");
  const es = translator("es");
  it("names an agent by display name, state and what it is doing", () => {
    const bob = create(TransferAgentSchema, {
      name: "agents/bob-1",
      displayName: "Bob",
      state: AgentState.AVAILABLE,
      activity: AgentActivity.IDLE,
    });
    expect(agentId(bob)).toBe("bob-1");
    expect(agentLabel(bob, en)).toBe("Bob · Available");
    const busy = { ...bob, state: AgentState.AWAY, activity: AgentActivity.ON_CONTACT };
    expect(agentLabel(busy, en)).toBe("Bob · Away · on a contact");
    expect(agentLabel({ ...bob, activity: AgentActivity.AFTER_CONTACT_WORK }, es)).toBe("Bob · Disponible · cerrando");
    // Without a display name, the id.
    expect(agentLabel({ ...bob, displayName: "" }, en)).toBe("bob-1 · Available");
  });
  it("tells how many wait, the longest wait, and who is available", () => {
    const q = create(TransferQueueSchema, { queue: "sales", waiting: 3, longestWaitMs: 65_400n, agentsAvailable: 2 });
    expect(queueLoad(q, en)).toBe("3 waiting (longest 1:05) · 2 available");
    expect(queueLoad({ ...q, waiting: 0, longestWaitMs: 0n }, es)).toBe("0 en espera · 2 disponibles");
  });
});
