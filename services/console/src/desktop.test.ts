import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { apply, emptyDesktop, offers, phoneStatus, reconnecting, working, type Desktop } from "./desktop";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { TenantSchema } from "./gen/centralita/tenancy/v1/tenancy_pb";
import {
  AgentSchema,
  AgentState,
  AgentStreamEventSchema,
  ContactSchema,
  ContactState,
  type Contact,
} from "./gen/centralita/sessions/v1/sessions_pb";

const me = "ana";
const contact = (id: string, state: ContactState, agentId = me): Contact =>
  create(ContactSchema, { name: `tenants/acme/contacts/${id}`, state, agentId, offerId: `o-${id}`, queue: "support" });
const agentEv = (contacts: string[]) =>
  create(AgentStreamEventSchema, {
    event: { case: "agent", value: create(AgentSchema, { name: "agents/ana", state: AgentState.AVAILABLE, contacts }) },
  });
const offerEv = (c: Contact) => create(AgentStreamEventSchema, { event: { case: "offer", value: c } });
const contactEv = (c: Contact) => create(AgentStreamEventSchema, { event: { case: "contact", value: c } });
const fold = (d: Desktop, ...evs: ReturnType<typeof agentEv>[]) => evs.reduce((s, e) => apply(s, e, me), d);

describe("agent desktop state", () => {
  it("shows an offer, then the accepted contact, then drops it when closed", () => {
    const offered = contact("c1", ContactState.OFFERED);
    let d = fold(emptyDesktop, agentEv([]), offerEv(offered));
    expect(offers(d).map((c) => c.name)).toEqual([offered.name]);
    d = fold(d, contactEv(contact("c1", ContactState.CONNECTED)));
    expect(offers(d)).toEqual([]);
    expect(working(d).map((c) => c.state)).toEqual([ContactState.CONNECTED]);
    d = fold(d, contactEv(contact("c1", ContactState.AFTER_CONTACT_WORK)));
    expect(working(d).map((c) => c.state)).toEqual([ContactState.AFTER_CONTACT_WORK]);
    d = fold(d, contactEv(contact("c1", ContactState.CLOSED)));
    expect(Object.keys(d.contacts)).toEqual([]);
  });

  it("drops an offer that went back to the queue or to another agent", () => {
    let d = fold(emptyDesktop, agentEv([]), offerEv(contact("c1", ContactState.OFFERED)), offerEv(contact("c2", ContactState.OFFERED)));
    d = fold(d, contactEv(contact("c1", ContactState.QUEUED, "")), contactEv(contact("c2", ContactState.CONNECTED, "bob")));
    expect(Object.keys(d.contacts)).toEqual([]);
  });

  it("keeps an offer across a dropped stream, and forgets what ended meanwhile", () => {
    const kept = contact("c1", ContactState.OFFERED);
    const ended = contact("c2", ContactState.CONNECTED);
    let d = fold(emptyDesktop, agentEv([kept.name, ended.name]), offerEv(kept), contactEv(ended));
    expect(Object.keys(d.contacts).length).toBe(2);
    // The stream drops; while it is down c2 closes and c3 is offered.
    d = reconnecting(d);
    expect(d.synced).toBe(false);
    const fresh = contact("c3", ContactState.OFFERED);
    d = fold(d, agentEv([kept.name, fresh.name]));
    expect(Object.keys(d.contacts)).toEqual([kept.name]);
    d = fold(d, offerEv(kept), offerEv(fresh));
    expect(offers(d).map((c) => c.name).sort()).toEqual([kept.name, fresh.name].sort());
    // A later agent event (not after a reconnect) does not prune.
    d = fold(d, agentEv([]));
    expect(offers(d).length).toBe(2);
  });
});

describe("the agent's phone", () => {
  const tenant = (voice: object | undefined) => create(TenantSchema, { name: "tenants/acme", voice });
  const agent = (phones: { tenant: string; untilMs: number }[]) =>
    create(AgentSchema, {
      name: "agents/ana",
      phones: phones.map((p) => ({ tenant: p.tenant, expireTime: timestampFromMs(p.untilMs) })),
    });
  const registrar = { registrar: { domain: "acme.example.com", credentialsSecret: "s" } };

  it("says nothing for a tenant without a registrar, unless the agent has a fixed phone there", () => {
    expect(phoneStatus(agent([]), tenant(undefined), "ana", 0)).toEqual({ kind: "none" });
    expect(phoneStatus(agent([]), tenant({ numbers: [] }), "ana", 0)).toEqual({ kind: "none" });
  });

  it("shows a fixed phone, a live registration with the tenant, and otherwise none", () => {
    expect(phoneStatus(agent([]), tenant({ phones: [{ agentId: "ana", uri: "sip:ana@192.0.2.1" }] }), "ana", 0)).toEqual({
      kind: "fixed",
    });
    expect(phoneStatus(agent([]), tenant({ phones: [{ agentId: "bea", uri: "sip:bea@192.0.2.1" }] }), "ana", 0)).toEqual({
      kind: "none",
    });
    expect(phoneStatus(agent([{ tenant: "acme", untilMs: 60_000 }]), tenant(registrar), "ana", 1_000)).toEqual({
      kind: "registered",
      untilMs: 60_000,
    });
    expect(phoneStatus(agent([{ tenant: "acme", untilMs: 60_000 }]), tenant(registrar), "ana", 60_000)).toEqual({
      kind: "unregistered",
    });
    expect(phoneStatus(agent([{ tenant: "globex", untilMs: 60_000 }]), tenant(registrar), "ana", 1_000)).toEqual({
      kind: "unregistered",
    });
    expect(phoneStatus(undefined, tenant(registrar), "ana", 1_000)).toEqual({ kind: "unregistered" });
  });
});
