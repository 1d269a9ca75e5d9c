// The agent desktop's state, folded from the agent's event stream (sessions'
// StreamAgentEvents). Pure: no I/O, tested in desktop.test.ts.
//
// Every (re)connected stream starts with the agent itself, then each contact it is offered
// or holds. So after a drop the desktop marks itself unsynced, and the first agent event
// of the new stream drops whatever the agent no longer has (contacts that ended while the
// stream was down); the offers and contacts that follow put back the rest. An offer made
// while the connection was down therefore appears as soon as the stream is back.

import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ContactState, type Agent, type AgentStreamEvent, type Contact } from "./gen/centralita/sessions/v1/sessions_pb";
import type { Tenant } from "./gen/centralita/tenancy/v1/tenancy_pb";

export interface Desktop {
  agent?: Agent;
  /** Offers and contacts the agent holds, by contact name. */
  contacts: Record<string, Contact>;
  /** False from a reconnect until the new stream's first agent event. */
  synced: boolean;
}

export const emptyDesktop: Desktop = { contacts: {}, synced: false };

const GONE = new Set([ContactState.CLOSED, ContactState.ABANDONED, ContactState.TIMED_OUT, ContactState.QUEUED]);

export function reconnecting(d: Desktop): Desktop {
  return { ...d, synced: false };
}

/** Folds one stream event for agent `me` (the agent id, not `agents/…`). */
export function apply(d: Desktop, ev: AgentStreamEvent, me: string): Desktop {
  const e = ev.event;
  switch (e.case) {
    case "agent": {
      let contacts = d.contacts;
      if (!d.synced) {
        const held = new Set(e.value.contacts);
        contacts = Object.fromEntries(Object.entries(d.contacts).filter(([name]) => held.has(name)));
      }
      return { agent: e.value, contacts, synced: true };
    }
    case "offer":
      return { ...d, contacts: { ...d.contacts, [e.value.name]: e.value } };
    case "contact": {
      const c = e.value;
      const contacts = { ...d.contacts };
      if (GONE.has(c.state) || (c.agentId !== me && !c.participants.some((p) => p.agentId === me && !p.leaveTime))) {
        delete contacts[c.name];
      } else {
        contacts[c.name] = c;
      }
      return { ...d, contacts };
    }
    default:
      return d;
  }
}

/** Offers waiting for an answer, oldest deadline first. */
export function offers(d: Desktop): Contact[] {
  return Object.values(d.contacts)
    .filter((c) => c.state === ContactState.OFFERED)
    .sort((a, b) => Number(a.offerExpireTime?.seconds ?? 0n) - Number(b.offerExpireTime?.seconds ?? 0n));
}

/** Contacts the agent works on (connected or in after-contact work). */
export function working(d: Desktop): Contact[] {
  return Object.values(d.contacts)
    .filter((c) => c.state === ContactState.CONNECTED || c.state === ContactState.AFTER_CONTACT_WORK)
    .sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * The agent's phone for the tenant's calls: `fixed` for a fixed SIP address in the tenant's
 * settings; with the tenant's registrar, `registered` until when, or `unregistered` (routing
 * offers the agent none of the tenant's calls until its phone registers); `none` otherwise
 * (a tenant without a registrar: its calls come from another system, or go to fixed phones).
 */
export type PhoneStatus =
  | { kind: "none" }
  | { kind: "fixed" }
  | { kind: "registered"; untilMs: number }
  | { kind: "unregistered" };

export function phoneStatus(agent: Agent | undefined, tenant: Tenant | undefined, agentId: string, nowMs: number): PhoneStatus {
  const voice = tenant?.voice;
  if (voice?.phones.some((p) => p.agentId === agentId)) return { kind: "fixed" };
  if (!voice?.registrar) return { kind: "none" };
  const id = (tenant?.name ?? "").replace(/^tenants\//, "");
  const phone = agent?.phones.find((p) => p.tenant === id && p.expireTime && timestampMs(p.expireTime) > nowMs);
  return phone?.expireTime ? { kind: "registered", untilMs: timestampMs(phone.expireTime) } : { kind: "unregistered" };
}
