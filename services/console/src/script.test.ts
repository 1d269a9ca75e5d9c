import { describe, expect, it } from "vitest";
import { answerProblem, cannedReplies, queueScript, RESOLUTION_QUESTION, resolutionQuestion, scriptLines } from "./script";

describe("scriptLines", () => {
  it("greets the customer by name in their agent's language, with the VIP and voice lines", () => {
    const lines = scriptLines({ lang: "es", customerName: " Lucía Gil ", vip: true, tenantName: "Acme Seguros", queueName: "Siniestros", channel: "voice" });
    expect(lines[0]).toBe("Hola Lucía Gil, gracias por contactar con Acme Seguros. Le atiende … ¿En qué puedo ayudarle hoy?");
    expect(lines).toContain("Atiende la cola Siniestros.");
    expect(lines).toContain("Confirme la identidad del cliente antes de hablar de su cuenta.");
    expect(lines.at(-1)).toMatch(/^Cliente VIP/);
  });
  it("asks for the name of an unknown customer, and says nothing of VIP or identity on chat", () => {
    const lines = scriptLines({ lang: "en", vip: false, tenantName: "Acme", queueName: "Support", channel: "chat" });
    expect(lines).toEqual(["Hello, thank you for contacting Acme. My name is … May I have your name?", "You are answering the Support queue."]);
  });
  it("has the resolution question in both languages", () => {
    expect(RESOLUTION_QUESTION.en).toMatch(/\?$/);
    expect(RESOLUTION_QUESTION.es).toMatch(/^¿.*\?$/);
  });
});

describe("a queue's own script and question (tenant manifest)", () => {
  const billing = {
    script: {
      en: { lines: ["Hello {customer}, this is billing at {tenant}.", "You are on {queue}."] },
      es: { lines: ["Hola {customer}, le atiende facturación de {tenant}."] },
    },
    resolutionQuestion: { en: "Is your invoice clear now?", es: "¿Le ha quedado clara la factura?" },
  };
  const input = { vip: false, tenantName: "Acme", queueName: "Billing", channel: "voice" as const };
  it("fills in the customer, tenant and queue in the agent's language", () => {
    const lines = scriptLines({ ...input, lang: "en", customerName: "Lucía", queueScript: queueScript(billing, "en") });
    expect(lines).toEqual(["Hello Lucía, this is billing at Acme.", "You are on Billing."]);
    const es = scriptLines({ ...input, lang: "es", vip: true, queueScript: queueScript(billing, "es") });
    expect(es[0]).toBe("Hola, le atiende facturación de Acme.");
    expect(es.at(-1)).toMatch(/^Cliente VIP/);
  });
  it("falls back to English, then to the console's own words", () => {
    const onlyEn = { script: { en: billing.script.en }, resolutionQuestion: {} };
    expect(queueScript(onlyEn, "es")).toEqual(billing.script.en.lines);
    expect(resolutionQuestion(onlyEn, "es")).toBe(RESOLUTION_QUESTION.es);
    expect(resolutionQuestion(billing, "es")).toBe("¿Le ha quedado clara la factura?");
    expect(queueScript(undefined, "en")).toBeUndefined();
    expect(queueScript({ script: {}, resolutionQuestion: {} }, "en")).toBeUndefined();
    expect(scriptLines({ ...input, lang: "en", queueScript: undefined })[1]).toBe("You are answering the Billing queue.");
  });
});

describe("answerProblem", () => {
  it("wants 1 to 2000 characters", () => {
    expect(answerProblem("  ")).toBe("empty");
    expect(answerProblem("sí")).toBeUndefined();
    expect(answerProblem("ñ".repeat(2000))).toBeUndefined();
    expect(answerProblem("ñ".repeat(2001))).toBe("long");
  });
});

describe("canned replies", () => {
  const words = {
    script: {},
    resolutionQuestion: {},
    cannedReplies: { es: { lines: ["Un momento, {customer}, lo compruebo en {queue}.", "Gracias por contactar con {tenant}."] }, en: { lines: ["One moment please."] } },
  };
  const input = { lang: "es" as const, vip: false, tenantName: "Acme Seguros", queueName: "Recibos", channel: "chat" as const };
  it("come in the agent's language with the contact's names filled in", () => {
    expect(cannedReplies(words, { ...input, customerName: "Lucía Gil" })).toEqual([
      "Un momento, Lucía Gil, lo compruebo en Recibos.",
      "Gracias por contactar con Acme Seguros.",
    ]);
    // Without a name the gap closes.
    expect(cannedReplies(words, input)[0]).toBe("Un momento, lo compruebo en Recibos.");
  });
  it("fall back to English, and are none when the queue has none", () => {
    expect(cannedReplies({ ...words, cannedReplies: { en: { lines: ["One moment please."] } } }, input)).toEqual(["One moment please."]);
    expect(cannedReplies({ script: {}, resolutionQuestion: {} }, input)).toEqual([]);
    expect(cannedReplies(undefined, input)).toEqual([]);
  });
});
