// The supervisor's console: the live wallboard, the agent list, the service level of a day
// as a chart (with the history as CSV), and the Erlang C staffing calculator. Everything
// comes from the platform's public APIs with the supervisor's token: reporting
// (StreamRealtimeMetrics, GetSlaCompliance, ExportHistoryCsv, ComputeStaffing) and sessions
// (ListAgents; ListContacts, MonitorContact and StopMonitoring for listening, whispering and
// barging in on an agent's call), each scoped to the supervisor's tenant by the services.

import { useEffect, useState, type FormEvent } from "react";
import { ConnectError } from "@connectrpc/connect";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Clients } from "./api";
import { keepStreaming } from "./resume";
import { clockTime, dateTime, percent, optionalSeconds } from "./format";
import type { Key, Lang } from "./i18n";
import { Wallboard } from "./Wallboard";
import { listAllAgents, listConnected, usePolled } from "./polling";
import {
  agentRows,
  BURNOUT_OCCUPANCY_PERCENT,
  checkStaffing,
  dayStart,
  MONITOR_MODES,
  monitorView,
  slaChart,
  type MonitorModeName,
  type StaffingInput,
} from "./supervisor";
import { Dimension, Granularity, type ComputeStaffingResponse, type RealtimeMetrics, type SlaCompliance } from "./gen/centralita/reporting/v1/reporting_pb";
import type { Contact } from "./gen/centralita/sessions/v1/sessions_pb";
import type { Tenant } from "./gen/centralita/tenancy/v1/tenancy_pb";

type T = (k: Key) => string;

interface Props {
  api: Clients;
  tenant?: Tenant;
  timeZone: string;
  t: T;
  lang: Lang;
}

const message = (e: unknown) => (e instanceof ConnectError ? e.rawMessage : String(e));

type Tab = "wallboard" | "agents" | "sla" | "staffing";

export function Supervisor(props: Props) {
  const { t } = props;
  const [tab, setTab] = useState<Tab>("wallboard");
  const tabs: [Tab, Key][] = [
    ["wallboard", "wallboard"],
    ["agents", "agentList"],
    ["sla", "slaHistory"],
    ["staffing", "staffing"],
  ];
  return (
    <>
      <nav className="tabs" role="tablist">
        {tabs.map(([id, label]) => (
          <button key={id} role="tab" aria-selected={tab === id} className={tab === id ? "active" : ""} data-testid={`tab-${id}`} onClick={() => setTab(id)}>
            {t(label)}
          </button>
        ))}
      </nav>
      {tab === "wallboard" && <Wallboard {...props} />}
      {tab === "agents" && <AgentList {...props} />}
      {tab === "sla" && <SlaHistory {...props} />}
      {tab === "staffing" && <Staffing {...props} />}
    </>
  );
}

