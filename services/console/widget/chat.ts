// The embeddable chat widget's state, pure (tested in chat.test.ts): the messages by
// sequence — so a reconnect that replays from the last sequence seen, or a frame seen twice,
// shows each message once and in order — and the customer's own messages not yet
// acknowledged, which are sent again (same request id: media stores them once) after a
// reconnect.

export interface Message {
  sequence: number;
  sender: "customer" | "agent" | "system";
  kind: string;
  text: string;
  /** A file (kind `attachment`): downloaded from `attachmentUrl`. */
  attachment?: FileRef;
}

export interface FileRef {
  id: string;
  name: string;
  contentType: string;
  size: number;
}

/** A frame's `attachment`, if it is a well-formed one. */
function fileRef(raw: unknown): FileRef | undefined {
  if (!raw || typeof raw !== "object") return undefined;
  const a = raw as Record<string, unknown>;
  if (typeof a.id !== "string" || !/^[A-Za-z0-9]{1,64}$/.test(a.id) || typeof a.name !== "string") return undefined;
  return { id: a.id, name: a.name, contentType: String(a.contentType ?? ""), size: Number(a.size ?? 0) };
}

export interface Pending {
  requestId: string;
  text: string;
}

export interface ChatState {
  messages: Message[];
  /** The highest sequence seen: the `after` of the next socket. */
  lastSequence: number;
  pending: Pending[];
  agentTyping: boolean;
  ended: boolean;
  error?: string;
}

export const initialChat: ChatState = { messages: [], lastSequence: 0, pending: [], agentTyping: false, ended: false };

/** One frame from media's web chat socket. Unknown or malformed frames change nothing. */
export function applyFrame(s: ChatState, raw: unknown): ChatState {
  if (!raw || typeof raw !== "object") return s;
  const f = raw as Record<string, unknown>;
  switch (f.type) {
    case "message": {
      const seq = f.sequence;
      if (typeof seq !== "number" || !Number.isInteger(seq) || seq < 1) return s;
      if (s.messages.some((m) => m.sequence === seq)) return { ...s, lastSequence: Math.max(s.lastSequence, seq) };
      const sender = f.sender === "agent" || f.sender === "system" ? f.sender : "customer";
      const m: Message = { sequence: seq, sender, kind: String(f.kind ?? "text"), text: String(f.text ?? "") };
      const file = fileRef(f.attachment);
      if (file) m.attachment = file;
      const messages = [...s.messages, m].sort((a, b) => a.sequence - b.sequence);
      return { ...s, messages, lastSequence: Math.max(s.lastSequence, seq), agentTyping: sender === "agent" ? false : s.agentTyping };
    }
    case "ack":
      return { ...s, pending: s.pending.filter((p) => p.requestId !== f.requestId) };
    case "typing":
      return { ...s, agentTyping: f.active === true };
    case "ended":
      return { ...s, ended: true, agentTyping: false };
    case "error":
      return { ...s, error: String(f.message ?? f.error ?? "error") };
    default:
      return s;
  }
}

/** A message the customer writes: kept until media acknowledges its request id. */
export function compose(s: ChatState, text: string, requestId: string): ChatState | { refused: string } {
  const t = text.trim();
  const bytes = new TextEncoder().encode(t).length;
  if (bytes === 0 || bytes > 4096) return { refused: "A message is 1 to 4096 bytes." };
  if (s.ended) return { refused: "The chat has ended." };
  return { ...s, pending: [...s.pending, { requestId, text: t }] };
}

/** The socket URL (http → ws, https → wss) for the messages after `after`. */
export function socketUrl(endpoint: string, tenant: string, token: string, after: number): string {
  const base = endpoint.replace(/\/+$/, "").replace(/^http/, "ws");
  return `${base}/v1/tenants/${encodeURIComponent(tenant)}/webchat/socket?token=${encodeURIComponent(token)}&after=${after}`;
}

/** Reconnect delay: doubling from 250 ms, capped at 5 s, with up to 20 % jitter. */
export function backoffMs(attempt: number, random = Math.random): number {
  const base = Math.min(5000, 250 * 2 ** Math.max(0, attempt));
  return Math.round(base * (1 + 0.2 * random()));
}

function base(endpoint: string, tenant: string): string {
  return `${endpoint.replace(/\/+$/, "")}/v1/tenants/${encodeURIComponent(tenant)}/webchat`;
}

/** Where the customer's file is uploaded (POST, the file as the body). */
export function uploadUrl(endpoint: string, tenant: string, name: string, requestId: string): string {
  return `${base(endpoint, tenant)}/attachments?name=${encodeURIComponent(name)}&requestId=${encodeURIComponent(requestId)}`;
}

/** Where a file of the conversation is downloaded (GET, with the visitor token). */
export function attachmentUrl(endpoint: string, tenant: string, id: string): string {
  return `${base(endpoint, tenant)}/attachments/${encodeURIComponent(id)}`;
}
