import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { Channel } from "./gen/centralita/tenancy/v1/tenancy_pb";
import {
  applyEvent,
  customerTyping,
  emptyConversation,
  isConversation,
  takesFiles,
  lastFromCustomer,
  lastSequence,
  merge,
  readByCustomer,
  typingDue,
  validText,
  TYPING_SHOWN_MS,
} from "./chat";
import {
  DeliveryStatus,
  MessageSchema,
  SenderKind,
  StreamMessagesResponseSchema,
  type Message,
} from "./gen/centralita/media/v1/media_pb";

const msg = (sequence: number, sender = SenderKind.CUSTOMER, status = DeliveryStatus.SENT, text = `m${sequence}`): Message =>
  create(MessageSchema, { sequence: BigInt(sequence), sender, status, text });
const seqs = (c: { messages: Message[] }) => c.messages.map((m) => Number(m.sequence));
const ev = (event: Parameters<typeof create<typeof StreamMessagesResponseSchema>>[1]) =>
  create(StreamMessagesResponseSchema, event);

describe("chat", () => {
  it("merges a resumed stream that overlaps the history without duplicates, in order", () => {
    let c = merge(emptyConversation, [msg(1, SenderKind.SYSTEM), msg(2), msg(3, SenderKind.AGENT)]);
    expect(lastSequence(c)).toBe(3n);
    // The stream resumed from an older sequence repeats 2 and 3, then brings 4 and 5 out of order.
    for (const m of [msg(2), msg(3, SenderKind.AGENT), msg(5), msg(4, SenderKind.AGENT)]) {
      c = applyEvent(c, ev({ event: { case: "message", value: m } }), 0);
    }
    expect(seqs(c)).toEqual([1, 2, 3, 4, 5]);
    expect(lastSequence(c)).toBe(5n);
    expect(lastSequence(emptyConversation)).toBe(0n);
  });

  it("keeps the copy whose delivery status is further along, never moving it back", () => {
    let c = merge(emptyConversation, [msg(3, SenderKind.AGENT, DeliveryStatus.SENT, "hola")]);
    c = merge(c, [msg(3, SenderKind.AGENT, DeliveryStatus.READ, "hola")]);
    expect(c.messages[0].status).toBe(DeliveryStatus.READ);
    c = merge(c, [msg(3, SenderKind.AGENT, DeliveryStatus.DELIVERED, "hola")]);
    expect(c.messages[0].status).toBe(DeliveryStatus.READ);
    expect(c.messages).toHaveLength(1);
  });

  it("ignores messages without a sequence", () => {
    expect(seqs(merge(emptyConversation, [msg(0), msg(-1), msg(1)]))).toEqual([1]);
  });

  it("shows the customer typing for a while, until they write or stop", () => {
    let c = applyEvent(emptyConversation, ev({ event: { case: "typing", value: { sender: SenderKind.CUSTOMER, active: true } } }), 1000);
    expect(customerTyping(c, 1000)).toBe(true);
    expect(customerTyping(c, 1000 + TYPING_SHOWN_MS)).toBe(false);
    c = merge(c, [msg(2)]);
    expect(customerTyping(c, 1001)).toBe(false);
    c = applyEvent(c, ev({ event: { case: "typing", value: { sender: SenderKind.CUSTOMER, active: true } } }), 2000);
    c = applyEvent(c, ev({ event: { case: "typing", value: { sender: SenderKind.CUSTOMER, active: false } } }), 2100);
    expect(customerTyping(c, 2100)).toBe(false);
    // An agent's own message does not end the customer's typing; another agent's typing is not the customer's.
    c = applyEvent(c, ev({ event: { case: "typing", value: { sender: SenderKind.CUSTOMER, active: true } } }), 3000);
    c = merge(c, [msg(3, SenderKind.AGENT)]);
    expect(customerTyping(c, 3001)).toBe(true);
    const other = applyEvent(emptyConversation, ev({ event: { case: "typing", value: { sender: SenderKind.AGENT, active: true } } }), 0);
    expect(customerTyping(other, 0)).toBe(false);
  });

  it("follows the customer's read marker forward only", () => {
    let c = merge(emptyConversation, [msg(1, SenderKind.AGENT), msg(2, SenderKind.AGENT), msg(3)]);
    c = applyEvent(c, ev({ event: { case: "read", value: { reader: SenderKind.CUSTOMER, sequence: 2n } } }), 0);
    c = applyEvent(c, ev({ event: { case: "read", value: { reader: SenderKind.CUSTOMER, sequence: 1n } } }), 0);
    expect(c.customerReadUpTo).toBe(2n);
    expect(readByCustomer(c, c.messages[1])).toBe(true);
    expect(readByCustomer(c, c.messages[2])).toBe(false); // the customer's own
    const c2 = merge(emptyConversation, [msg(4, SenderKind.AGENT, DeliveryStatus.READ)]);
    expect(readByCustomer(c2, c2.messages[0])).toBe(true);
  });

  it("finds the last customer message to mark read", () => {
    expect(lastFromCustomer(emptyConversation)).toBe(0n);
    const c = merge(emptyConversation, [msg(1, SenderKind.SYSTEM), msg(2), msg(3, SenderKind.AGENT)]);
    expect(lastFromCustomer(c)).toBe(2n);
  });

  it("sends the agent's typing at most every few seconds", () => {
    expect(typingDue(undefined, 0)).toBe(true);
    expect(typingDue(1000, 2000)).toBe(false);
    expect(typingDue(1000, 4000)).toBe(true);
  });

  it("accepts 1 to 4096 bytes of text", () => {
    expect(validText("  hola ")).toBe("hola");
    expect(validText("   ")).toBeUndefined();
    expect(validText("ñ".repeat(2048))).toBe("ñ".repeat(2048));
    expect(validText("ñ".repeat(2049))).toBeUndefined();
  });
});

describe("conversations", () => {
  it("are the digital channels' contacts, not calls or tasks", () => {
    expect([Channel.CHAT, Channel.SMS, Channel.SOCIAL, Channel.EMAIL].every(isConversation)).toBe(true);
    expect([Channel.VOICE, Channel.TASK, Channel.UNSPECIFIED].some(isConversation)).toBe(false);
  });

  it("files go out on web chat and email only", () => {
    expect([Channel.CHAT, Channel.EMAIL].every(takesFiles)).toBe(true);
    expect([Channel.SMS, Channel.SOCIAL, Channel.VOICE].some(takesFiles)).toBe(false);
  });
});