/** Reporting's live agent figures (streamed) joined with sessions' agents (polled). */
function AgentList({ api, timeZone, t, lang }: Props) {
  const [metrics, setMetrics] = useState<RealtimeMetrics>();
  const [streamError, setStreamError] = useState<string>();
  const { value: agents = [], error: listError } = usePolled(() => listAllAgents(api, 200), 3000, [api]);
  // The tenant's connected contacts, for the monitor controls: one paginated read per poll,
  // not one per contact on the page.
  const { value: connected, setValue: setConnected } = usePolled(() => listConnected(api, 500), 3000, [api]);
  const changed = (c: Contact) => setConnected(new Map(connected).set(c.name, c));
  const error = streamError ?? listError;

  useEffect(() => {
    const ctl = new AbortController();
    keepStreaming(
      (signal) => api.reporting.streamRealtimeMetrics({ query: {} }, { signal }),
      { event: setMetrics, dropped: (e) => e && setStreamError(message(e)) },
      ctl.signal,
    );
    return () => ctl.abort();
  }, [api]);

  const rows = agentRows(metrics?.agents ?? [], agents);
  const activity: Record<string, Key> = { available: "agentsAvailable", busy: "agentsBusy", away: "agentsAway", offline: "agentsOffline" };
  return (
    <main className="card">
      <h2>{t("agentList")}</h2>
      <p className="hint">
        {t("burnoutHint")} {BURNOUT_OCCUPANCY_PERCENT} %
      </p>
      {error && <p className="error">{error}</p>}
      <table data-testid="agent-list">
        <thead>
          <tr>
            <th>{t("agentName")}</th>
            <th>{t("state")}</th>
            <th>{t("stateSince")}</th>
            <th>{t("currentContacts")}</th>
            <th>{t("occupancy")} ({t("today")})</th>
            <th>{t("occupancy")} (15 min)</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.id} data-testid={`agent-${r.id}`} className={r.burnout ? "burnout" : ""}>
              <td title={r.id}>{r.displayName}</td>
              <td data-testid="activity" className={`act-${r.activity}`}>
                {t(activity[r.activity])}
                {r.awayReason && ` · ${r.awayReason}`}
              </td>
              <td>{r.sinceMs ? clockTime(r.sinceMs, timeZone, lang) : "—"}</td>
              <td data-testid="contacts">
                {r.contacts.length === 0
                  ? "—"
                  : r.contactNames.map((name, i) => (
                      <div key={name} className="contact-cell">
                        <span data-testid="contact-id">{r.contacts[i]}</span>
                        {connected?.has(name) && <CallMonitor api={api} contact={connected.get(name)!} id={r.contacts[i]} changed={changed} t={t} />}
                      </div>
                    ))}
              </td>
              <td data-testid="occupancy-today">{percent(r.occupancyTodayPercent)}</td>
              <td data-testid="occupancy-15m" className={r.burnout ? "hot" : ""}>{percent(r.occupancy15mPercent)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </main>
  );
}

/**
 * A supervisor's controls on one of an agent's contacts: on a connected voice call, listen,
 * whisper (heard by the agent only) or barge in, and stop. Sessions decides (a supervisor of
 * the contact's tenant, one at a time) and media rings the supervisor's phone; the view is
 * the contact as sessions returned it (the agent list's poll of connected contacts, or the
 * answer to the last action here).
 */
function CallMonitor({ api, contact, id, changed, t }: { api: Clients; contact: Contact; id: string; changed: (c: Contact) => void; t: T }) {
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const name = contact.name;
  const view = monitorView(contact);
  if (!view.monitorable && !view.mode) return null;
  const act = async (mode?: MonitorModeName) => {
    setBusy(true);
    setError(undefined);
    try {
      changed(mode ? await api.contacts.monitorContact({ name, mode: MONITOR_MODES[mode] }) : await api.contacts.stopMonitoring({ name }));
    } catch (e) {
      setError(message(e));
    } finally {
      setBusy(false);
    }
  };
  const label: Record<MonitorModeName, Key> = { listen: "monitorListening", whisper: "monitorWhispering", barge: "monitorBarged" };
  const buttons: [MonitorModeName, Key][] = [
    ["listen", "monitorListen"],
    ["whisper", "monitorWhisper"],
    ["barge", "monitorBarge"],
  ];
  return (
    <div className="monitor" data-testid={`monitor-${id}`}>
      {view.mode && (
        <span className="state-pill held" data-testid="monitor-mode" data-mode={view.mode}>
          {t(label[view.mode])} · {t("monitorBy")} {view.supervisor}
        </span>
      )}
      {view.monitorable &&
        buttons.map(([mode, key]) => (
          <button key={mode} data-testid={`monitor-${mode}`} disabled={busy || view.mode === mode} onClick={() => act(mode)} title={t("monitorHint")}>
            {t(key)}
          </button>
        ))}
      {view.mode && (
        <button data-testid="monitor-stop" disabled={busy} onClick={() => act()}>
          {t("monitorStop")}
        </button>
      )}
      {error && <span className="error" data-testid="monitor-error">{error}</span>}
    </div>
  );
}

