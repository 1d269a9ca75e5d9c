// The console: sign-in (the BPO's identity provider, oidc.ts, or the development sign-in),
// then the agent desktop or the supervisor's views,
// depending on the role in the token. The tenant's configuration (time zone, away reasons,
// disposition codes, queues and their targets) comes from the tenant API.

import { useEffect, useMemo, useState, type FormEvent, type ReactNode } from "react";
import { clients, devSignIn, loadConfig, type ServerConfig, type Session } from "./api";
import { beginSignIn, completeSignIn } from "./oidc";
import { initialLang, langStorageKey, LANGS, translator, type Lang } from "./i18n";
import type { Tenant } from "./gen/centralita/tenancy/v1/tenancy_pb";
import { AgentDesktop } from "./AgentDesktop";
import { Supervisor } from "./Supervisor";
import { BpoAdmin } from "./BpoAdmin";

const SESSION_KEY = "centralita.session";

function storedSession(): Session | null {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null") as Session | null;
    return s && s.expireTime * 1000 > Date.now() ? s : null;
  } catch {
    return null;
  }
}

export function App() {
  const [config, setConfig] = useState<ServerConfig>();
  const [error, setError] = useState<string>();
  const [session, setSession] = useState<Session | null>(storedSession);
  const [signInError, setSignInError] = useState<string>();
  const [lang, setLang] = useState<Lang>(() =>
    initialLang(localStorage.getItem(langStorageKey(session?.subject ?? "")), navigator.language),
  );
  const t = translator(lang);

  useEffect(() => {
    loadConfig().then(setConfig, (e) => setError(String(e)));
  }, []);

  // Coming back from the identity provider: the code is redeemed once the config is known.
  useEffect(() => {
    if (!config?.oidc) return;
    completeSignIn(config.oidc).then(
      (s) => {
        if (s) signedIn(s);
      },
      (e) => setSignInError(String(e instanceof Error ? e.message : e)),
    );
  }, [config]);

  const chooseLang = (l: Lang) => {
    setLang(l);
    if (session) localStorage.setItem(langStorageKey(session.subject), l);
  };

  // A user who chose a language before gets it back; otherwise the page's becomes theirs.
  const signedIn = (s: Session) => {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
    setSession(s);
    const stored = localStorage.getItem(langStorageKey(s.subject));
    if (stored === "en" || stored === "es") setLang(stored);
    else localStorage.setItem(langStorageKey(s.subject), lang);
  };

  const leave = () => {
    sessionStorage.removeItem(SESSION_KEY);
    setSession(null);
  };

  const langPicker = (
    <label className="lang">
      {t("language")}{" "}
      <select data-testid="lang" value={lang} onChange={(e) => chooseLang(e.target.value as Lang)}>
        {LANGS.map((l) => (
          <option key={l} value={l}>
            {l === "en" ? "English" : "Español"}
          </option>
        ))}
      </select>
    </label>
  );

  if (error) return <div className="error">{t("error")}: {error}</div>;
  if (!config) return <div className="loading">…</div>;
  if (!session) {
    return (
      <div className="signin-page">
        <header className="top">
          <h1>{t("appTitle")}</h1>
          {langPicker}
        </header>
        {config.oidc && (
          <div className="card signin sso">
            <button
              data-testid="sso-sign-in"
              onClick={() => {
                setSignInError(undefined);
                beginSignIn(config.oidc!).catch((e) => setSignInError(String(e instanceof Error ? e.message : e)));
              }}
            >
              {t("ssoSignIn")}
            </button>
            {signInError && <p className="error" data-testid="sso-error">{signInError}</p>}
          </div>
        )}
        {(config.devSignIn || !config.oidc) && <SignIn config={config} t={t} onSignedIn={signedIn} />}
      </div>
    );
  }
  return <Console config={config} session={session} t={t} lang={lang} langPicker={langPicker} onLeave={leave} />;
}

