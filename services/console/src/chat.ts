// A chat contact's conversation as the agent's pane shows it, folded from media's
// ConversationService: the history (ListMessages), then the live stream (StreamMessages),
// reopened after a drop from the last sequence held. Pure: no I/O, tested in chat.test.ts.
//
// Messages are kept by sequence, so a message seen twice (the history and the stream
// overlapping, a stream resumed from an older sequence, the reply of the agent's own
// SendMessage arriving before or after the stream's copy) is shown once, and a later copy
// only moves its delivery status forward.

import { DeliveryStatus, SenderKind, type Message, type StreamMessagesResponse } from "./gen/centralita/media/v1/media_pb";
import { Channel } from "./gen/centralita/tenancy/v1/tenancy_pb";

export interface Conversation {
  /** By sequence, ascending. */
  messages: Message[];
  /** The customer is typing, since this time (ms, the browser's clock); undefined if not. */
  customerTypingSince?: number;
  /** The customer has read the messages up to this sequence. */
  customerReadUpTo: bigint;
}

export const emptyConversation: Conversation = { messages: [], customerReadUpTo: 0n };

/** A customer's typing indicator goes away by itself after this long without news. */
export const TYPING_SHOWN_MS = 6000;

const ORDER: Record<number, number> = {
  [DeliveryStatus.UNSPECIFIED]: 0,
  [DeliveryStatus.SENT]: 1,
  [DeliveryStatus.DELIVERED]: 2,
  [DeliveryStatus.READ]: 3,
  [DeliveryStatus.FAILED]: 4,
};

/** The copy to keep of two of the same sequence: the one whose status is further along. */
function later(a: Message, b: Message): Message {
  return (ORDER[b.status] ?? 0) > (ORDER[a.status] ?? 0) ? b : a;
}

/** Adds messages (any order, possibly already held) to the conversation, each once. */
export function merge(c: Conversation, incoming: Message[]): Conversation {
  if (incoming.length === 0) return c;
  const bySeq = new Map<bigint, Message>(c.messages.map((m) => [m.sequence, m]));
  for (const m of incoming) {
    if (m.sequence <= 0n) continue;
    const held = bySeq.get(m.sequence);
    bySeq.set(m.sequence, held ? later(held, m) : m);
  }
  const messages = [...bySeq.values()].sort((a, b) => (a.sequence < b.sequence ? -1 : a.sequence > b.sequence ? 1 : 0));
  let typing = c.customerTypingSince;
  // A customer's message ends their typing.
  if (incoming.some((m) => m.sender === SenderKind.CUSTOMER)) typing = undefined;
  return { ...c, messages, customerTypingSince: typing };
}

/** Folds one event of StreamMessages; `now` is the browser's clock in ms. */
export function applyEvent(c: Conversation, ev: StreamMessagesResponse, now: number): Conversation {
  const e = ev.event;
  switch (e.case) {
    case "message":
      return merge(c, [e.value]);
    case "typing":
      if (e.value.sender !== SenderKind.CUSTOMER) return c;
      return { ...c, customerTypingSince: e.value.active ? now : undefined };
    case "read":
      if (e.value.reader !== SenderKind.CUSTOMER || e.value.sequence <= c.customerReadUpTo) return c;
      return { ...c, customerReadUpTo: e.value.sequence };
    default:
      return c;
  }
}

/** The sequence to resume the stream after: the last one held (0 if none). */
export function lastSequence(c: Conversation): bigint {
  return c.messages.length ? c.messages[c.messages.length - 1].sequence : 0n;
}

/** Whether the customer is shown as typing at `now`. */
export function customerTyping(c: Conversation, now: number): boolean {
  return c.customerTypingSince !== undefined && now - c.customerTypingSince < TYPING_SHOWN_MS;
}

/** The last customer message's sequence, to mark read once the agent has seen it (0: none). */
export function lastFromCustomer(c: Conversation): bigint {
  for (let i = c.messages.length - 1; i >= 0; i--) {
    if (c.messages[i].sender === SenderKind.CUSTOMER) return c.messages[i].sequence;
  }
  return 0n;
}

/** Whether an agent's message has been read by the customer. */
export function readByCustomer(c: Conversation, m: Message): boolean {
  return m.sender !== SenderKind.CUSTOMER && (m.status === DeliveryStatus.READ || m.sequence <= c.customerReadUpTo);
}

/**
 * When to tell media the agent is typing: at most once per `everyMs` while keys are pressed
 * (the customer's indicator lasts a few seconds), so not on every key.
 */
export function typingDue(lastSentMs: number | undefined, now: number, everyMs = 3000): boolean {
  return lastSentMs === undefined || now - lastSentMs >= everyMs;
}

/** A message text as SendMessage accepts it: trimmed, 1 to 4096 bytes of UTF-8. */
export function validText(text: string): string | undefined {
  const t = text.trim();
  if (t.length === 0 || new TextEncoder().encode(t).length > 4096) return undefined;
  return t;
}

/** A fresh idempotency key for SendMessage (random, 128 bits; works outside secure contexts too). */
export function newRequestId(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Whether a contact of `channel` has a conversation of messages (web chat, SMS, WhatsApp and
 * other social networks, email) that the chat pane shows and answers. */
export function isConversation(channel: Channel): boolean {
  return channel === Channel.CHAT || channel === Channel.SMS || channel === Channel.SOCIAL || channel === Channel.EMAIL;
}

/** Whether the agent can send files on a contact of `channel`: web chat and email (a provider
 * channel takes text; media refuses files there). */
export function takesFiles(channel: Channel): boolean {
  return channel === Channel.CHAT || channel === Channel.EMAIL;
}
