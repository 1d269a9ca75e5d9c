// Reading something from the platform now and again every few seconds while a view is shown
// (the agent list, the BPO admin's pool, a call's monitor controls), and the one paginated
// read they share.

import { useEffect, useState } from "react";
import { ConnectError } from "@connectrpc/connect";
import type { Clients } from "./api";
import { ContactState, type Agent, type Contact } from "./gen/centralita/sessions/v1/sessions_pb";

const errorMessage = (e: unknown) => (e instanceof ConnectError ? e.rawMessage : String(e));

/**
 * `load()` now and every `everyMs` until the view goes or `deps` change: the latest value,
 * and the latest error (cleared by the next success). `setValue` puts in a fresher value
 * (an RPC's answer) until the next load.
 */
export function usePolled<T>(load: () => Promise<T>, everyMs: number, deps: readonly unknown[]) {
  const [value, setValue] = useState<T>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    let stop = false;
    const run = async () => {
      try {
        const v = await load();
        if (!stop) {
          setValue(v);
          setError(undefined);
        }
      } catch (e) {
        if (!stop) setError(errorMessage(e));
      }
    };
    run();
    const timer = setInterval(run, everyMs);
    return () => {
      stop = true;
      clearInterval(timer);
    };
    // The caller names what `load` depends on.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return { value, error, setValue, setError };
}

/** Every agent sessions lets the caller see (its own tenant's, or all for a BPO admin), page by page. */
export async function listAllAgents(api: Clients, pageSize: number): Promise<Agent[]> {
  const all: Agent[] = [];
  let pageToken = "";
  do {
    const page = await api.agents.listAgents({ pageSize, pageToken });
    all.push(...page.agents);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return all;
}

/** The caller's tenant's connected contacts by name, page by page. */
export async function listConnected(api: Clients, pageSize: number): Promise<Map<string, Contact>> {
  const all = new Map<string, Contact>();
  let pageToken = "";
  do {
    const page = await api.contacts.listContacts({ state: ContactState.CONNECTED, pageSize, pageToken });
    for (const c of page.contacts) all.set(c.name, c);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return all;
}
