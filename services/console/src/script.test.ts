import { describe, expect, it } from "vitest";
import { answerProblem, RESOLUTION_QUESTION, scriptLines } from "./script";

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

describe("answerProblem", () => {
  it("wants 1 to 2000 characters", () => {
    expect(answerProblem("  ")).toBe("empty");
    expect(answerProblem("sí")).toBeUndefined();
    expect(answerProblem("ñ".repeat(2000))).toBeUndefined();
    expect(answerProblem("ñ".repeat(2001))).toBe("long");
  });
});
