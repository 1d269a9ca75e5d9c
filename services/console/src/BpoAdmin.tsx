// The BPO admin's console: every tenant with its status, quota and a month's usage
// (reporting's GetUsage, per tenant: what the BPO bills), and the shared agent pool with each
// agent's assignments across tenants (sessions' ListAgents, which a BPO admin sees whole).

import { useEffect, useState } from "react";
import { ConnectError } from "@connectrpc/connect";
import type { Clients } from "./api";
import type { Key } from "./i18n";
import { monthOf, poolRows, sharedAgents, tenantRows } from "./bpo";
import { listAllAgents, usePolled } from "./polling";
import type { Usage } from "./gen/centralita/reporting/v1/reporting_pb";
import type { Tenant } from "./gen/centralita/tenancy/v1/tenancy_pb";

const message = (e: unknown) => (e instanceof ConnectError ? e.rawMessage : String(e));

export function BpoAdmin({ api, t }: { api: Clients; t: (k: Key) => string }) {
  const [tab, setTab] = useState<"tenants" | "pool">("tenants");
  return (
    <>
      <nav className="tabs" role="tablist">
        <button role="tab" aria-selected={tab === "tenants"} className={tab === "tenants" ? "active" : ""} data-testid="tab-tenants" onClick={() => setTab("tenants")}>
          {t("tenants")}
        </button>
        <button role="tab" aria-selected={tab === "pool"} className={tab === "pool" ? "active" : ""} data-testid="tab-pool" onClick={() => setTab("pool")}>
          {t("agentPool")}
        </button>
      </nav>
      {tab === "tenants" ? <Tenants api={api} t={t} /> : <Pool api={api} t={t} />}
    </>
  );
}

function Tenants({ api, t }: { api: Clients; t: (k: Key) => string }) {
  const [tenants, setTenants] = useState<Tenant[]>([]);
  const [usage, setUsage] = useState<Record<string, Usage | undefined>>({});
  const [back, setBack] = useState(0);
  const [error, setError] = useState<string>();
  const month = monthOf(Date.now(), back);

  useEffect(() => {
    let stop = false;
    (async () => {
      try {
        const all: Tenant[] = [];
        let pageToken = "";
        do {
          const page = await api.tenants.listTenants({ pageSize: 1000, pageToken });
          all.push(...page.tenants);
          pageToken = page.nextPageToken;
        } while (pageToken && !stop);
        if (stop) return;
        setTenants(all);
        setUsage({});
        // One GetUsage per tenant, a few at a time.
        const ids = all.map((x) => x.name.replace(/^tenants\//, ""));
        for (let i = 0; i < ids.length && !stop; i += 8) {
          const got = await Promise.all(
            ids.slice(i, i + 8).map((id) => api.reporting.getUsage({ tenant: id, month }).then((u) => [id, u] as const, () => [id, undefined] as const)),
          );
          if (!stop) setUsage((prev) => ({ ...prev, ...Object.fromEntries(got) }));
        }
      } catch (e) {
        if (!stop) setError(message(e));
      }
    })();
    return () => {
      stop = true;
    };
  }, [api, month]);

  const rows = tenantRows(tenants, usage);
  return (
    <main className="card">
      <header className="wb-head">
        <h2>{t("tenants")}</h2>
        <label>
          {t("month")}{" "}
          <select data-testid="usage-month" value={back} onChange={(e) => setBack(Number(e.target.value))}>
            {[0, 1, 2, 3, 4, 5].map((b) => (
              <option key={b} value={b}>{monthOf(Date.now(), b)}</option>
            ))}
          </select>
        </label>
      </header>
      {error && <p className="error">{error}</p>}
      <table data-testid="tenant-list">
        <thead>
          <tr>
            <th>{t("tenant")}</th>
            <th>{t("status")}</th>
            <th>{t("channels")}</th>
            <th>{t("quota")}</th>
            <th>{t("handled")}</th>
            <th>{t("handleMinutes")}</th>
            <th>{t("agentHours")}</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.id} data-testid={`tenant-${r.id}`}>
              <td title={r.id}>{r.displayName}</td>
              <td data-testid="status" className={r.status === "suspended" ? "hot" : ""}>{t(r.status === "active" ? "statusActive" : r.status === "suspended" ? "statusSuspended" : "statusUnknown")}</td>
              <td>{r.channels.join(", ")}</td>
              <td>{r.maxConcurrentContacts}</td>
              <td data-testid="handled" title={r.usage ? Object.entries(r.usage.byChannel).map(([c, n]) => `${c}: ${n}`).join(", ") : undefined}>
                {r.usage ? r.usage.handled : "…"}
              </td>
              <td data-testid="handle-minutes">{r.usage ? r.usage.handleMinutes.toFixed(1) : "…"}</td>
              <td data-testid="agent-hours">
                {r.usage ? r.usage.agentHours.toFixed(2) : "…"}
                {r.usage && !r.usage.complete && <span className="target"> ({t("monthOpen")})</span>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </main>
  );
}

function Pool({ api, t }: { api: Clients; t: (k: Key) => string }) {
  const [filter, setFilter] = useState("");
  const { value: agents = [], error } = usePolled(() => listAllAgents(api, 500), 5000, [api]);
  const all = poolRows(agents);
  const f = filter.trim().toLowerCase();
  const rows = f ? all.filter((r) => r.id.includes(f) || r.displayName.toLowerCase().includes(f) || r.assignments.some((a) => a.includes(f))) : all;
  const state: Record<string, Key> = { available: "stateAvailable", away: "stateAway", offline: "stateOffline" };
  return (
    <main className="card">
      <h2>{t("agentPool")}</h2>
      <p className="hint" data-testid="pool-summary">
        {all.length} {t("agentsWord")} · {sharedAgents(all)} {t("sharedAcrossTenants")}
      </p>
      <label>
        {t("filter")} <input data-testid="pool-filter" value={filter} onChange={(e) => setFilter(e.target.value)} placeholder={t("filterHint")} />
      </label>
      {error && <p className="error">{error}</p>}
      <table data-testid="pool">
        <thead>
          <tr>
            <th>{t("agentName")}</th>
            <th>{t("pool")}</th>
            <th>{t("state")}</th>
            <th>{t("assignments")}</th>
            <th>{t("currentContacts")}</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.id} data-testid={`pool-${r.id}`}>
              <td title={r.id}>{r.displayName}</td>
              <td>{r.pool}</td>
              <td>{t(state[r.state])}</td>
              <td data-testid="assignments">{r.assignments.join(", ") || "—"}</td>
              <td data-testid="contacts">{r.contacts}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </main>
  );
}