/** Today's (or a chosen day's) service level per 15-minute interval against the target. */
function SlaHistory({ api, tenant, timeZone, t, lang }: Props) {
  const [daysBack, setDaysBack] = useState(0);
  const [sla, setSla] = useState<SlaCompliance>();
  const [error, setError] = useState<string>();
  const [csvError, setCsvError] = useState<string>();
  const start = dayStart(Date.now(), timeZone) - daysBack * 86_400_000;
  // The next midnight, found again in the zone (a day is 23 or 25 hours across a change).
  const end = dayStart(start + 36 * 3_600_000, timeZone);

  useEffect(() => {
    let stop = false;
    const load = () =>
      api.reporting
        .getSlaCompliance({ startTime: timestampFromMs(start), endTime: timestampFromMs(end) })
        .then(
          (r) => {
            if (!stop) {
              setSla(r);
              setError(undefined);
            }
          },
          (e) => !stop && setError(message(e)),
        );
    load();
    const timer = setInterval(load, 15_000);
    return () => {
      stop = true;
      clearInterval(timer);
    };
  }, [api, start, end]);

  const download = async () => {
    setCsvError(undefined);
    try {
      const r = await api.reporting.exportHistoryCsv({
        query: {
          startTime: timestampFromMs(start),
          endTime: timestampFromMs(end),
          granularity: Granularity.INTERVAL,
          groupBy: [Dimension.QUEUE],
        },
      });
      const url = URL.createObjectURL(new Blob([r.csv], { type: "text/csv" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `${tenant?.name.replace(/^tenants\//, "") ?? "history"}-${new Date(start).toISOString().slice(0, 10)}.csv`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      URL.revokeObjectURL(url);
    } catch (e) {
      setCsvError(message(e));
    }
  };

  return (
    <main className="card">
      <header className="wb-head">
        <h2>{t("slaHistory")}</h2>
        <select data-testid="sla-day" value={daysBack} onChange={(e) => setDaysBack(Number(e.target.value))}>
          {[0, 1, 2, 3, 4, 5, 6].map((d) => (
            <option key={d} value={d}>
              {dateTime(dayStart(Date.now(), timeZone) - d * 86_400_000 + 12 * 3_600_000, timeZone, lang).slice(0, 10)}
            </option>
          ))}
        </select>
        <button data-testid="export-csv" onClick={download}>
          {t("exportCsv")}
        </button>
        <span className="asof">({timeZone})</span>
      </header>
      {error && <p className="error">{error}</p>}
      {csvError && <p className="error">{csvError}</p>}
      {sla && sla.queues.length === 0 && <p>{t("noQueues")}</p>}
      {sla?.queues.map((q) => {
        const chart = slaChart(q.intervals, start);
        const day = q.days[0];
        const display = tenant?.routing?.queues.find((x) => x.id === q.queue)?.displayName || q.queue;
        return (
          <section key={q.queue} className="sla-queue" data-testid={`sla-${q.queue}`}>
            <h3>
              {display} · {t("serviceLevel")} <span data-testid="sla-day-achieved">{percent(day?.achievedPercent)}</span> /{" "}
              {t("target")} <span data-testid="sla-target">{percent(q.targetPercent)}</span> ·{" "}
              <span data-testid="sla-breaches">{q.breaches.length}</span> {t("breachingIntervals")}
            </h3>
            <svg viewBox={`0 0 ${chart.width} ${chart.height + 20}`} className="sla-chart" role="img" aria-label={`${display} ${t("serviceLevel")}`}>
              {[0, 6, 12, 18].map((h) => (
                <text key={h} x={(h * chart.width) / 24 + 2} y={chart.height + 15} className="axis">
                  {String(h).padStart(2, "0")}:00
                </text>
              ))}
              <line x1={0} x2={chart.width} y1={chart.height} y2={chart.height} className="axis-line" />
              {chart.bars
                .filter((b) => b.achievedPercent !== undefined)
                .map((b) => (
                  <rect
                    key={b.startMs}
                    x={b.x}
                    y={b.y}
                    width={b.width}
                    height={Math.max(1, b.height)}
                    className={b.breached ? "bar breached" : "bar met"}
                    data-testid={b.breached ? "bar-breached" : "bar-met"}
                    data-start={new Date(b.startMs).toISOString()}
                  >
                    <title>
                      {clockTime(b.startMs, timeZone, lang).slice(0, 5)} · {percent(b.achievedPercent)} ({b.judged})
                    </title>
                  </rect>
                ))}
              {chart.targetY !== undefined && <line x1={0} x2={chart.width} y1={chart.targetY} y2={chart.targetY} className="target-line" data-testid="target-line" />}
            </svg>
          </section>
        );
      })}
    </main>
  );
}

const DEFAULT_STAFFING: StaffingInput = {
  arrivalsPerHour: "360",
  ahtSeconds: "240",
  thresholdSeconds: "20",
  targetPercent: "80",
  maxOccupancyPercent: String(BURNOUT_OCCUPANCY_PERCENT),
};

/** Erlang C: agents needed for a service-level target (reporting's StaffingService). */
function Staffing({ api, t }: Props) {
  const [input, setInput] = useState<StaffingInput>(DEFAULT_STAFFING);
  const [result, setResult] = useState<ComputeStaffingResponse>();
  const [error, setError] = useState<string>();
  const [invalid, setInvalid] = useState<keyof StaffingInput>();

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(undefined);
    const c = checkStaffing(input);
    if (!c.ok) {
      setInvalid(c.field);
      setResult(undefined);
      return;
    }
    setInvalid(undefined);
    try {
      setResult(
        await api.staffing.computeStaffing({
          arrivalsPerSecond: c.arrivalsPerSecond,
          averageHandleTime: durationFromMs(c.ahtSeconds * 1000),
          serviceLevelThreshold: durationFromMs(c.thresholdSeconds * 1000),
          targetServiceLevelPercent: c.targetPercent,
          maxOccupancyPercent: c.maxOccupancyPercent,
        }),
      );
    } catch (err) {
      setResult(undefined);
      setError(message(err));
    }
  };
  const field = (k: keyof StaffingInput, label: Key) => (
    <label className={invalid === k ? "invalid" : ""}>
      {t(label)}
      <input data-testid={`st-${k}`} inputMode="decimal" value={input[k]} onChange={(e) => setInput({ ...input, [k]: e.target.value })} />
    </label>
  );
  const r = result?.required;
  return (
    <main className="card staffing">
      <h2>{t("staffing")}</h2>
      <form onSubmit={submit} className="staffing-form">
        {field("arrivalsPerHour", "arrivalsPerHour")}
        {field("ahtSeconds", "ahtSecondsLabel")}
        {field("thresholdSeconds", "thresholdSecondsLabel")}
        {field("targetPercent", "targetPercentLabel")}
        {field("maxOccupancyPercent", "maxOccupancyLabel")}
        <button type="submit" className="primary" data-testid="compute-staffing">
          {t("compute")}
        </button>
      </form>
      {invalid && (
        <p className="error" data-testid="staffing-invalid">
          {t("invalidValue")}: {t(({ arrivalsPerHour: "arrivalsPerHour", ahtSeconds: "ahtSecondsLabel", thresholdSeconds: "thresholdSecondsLabel", targetPercent: "targetPercentLabel", maxOccupancyPercent: "maxOccupancyLabel" } as const)[invalid])}
        </p>
      )}
      {error && <p className="error">{error}</p>}
      {r && result && (
        <dl data-testid="staffing-result">
          <dt>{t("agentsRequired")}</dt>
          <dd data-testid="st-agents">{r.agents}</dd>
          <dt>{t("loadErlangs")}</dt>
          <dd data-testid="st-load">{r.loadErlangs.toFixed(2)}</dd>
          <dt>{t("serviceLevel")}</dt>
          <dd data-testid="st-sl">{percent(r.serviceLevelPercent)}</dd>
          <dt>{t("asa")}</dt>
          <dd data-testid="st-asa">{optionalSeconds(r.asaSeconds)}</dd>
          <dt>{t("occupancy")}</dt>
          <dd data-testid="st-occupancy" className={r.occupancyPercent > BURNOUT_OCCUPANCY_PERCENT ? "hot" : ""}>
            {percent(r.occupancyPercent)}
          </dd>
          <dt>{t("probabilityOfWaiting")}</dt>
          <dd data-testid="st-pw">{percent(r.probabilityOfWaiting * 100)}</dd>
          {result.occupancyCapped && (
            <>
              <dt>{t("occupancyCapped")}</dt>
              <dd data-testid="st-capped">
                {result.agentsForServiceLevel} → {r.agents}
              </dd>
            </>
          )}
        </dl>
      )}
    </main>
  );
}
