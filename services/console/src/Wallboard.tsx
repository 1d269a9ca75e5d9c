// The supervisor's wallboard: per queue of the tenant, live from reporting's
// StreamRealtimeMetrics (pushed at most once a second when figures change), resumed after
// a drop.

import { useEffect, useState } from "react";
import { ConnectError } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Clients } from "./api";
import { keepStreaming } from "./resume";
import { clockTime, duration, optionalSeconds, percent } from "./format";
import type { Key, Lang } from "./i18n";
import { rows } from "./wallboard";
import type { RealtimeMetrics } from "./gen/centralita/reporting/v1/reporting_pb";
import type { Tenant } from "./gen/centralita/tenancy/v1/tenancy_pb";

interface Props {
  api: Clients;
  tenant?: Tenant;
  timeZone: string;
  t: (k: Key) => string;
  lang: Lang;
}

export function Wallboard({ api, tenant, timeZone, t, lang }: Props) {
  const [metrics, setMetrics] = useState<RealtimeMetrics>();
  const [online, setOnline] = useState(false);
  const [error, setError] = useState<string>();
  const [queue, setQueue] = useState("");

  useEffect(() => {
    const ctl = new AbortController();
    keepStreaming(
      (signal) => api.reporting.streamRealtimeMetrics({ query: {} }, { signal }),
      {
        event: (m) => {
          setOnline(true);
          setError(undefined);
          setMetrics(m);
        },
        dropped: (e) => {
          setOnline(false);
          if (e) setError(e instanceof ConnectError ? e.rawMessage : String(e));
        },
      },
      ctl.signal,
    );
    return () => ctl.abort();
  }, [api]);

  const shown = rows(metrics, tenant, queue);
  return (
    <main className="wallboard">
      <section className="card">
        <header className="wb-head">
          <h2>{t("wallboard")}</h2>
          <select data-testid="queue-filter" value={queue} onChange={(e) => setQueue(e.target.value)}>
            <option value="">{t("allQueues")}</option>
            {(metrics?.queues ?? []).map((q) => (
              <option key={q.queue} value={q.queue}>{q.queue}</option>
            ))}
          </select>
          <span className="asof">
            {t("asOf")}{" "}
            <span data-testid="as-of">{metrics?.asOf ? clockTime(timestampMs(metrics.asOf), timeZone, lang) : "—"}</span> ({timeZone}) ·{" "}
            <span data-testid="stream-status" className={online ? "ok" : "warn"}>{online ? t("connected") : t("reconnecting")}</span>
          </span>
        </header>
        {error && <p className="error">{error}</p>}
        {metrics && shown.length === 0 && <p>{t("noQueues")}</p>}
        <table data-testid="wallboard">
          <thead>
            <tr>
              <th>{t("queue")}</th>
              <th>{t("waiting")}</th>
              <th>{t("longestWait")}</th>
              <th>{t("serviceLevel")} ({t("today")})</th>
              <th>{t("serviceLevel")} (15 min)</th>
              <th>{t("asa")}</th>
              <th>{t("aht")}</th>
              <th>{t("abandonRate")}</th>
              <th>{t("answered")}</th>
              <th>{t("agentsAvailable")}</th>
              <th>{t("agentsBusy")}</th>
              <th>{t("agentsAway")}</th>
              <th>{t("agentsOffline")}</th>
              <th>{t("occupancy")} (15 min)</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((r) => (
              <tr key={r.queue} data-testid={`wb-${r.queue}`}>
                <td title={r.queue}>{r.displayName}</td>
                <td data-testid="waiting" className={r.waiting > 0 ? "hot" : ""}>{r.waiting}</td>
                <td data-testid="longest-wait">{duration(r.longestWaitSeconds)}</td>
                <td data-testid="service-level" className={`sl-${r.slStatus}`}>
                  {percent(r.serviceLevelPercent)}
                  <span className="target">
                    {" "}/ {t("target")} <span data-testid="sl-target">{percent(r.targetPercent)}</span>
                  </span>
                </td>
                <td data-testid="service-level-15m" className={`sl-${r.sl15mStatus}`}>{percent(r.serviceLevel15mPercent)}</td>
                <td data-testid="asa">{optionalSeconds(r.asaSeconds)}</td>
                <td data-testid="aht">{optionalSeconds(r.ahtSeconds)}</td>
                <td data-testid="abandon-rate">{percent(r.abandonRatePercent)}</td>
                <td data-testid="answered">{r.answered}</td>
                <td data-testid="agents-available">{r.agents.available}</td>
                <td data-testid="agents-busy">{r.agents.busy}</td>
                <td data-testid="agents-away">{r.agents.away}</td>
                <td data-testid="agents-offline">{r.agents.offline}</td>
                <td data-testid="occupancy-15m" className={r.burnout ? "hot" : ""} title={r.burnout ? t("burnoutHint") : undefined}>
                  {percent(r.occupancy15mPercent)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </main>
  );
}
