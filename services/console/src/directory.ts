// The transfer directory of a contact (sessions' ListTransferTargets): the labels the agent
// desktop's transfer and consult controls show. Pure, tested in directory.test.ts.

import type { Key } from "./i18n";
import {
  AgentActivity,
  AgentState,
  type TransferAgent,
  type TransferQueue,
} from "./gen/centralita/sessions/v1/sessions_pb";

type T = (k: Key) => string;

/** The id a transfer or consult takes (`agents/{id}` without its prefix). */
export function agentId(a: TransferAgent): string {
  return a.name.replace(/^agents\//, "");
}

/** "Bob · Available" or "Bob · Away · On a contact": who, the state, and busy if so. */
export function agentLabel(a: TransferAgent, t: T): string {
  const state = a.state === AgentState.AVAILABLE ? t("stateAvailable") : t("stateAway");
  const parts = [a.displayName || agentId(a), state];
  if (a.activity === AgentActivity.ON_CONTACT || a.activity === AgentActivity.OFFERED) parts.push(t("dirOnContact"));
  if (a.activity === AgentActivity.AFTER_CONTACT_WORK) parts.push(t("dirWrapUp"));
  return parts.join(" · ");
}

/** "3 waiting (longest 1:05) · 2 available" for the queue chosen. */
export function queueLoad(q: TransferQueue, t: T): string {
  const wait = Number(q.longestWaitMs) / 1000;
  const longest =
    q.waiting > 0 ? ` (${t("dirLongest")} ${Math.floor(wait / 60)}:${String(Math.floor(wait % 60)).padStart(2, "0")})` : "";
  return `${q.waiting} ${t("dirWaiting")}${longest} · ${q.agentsAvailable} ${t("dirAvailable")}`;
}
