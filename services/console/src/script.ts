// The agent's script for a contact, personalised with what CRM and the tenant say (pure,
// tested in script.test.ts): the greeting with the customer's name (or a neutral one), the
// tenant's and queue's names, and a line for VIP customers; and the post-resolution question
// whose answer the desktop records in CRM (RecordAnswer).

import type { Lang } from "./i18n";

export interface ScriptInput {
  lang: Lang;
  customerName?: string;
  vip: boolean;
  tenantName: string;
  queueName: string;
  channel: "voice" | "chat" | "sms" | "email" | "other";
}

const GREETING = {
  en: {
    named: (n: string, t: string) => `Hello ${n}, thank you for contacting ${t}. My name is … How can I help you today?`,
    anonymous: (t: string) => `Hello, thank you for contacting ${t}. My name is … May I have your name?`,
    vip: "VIP customer: offer the priority line and do not transfer without a warm handover.",
    topic: (q: string) => `You are answering the ${q} queue.`,
    voiceOnly: "Confirm the customer's identity before discussing the account.",
  },
  es: {
    named: (n: string, t: string) => `Hola ${n}, gracias por contactar con ${t}. Le atiende … ¿En qué puedo ayudarle hoy?`,
    anonymous: (t: string) => `Hola, gracias por contactar con ${t}. Le atiende … ¿Me indica su nombre?`,
    vip: "Cliente VIP: ofrezca la línea preferente y no transfiera sin presentarle.",
    topic: (q: string) => `Atiende la cola ${q}.`,
    voiceOnly: "Confirme la identidad del cliente antes de hablar de su cuenta.",
  },
};

/** The lines of the script, in order. */
export function scriptLines(i: ScriptInput): string[] {
  const g = GREETING[i.lang] ?? GREETING.en;
  const name = i.customerName?.trim();
  const lines = [name ? g.named(name, i.tenantName) : g.anonymous(i.tenantName), g.topic(i.queueName)];
  if (i.channel === "voice") lines.push(g.voiceOnly);
  if (i.vip) lines.push(g.vip);
  return lines;
}

export const RESOLUTION_QUESTION: Record<Lang, string> = {
  en: "Did we resolve what you contacted us about today?",
  es: "¿Hemos resuelto hoy el motivo de su contacto?",
};

/** CRM's limits on a recorded answer: 1 to 2000 characters. */
export function answerProblem(answer: string): "empty" | "long" | undefined {
  const a = answer.trim();
  if (!a) return "empty";
  if ([...a].length > 2000) return "long";
  return undefined;
}
