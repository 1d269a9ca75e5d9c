import { describe, expect, it } from "vitest";
import { applyFrame, attachmentUrl, uploadUrl, backoffMs, compose, initialChat, socketUrl, type ChatState } from "./chat";

const msg = (sequence: number, sender = "agent", text = `m${sequence}`) => ({ type: "message", sequence, sender, kind: "text", text });

describe("applyFrame", () => {
  it("keeps each message once, in sequence order, whatever the replay", () => {
    let s: ChatState = initialChat;
    for (const f of [msg(1, "system"), msg(3), msg(2, "customer"), msg(3), msg(2, "customer")]) s = applyFrame(s, f);
    expect(s.messages.map((m) => [m.sequence, m.sender])).toEqual([[1, "system"], [2, "customer"], [3, "agent"]]);
    expect(s.lastSequence).toBe(3);
  });

  it("drops what it cannot read", () => {
    for (const bad of [null, 7, "x", { type: "message" }, { type: "message", sequence: -1 }, { type: "message", sequence: 1.5 }, { type: "nope" }]) {
      expect(applyFrame(initialChat, bad)).toBe(initialChat);
    }
  });

  it("clears a pending message on its ack, follows typing, ends", () => {
    let s = compose(initialChat, " hola ", "r1") as ChatState;
    s = compose(s, "¿sigues?", "r2") as ChatState;
    expect(s.pending).toEqual([{ requestId: "r1", text: "hola" }, { requestId: "r2", text: "¿sigues?" }]);
    s = applyFrame(s, { type: "ack", requestId: "r1", sequence: 4 });
    expect(s.pending.map((p) => p.requestId)).toEqual(["r2"]);
    s = applyFrame(s, { type: "typing", active: true });
    expect(s.agentTyping).toBe(true);
    s = applyFrame(s, msg(5));
    expect(s.agentTyping).toBe(false);
    s = applyFrame(s, { type: "ended" });
    expect(s.ended).toBe(true);
    expect(compose(s, "hello?", "r3")).toEqual({ refused: "The chat has ended." });
  });

  it("refuses empty and oversized messages by bytes", () => {
    expect(compose(initialChat, "   ", "r")).toHaveProperty("refused");
    expect(compose(initialChat, "ñ".repeat(2049), "r")).toHaveProperty("refused");
    expect(compose(initialChat, "ñ".repeat(2048), "r")).not.toHaveProperty("refused");
  });
});

describe("socketUrl and backoffMs", () => {
  it("speaks ws for http and wss for https, escaping the token", () => {
    expect(socketUrl("http://127.0.0.1:8580/", "acme", "a.b+c", 7)).toBe("ws://127.0.0.1:8580/v1/tenants/acme/webchat/socket?token=a.b%2Bc&after=7");
    expect(socketUrl("https://chat.acme.example", "acme", "t", 0)).toMatch(/^wss:\/\/chat\.acme\.example\//);
  });
  it("doubles up to 5 s with bounded jitter", () => {
    expect([0, 1, 2, 10].map((a) => backoffMs(a, () => 0))).toEqual([250, 500, 1000, 5000]);
    expect(backoffMs(10, () => 1)).toBe(6000);
  });
});

describe("files", () => {
  it("keeps a well-formed attachment of a message frame and drops a malformed one", () => {
    const frame = (attachment: unknown) => ({ type: "message", sequence: 1, sender: "agent", kind: "attachment", text: "f.pdf", attachment });
    const ok = applyFrame(initialChat, frame({ id: "0190ab", name: "f.pdf", contentType: "application/pdf", size: 12 }));
    expect(ok.messages[0].attachment).toEqual({ id: "0190ab", name: "f.pdf", contentType: "application/pdf", size: 12 });
    for (const bad of [undefined, "x", { id: "../x", name: "f" }, { id: "a1" }]) {
      const s = applyFrame(initialChat, frame(bad));
      expect(s.messages[0].attachment).toBeUndefined();
      expect(s.messages[0].text).toBe("f.pdf");
    }
  });

  it("builds the upload and download URLs, escaping names", () => {
    expect(uploadUrl("https://chat.example/", "acme", "factura 7 ñ.pdf", "r-1")).toBe(
      "https://chat.example/v1/tenants/acme/webchat/attachments?name=factura%207%20%C3%B1.pdf&requestId=r-1",
    );
    expect(attachmentUrl("https://chat.example", "acme", "0190ab")).toBe("https://chat.example/v1/tenants/acme/webchat/attachments/0190ab");
  });
});
