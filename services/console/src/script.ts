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
  /** The queue's own script (the tenant manifest's `script`), already in one language. */
  queueScript?: string[];
}

/** What a queue's manifest says per language (`script`, `resolutionQuestion`). */
export interface QueueWords {
  script: { [lang: string]: { lines: string[] } };
  resolutionQuestion: { [lang: string]: string };
  cannedReplies?: { [lang: string]: { lines: string[] } };
}

/** `byLang`'s entry in `lang`, else English, else the first language it has. */
function pick<V>(byLang: { [lang: string]: V } | undefined, lang: Lang): V | undefined {
  if (!byLang) return undefined;
  return byLang[lang] ?? byLang.en ?? Object.keys(byLang).sort().map((l) => byLang[l])[0];
}

/** The queue's configured script in the agent's language (or its fallback), if any. */
export function queueScript(q: QueueWords | undefined, lang: Lang): string[] | undefined {
  const lines = pick(q?.script, lang)?.lines;
  return lines && lines.length > 0 ? lines : undefined;
}

/** The queue's canned replies in the agent's language (or its fallback), placeholders
 * filled in for this contact; none when the queue has none. */
export function cannedReplies(q: QueueWords | undefined, i: ScriptInput): string[] {
  return (pick(q?.cannedReplies, i.lang)?.lines ?? []).map((t) => fill(t, i));
}

/** The post-resolution question: the queue's, else the console's. */
export function resolutionQuestion(q: QueueWords | undefined, lang: Lang): string {
  return pick(q?.resolutionQuestion, lang)?.trim() || RESOLUTION_QUESTION[lang];
}

/** A configured line with `{customer}`, `{tenant}` and `{queue}` filled in; without a
 * customer name the gap closes ("Hello {customer}, …" reads "Hello, …"). */
function fill(line: string, i: ScriptInput): string {
  const name = i.customerName?.trim() ?? "";
  return line
    .replaceAll("{customer}", name)
    .replaceAll("{tenant}", i.tenantName)
    .replaceAll("{queue}", i.queueName)
    .replace(/\s+([,.;:!?])/g, "$1")
    .replace(/,(?:\s*,)+/g, ",")
    .replace(/\s{2,}/g, " ")
    .trim();
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

/** The lines of the script, in order: the queue's own when it has one (with the VIP line
 * when CRM says so), else the console's. */
export function scriptLines(i: ScriptInput): string[] {
  const g = GREETING[i.lang] ?? GREETING.en;
  if (i.queueScript && i.queueScript.length > 0) {
    const lines = i.queueScript.map((l) => fill(l, i));
    if (i.vip) lines.push(g.vip);
    return lines;
  }
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
