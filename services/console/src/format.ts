// Numbers and times as the console shows them. Times are in the tenant's time zone (IANA
// name from the tenant's business hours), whatever the browser's own zone is.

import type { Lang } from "./i18n";

/** `HH:MM:SS` of an instant in `timeZone`. */
export function clockTime(ms: number, timeZone: string, lang: Lang): string {
  return new Intl.DateTimeFormat(lang === "es" ? "es-ES" : "en-GB", {
    timeZone,
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  }).format(new Date(ms));
}

/** Date and time of an instant in `timeZone`, e.g. `05/12/2026 19:04`. */
export function dateTime(ms: number, timeZone: string, lang: Lang): string {
  return new Intl.DateTimeFormat(lang === "es" ? "es-ES" : "en-GB", {
    timeZone,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
  }).format(new Date(ms));
}

/** A duration as `m:ss` (or `h:mm:ss` from an hour). */
export function duration(totalSeconds: number): string {
  const s = Math.max(0, Math.round(totalSeconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** An optional figure: `—` when the API gives none (nothing to compute it from). */
export function optionalSeconds(v: number | undefined): string {
  return v === undefined ? "—" : duration(v);
}

export function percent(v: number | undefined): string {
  return v === undefined ? "—" : `${v.toFixed(1)} %`;
}

/** int64/uint64 arrive as bigint; the console's figures fit in a double. */
export function num(v: bigint | number | undefined): number {
  return v === undefined ? 0 : Number(v);
}