function SignIn(props: { config: ServerConfig; t: ReturnType<typeof translator>; onSignedIn: (s: Session) => void }) {
  const { t } = props;
  const [tenant, setTenant] = useState("");
  const [role, setRole] = useState<Session["role"]>("agent");
  const [agentId, setAgentId] = useState("");
  const [error, setError] = useState<string>();
  if (!props.config.devSignIn) return <p className="notice">{t("devSignInOff")}</p>;
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(undefined);
    try {
      props.onSignedIn(await devSignIn(role === "bpo_admin" ? "" : tenant.trim(), role, role === "agent" ? agentId.trim() : undefined));
    } catch (err) {
      setError(String(err instanceof Error ? err.message : err));
    }
  };
  return (
    <form className="card signin" onSubmit={submit} data-testid="dev-sign-in">
      <h2>{t("devSignIn")}</h2>
      <p className="dev-note">{t("devSignInNote")}</p>
      <label>
        {t("tenant")}{" "}
        <input data-testid="tenant" value={tenant} onChange={(e) => setTenant(e.target.value)} required={role !== "bpo_admin"} disabled={role === "bpo_admin"} />
      </label>
      <label>
        {t("role")}{" "}
        <select data-testid="role" value={role} onChange={(e) => setRole(e.target.value as Session["role"])}>
          <option value="agent">{t("roleAgent")}</option>
          <option value="supervisor">{t("roleSupervisor")}</option>
          <option value="bpo_admin">{t("roleBpoAdmin")}</option>
        </select>
      </label>
      {role === "bpo_admin" && <p className="dev-note">{t("bpoNoTenant")}</p>}
      {role === "agent" && (
        <label>
          {t("agentId")} <input data-testid="agent-id" value={agentId} onChange={(e) => setAgentId(e.target.value)} required />
        </label>
      )}
      <button type="submit" data-testid="sign-in">{t("signIn")}</button>
      {error && <p className="error" data-testid="sign-in-error">{error}</p>}
    </form>
  );
}

function Console(props: {
  config: ServerConfig;
  session: Session;
  t: ReturnType<typeof translator>;
  lang: Lang;
  langPicker: ReactNode;
  onLeave: () => void;
}) {
  const { config, session, t } = props;
  const api = useMemo(() => clients(config, session.token), [config, session.token]);
  const [tenant, setTenant] = useState<Tenant>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    if (session.role === "bpo_admin") return;
    api.tenants.getTenant({ name: `tenants/${session.tenant}` }).then(setTenant, (e) => setError(String(e)));
  }, [api, session.tenant, session.role]);
  const timeZone = tenant?.businessHours?.timeZone || "UTC";
  return (
    <div className="console">
      <header className="top">
        <h1>{t("appTitle")}</h1>
        <span className="who" data-testid="who">
          {session.role === "bpo_admin"
            ? t("roleBpoAdmin")
            : `${tenant?.displayName || session.tenant} · ${session.role === "agent" ? session.agentId : t("roleSupervisor")} · ${timeZone}`}
        </span>
        {session.via !== "oidc" && (
          <span className="dev-badge" data-testid="dev-badge" title={t("devSignInNote")}>
            {t("devSignIn")}
          </span>
        )}
        {props.langPicker}
        <button onClick={props.onLeave}>{t("leave")}</button>
      </header>
      {error && <p className="error">{t("error")}: {error}</p>}
      {session.role === "bpo_admin" ? (
        <BpoAdmin api={api} t={t} />
      ) : session.role === "agent" && session.agentId ? (
        <AgentDesktop api={api} agentId={session.agentId} tenant={tenant} timeZone={timeZone} t={t} lang={props.lang} clockOffsetMs={config.clockOffsetMs} />
      ) : (
        <Supervisor api={api} tenant={tenant} timeZone={timeZone} t={t} lang={props.lang} />
      )}
    </div>
  );
}
