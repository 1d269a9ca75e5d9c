// The agent desktop: state, offers with their countdown, the contacts held with the CRM
// screen-pop, and wrap-up with the queue's (else the tenant's) disposition codes. Live from sessions' agent
// event stream, resumed after a drop (resume.ts) and resynced (desktop.ts).

import { useEffect, useReducer, useState } from "react";
import { ConnectError } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Clients } from "./api";
import { apply, emptyDesktop, offers, phoneStatus, reconnecting, working, type Desktop, type PhoneStatus } from "./desktop";
import { keepStreaming } from "./resume";
import { clockOffset, secondsLeft } from "./clock";
import { dateTime } from "./format";
import type { Key, Lang } from "./i18n";
import {
  AgentState,
  CompleteConsultRequest_Outcome as Outcome,
  ContactState,
  type AgentStreamEvent,
  type Contact,
} from "./gen/centralita/sessions/v1/sessions_pb";
import { Channel, RecordingMode, type Tenant } from "./gen/centralita/tenancy/v1/tenancy_pb";
import { ValueTier, type ScreenPop } from "./gen/centralita/crm/v1/crm_pb";
import { ChatPane } from "./ChatPane";
import { isConversation, takesFiles } from "./chat";
import { answerProblem, cannedReplies, queueScript, resolutionQuestion, scriptLines } from "./script";
import { agentId, agentLabel, queueLoad } from "./directory";
import { usePolled } from "./polling";

type T = (k: Key) => string;

type Action = { kind: "event"; ev: AgentStreamEvent } | { kind: "dropped" };

interface Props {
  api: Clients;
  agentId: string;
  tenant?: Tenant;
  timeZone: string;
  t: T;
  lang: Lang;
  clockOffsetMs: number;
}

const message = (e: unknown) => (e instanceof ConnectError ? e.rawMessage : String(e));

export function AgentDesktop({ api, agentId, tenant, timeZone, t, lang, clockOffsetMs }: Props) {
  const name = `agents/${agentId}`;
  const [desktop, dispatch] = useReducer(
    (d: Desktop, a: Action) => (a.kind === "event" ? apply(d, a.ev, agentId) : reconnecting(d)),
    emptyDesktop,
  );
  const [online, setOnline] = useState(false);
  const [error, setError] = useState<string>();
  // Why the stream last dropped; cleared once events flow again.
  const [streamError, setStreamError] = useState<string>();
  const [reason, setReason] = useState("");
  const [now, setNow] = useState(Date.now());
  // The server's clock: from /api/config at first, then from each stream event's send time.
  const [offsetMs, setOffsetMs] = useState(clockOffsetMs);

  useEffect(() => {
    const ctl = new AbortController();
    keepStreaming(
      (signal) => api.agents.streamAgentEvents({ name }, { signal }),
      {
        event: (ev) => {
          setOnline(true);
          setStreamError(undefined);
          if (ev.sendTime) {
            const received = Date.now();
            setOffsetMs(clockOffset(received, timestampMs(ev.sendTime), received));
          }
          dispatch({ kind: "event", ev });
        },
        dropped: (e) => {
          setOnline(false);
          setStreamError(e ? message(e) : undefined);
          dispatch({ kind: "dropped" });
        },
      },
      ctl.signal,
    );
    return () => ctl.abort();
  }, [api, name]);

  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 250);
    return () => clearInterval(timer);
  }, []);

  const act = async (f: () => Promise<unknown>) => {
    setError(undefined);
    try {
      await f();
    } catch (e) {
      setError(message(e));
    }
  };

  const agent = desktop.agent;
  const state = agent?.state ?? AgentState.OFFLINE;
  const reasons = tenant?.routing?.awayReasons ?? [];
  const goAvailable = () =>
    act(() =>
      state === AgentState.OFFLINE
        ? api.agents.signIn({ name, available: true })
        : api.agents.setAgentState({ name, state: AgentState.AVAILABLE }),
    );
  const goAway = () =>
    act(async () => {
      if (state === AgentState.OFFLINE) await api.agents.signIn({ name, available: false });
      await api.agents.setAgentState({ name, state: AgentState.AWAY, awayReason: reason || reasons[0] || "" });
    });
  const stateLabel =
    state === AgentState.AVAILABLE ? t("stateAvailable") : state === AgentState.AWAY ? t("stateAway") : t("stateOffline");

  return (
    <main className="desktop">
      <section className="card state" data-testid="agent-state-card">
        <h2>{t("state")}</h2>
        <p>
          <span className={`state-pill s${state}`} data-testid="agent-state">{stateLabel}</span>
          {state === AgentState.AWAY && agent?.awayReason && <span className="reason"> · {agent.awayReason}</span>}
          {agent?.stateTime && (
            <span className="since"> · {t("since")} {dateTime(timestampMs(agent.stateTime), timeZone, lang)}</span>
          )}
        </p>
        <div className="row">
          <button data-testid="go-available" disabled={state === AgentState.AVAILABLE} onClick={goAvailable}>
            {t("goAvailable")}
          </button>
          <select data-testid="away-reason" value={reason} onChange={(e) => setReason(e.target.value)} aria-label={t("awayReason")}>
            {reasons.map((r) => (
              <option key={r} value={r}>{r}</option>
            ))}
          </select>
          <button data-testid="go-away" disabled={reasons.length === 0} onClick={goAway}>{t("goAway")}</button>
          <button data-testid="sign-out" disabled={state === AgentState.OFFLINE} onClick={() => act(() => api.agents.signOut({ name }))}>
            {t("signOut")}
          </button>
        </div>
        <Phone status={phoneStatus(agent, tenant, agentId, now + offsetMs)} t={t} timeZone={timeZone} lang={lang} />
        <p className="conn">
          {t("connection")}: <span data-testid="stream-status" className={online ? "ok" : "warn"}>{online ? t("connected") : t("reconnecting")}</span>
        </p>
        {streamError && <p className="warn" data-testid="stream-error">{streamError}</p>}
        {error && <p className="error" data-testid="desktop-error">{error}</p>}
      </section>

      {offers(desktop).map((c) => (
        <Offer key={c.name} c={c} t={t} now={now} clockOffsetMs={offsetMs} act={act} api={api} />
      ))}

      {working(desktop).map((c) => (
        <Working key={c.name} c={c} api={api} me={agentId} tenant={tenant} timeZone={timeZone} t={t} lang={lang} act={act} />
      ))}

      {offers(desktop).length + working(desktop).length === 0 && <p className="empty" data-testid="no-contacts">{t("noContacts")}</p>}
    </main>
  );
}

/** The agent's phone for the tenant's calls; nothing when the tenant rings no phones. */
function Phone(props: { status: PhoneStatus; t: T; timeZone: string; lang: Lang }) {
  const { status, t } = props;
  if (status.kind === "none") return null;
  const text =
    status.kind === "fixed"
      ? t("phoneFixed")
      : status.kind === "registered"
        ? `${t("phoneRegisteredUntil")} ${dateTime(status.untilMs, props.timeZone, props.lang)}`
        : t("phoneUnregistered");
  return (
    <p className="conn">
      {t("phone")}:{" "}
      <span data-testid="phone-status" className={status.kind === "unregistered" ? "warn" : "ok"}>
        {text}
      </span>
    </p>
  );
}

function identities(c: Contact): string {
  return c.customerIdentities.map((i) => i.value).join(", ");
}

function Offer(props: {
  c: Contact;
  t: T;
  now: number;
  clockOffsetMs: number;
  act: (f: () => Promise<unknown>) => Promise<void>;
  api: Clients;
}) {
  const { c, t, api } = props;
  const left = c.offerExpireTime ? secondsLeft(timestampMs(c.offerExpireTime), props.now, props.clockOffsetMs) : undefined;
  return (
    <section className="card offer" data-testid="offer">
      <h2>{t("incomingOffer")}</h2>
      <dl>
        <dt>{t("queue")}</dt>
        <dd data-testid="offer-queue">{c.queue}</dd>
        <dt>{t("channel")}</dt>
        <dd>{Channel[c.channel]?.toLowerCase()}</dd>
        <dt>{t("customer")}</dt>
        <dd>{identities(c) || "—"}</dd>
        <dt>{t("expiresIn")}</dt>
        <dd className="countdown" data-testid="offer-countdown">{left === undefined ? "—" : `${left} ${t("seconds")}`}</dd>
      </dl>
      <div className="row">
        <button className="primary" data-testid="accept" onClick={() => props.act(() => api.contacts.acceptContact({ name: c.name, offerId: c.offerId }))}>
          {t("accept")}
        </button>
        <button data-testid="reject" onClick={() => props.act(() => api.contacts.rejectContact({ name: c.name, offerId: c.offerId }))}>
          {t("reject")}
        </button>
      </div>
    </section>
  );
}

/**
 * Transfer and consult: to a queue of the contact's tenant or to one of its signed-in agents,
 * from the contact's transfer directory (sessions' ListTransferTargets, read again every 3 s
 * while the controls show): how many wait in the queue chosen and who is available.
 */
function TransferForm(props: {
  c: Contact;
  api: Clients;
  t: T;
  act: (f: () => Promise<unknown>) => Promise<void>;
  queues: { id: string; displayName: string }[];
}) {
  const { c, api, t } = props;
  const [toQueue, setToQueue] = useState("");
  const [toAgent, setToAgent] = useState("");
  const directory = usePolled(() => api.contacts.listTransferTargets({ name: c.name }), 3000, [c.name]);
  const queue = toQueue || c.queue;
  const load = directory.value?.queues.find((q) => q.queue === queue);
  const agents = directory.value?.agents ?? [];
  const target = () =>
    toAgent ? { case: "agentId" as const, value: toAgent } : { case: "queue" as const, value: queue };
  return (
    <form
      className="transfer row"
      data-testid="transfer"
      onSubmit={(e) => {
        e.preventDefault();
        props.act(() => api.contacts.transferContact({ name: c.name, target: target() }));
      }}
    >
      <label>
        {t("transferQueue")}{" "}
        <select data-testid="transfer-queue" value={queue} onChange={(e) => setToQueue(e.target.value)}>
          {props.queues.map((q) => (
            <option key={q.id} value={q.id}>{q.displayName || q.id}</option>
          ))}
        </select>
      </label>
      {load && !toAgent && <span className="muted" data-testid="transfer-queue-load">{queueLoad(load, t)}</span>}
      <label>
        {t("transferAgent")}{" "}
        <select data-testid="transfer-agent" value={toAgent} onChange={(e) => setToAgent(e.target.value)}>
          <option value="">{t("transferNoAgent")}</option>
          {agents.map((a) => (
            <option key={a.name} value={agentId(a)}>{agentLabel(a, t)}</option>
          ))}
          {/* One chosen who has since signed out stays chosen (sessions says if it cannot be reached). */}
          {toAgent && !agents.some((a) => agentId(a) === toAgent) && <option value={toAgent}>{toAgent}</option>}
        </select>
      </label>
      {directory.error && <span className="error" data-testid="directory-error">{directory.error}</span>}
      <button type="submit" data-testid="transfer-submit" disabled={!!c.consultLeg}>{t("transfer")}</button>
      {c.channel === Channel.VOICE && (
        <button
          type="button"
          data-testid="consult"
          disabled={!!c.consultLeg}
          onClick={() => props.act(() => api.contacts.consultContact({ name: c.name, target: target() }))}
        >
          {t("consult")}
        </button>
      )}
    </form>
  );
}

function Working(props: {
  c: Contact;
  api: Clients;
  me: string;
  tenant?: Tenant;
  timeZone: string;
  t: T;
  lang: Lang;
  act: (f: () => Promise<unknown>) => Promise<void>;
}) {
  const { c, api, t } = props;
  const [pop, setPop] = useState<ScreenPop>();
  const [popError, setPopError] = useState<string>();
  const [disposition, setDisposition] = useState("");
  const [notes, setNotes] = useState("");
  const queues = props.tenant?.routing?.queues ?? [];
  // Calls recorded on demand start with the recording off: the agent starts it.
  const onDemand = c.channel === Channel.VOICE && props.tenant?.recording?.voice === RecordingMode.ON_DEMAND;
  const allowPause = props.tenant?.recording?.allowPause ?? false;
  // A call's recording, or a conversation's transcript when the tenant keeps them.
  const recorded =
    c.channel === Channel.VOICE || (c.channel !== Channel.TASK && (props.tenant?.recording?.chatTranscripts ?? false));
  const queueOf = queues.find((q) => q.id === c.queue);
  const [answer, setAnswer] = useState("");
  const [answered, setAnswered] = useState(false);
  const [answerError, setAnswerError] = useState<string>();
  const recordAnswer = async () => {
    const problem = answerProblem(answer);
    if (problem) {
      setAnswerError(t(problem === "empty" ? "answerEmpty" : "answerLong"));
      return;
    }
    if (!pop?.customer?.name) return;
    try {
      await api.customers.recordAnswer({ customer: pop.customer.name, contact: c.name, question: resolutionQuestion(queueOf, props.lang), answer: answer.trim() });
      setAnswered(true);
      setAnswerError(undefined);
    } catch (e) {
      setAnswerError(message(e));
    }
  };
  // Agents conferenced in beside this one (from a consult).
  const others = c.participants.filter((p) => !p.leaveTime && p.agentId !== props.me).map((p) => p.agentId);
  const complete = (outcome: Outcome) => props.act(() => api.contacts.completeConsult({ name: c.name, outcome }));
  // CRM links the contact to its customer when it reads the contact's QUEUED event, which can
  // come after the offer on a busy floor: until a customer shows, ask again every second for
  // up to 15 s (then "no customer profile" stands).
  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ask = (left: number) =>
      api.customers.getScreenPop({ contact: c.name, interactionCount: 5 }).then(
        (p) => {
          if (stop) return;
          setPop(p);
          setPopError(undefined);
          if (!p.customer?.name && left > 0) timer = setTimeout(() => ask(left - 1), 1000);
        },
        (e) => {
          if (stop) return;
          setPopError(message(e));
          if (left > 0) timer = setTimeout(() => ask(left - 1), 1000);
        },
      );
    ask(15);
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [api, c.name]);
  // The queue's own disposition codes, else the tenant's.
  const codes = queueOf?.dispositionCodes.length ? queueOf.dispositionCodes : (props.tenant?.routing?.dispositionCodes ?? []);
  const customer = pop?.customer;
  return (
    <section className="card contact" data-testid="contact">
      <h2>
        {t("contact")} · {c.queue} · {Channel[c.channel]?.toLowerCase()}
      </h2>
      <div className={isConversation(c.channel) ? "columns with-chat" : "columns"}>
        <div className="pop" data-testid="screen-pop">
          <h3>{t("customer")}</h3>
          {popError && <p className="error">{popError}</p>}
          {pop && !customer?.name && <p>{t("unknownCustomer")}</p>}
          {customer?.name && (
            <>
              <p className="customer-name" data-testid="customer-name">{customer.displayName}</p>
              <p>
                {t("tier")}:{" "}
                <span data-testid="customer-tier" className={customer.valueTier === ValueTier.VIP ? "vip" : ""}>
                  {customer.valueTier === ValueTier.VIP ? t("tierVip") : t("tierStandard")}
                </span>
              </p>
              <p className="identities">{customer.identities.map((i) => i.value).join(" · ")}</p>
            </>
          )}
          {pop && (
            <>
              <h3>{t("script")}</h3>
              <ol className="script" data-testid="script">
                {scriptLines({
                  lang: props.lang,
                  customerName: customer?.name ? customer.displayName : undefined,
                  vip: customer?.valueTier === ValueTier.VIP,
                  tenantName: props.tenant?.displayName || c.tenant,
                  queueName: queueOf?.displayName || c.queue,
                  queueScript: queueScript(queueOf, props.lang),
                  channel: (["voice", "chat", "sms", "email"] as const).find((x) => Channel[c.channel]?.toLowerCase() === x) ?? "other",
                }).map((line) => (
                  <li key={line}>{line}</li>
                ))}
              </ol>
            </>
          )}
          <h3>{t("recentInteractions")}</h3>
          {pop && pop.interactions.length === 0 && <p>{t("noInteractions")}</p>}
          <ul data-testid="interactions">
            {pop?.interactions.map((i) => (
              <li key={i.contact}>
                {i.createTime ? dateTime(timestampMs(i.createTime), props.timeZone, props.lang) : ""} · {Channel[i.channel]?.toLowerCase()} ·{" "}
                {i.queue} · {i.state}
                {i.disposition && ` · ${i.disposition}`}
              </li>
            ))}
          </ul>
          {pop && pop.notes.length > 0 && (
            <>
              <h3>{t("notes")}</h3>
              <ul data-testid="customer-notes">
                {pop.notes.map((n) => (
                  <li key={n.name}>{n.text}</li>
                ))}
              </ul>
            </>
          )}
        </div>
        <div className="work">
          {isConversation(c.channel) && (
            <ChatPane
              conversations={api.conversations}
              contact={c.name}
              me={props.me}
              canSend={c.state === ContactState.CONNECTED}
              canAttach={takesFiles(c.channel)}
              timeZone={props.timeZone}
              lang={props.lang}
              t={t}
              cannedReplies={cannedReplies(queueOf, {
                lang: props.lang,
                customerName: customer?.name ? customer.displayName : undefined,
                vip: customer?.valueTier === ValueTier.VIP,
                tenantName: props.tenant?.displayName || c.tenant,
                queueName: queueOf?.displayName || c.queue,
                channel: "chat",
              })}
            />
          )}
          {c.state === ContactState.CONNECTED && (
            <div className="controls" data-testid="call-controls">
              {c.onHold && <span className="state-pill held" data-testid="on-hold">{t("onHold")}</span>}
              {c.channel === Channel.VOICE &&
                (c.onHold ? (
                  <button data-testid="resume" onClick={() => props.act(() => api.contacts.resumeContact({ name: c.name }))}>
                    {t("resume")}
                  </button>
                ) : (
                  <button data-testid="hold" onClick={() => props.act(() => api.contacts.holdContact({ name: c.name }))}>
                    {t("hold")}
                  </button>
                ))}
              {c.recordingPaused && (
                <span className="state-pill held" data-testid="recording-paused">
                  {t(onDemand ? "notRecording" : "recordingPaused")}
                </span>
              )}
              {recorded && c.recordingPaused && (onDemand || allowPause) && (
                <button data-testid="resume-recording" onClick={() => props.act(() => api.contacts.resumeRecording({ name: c.name }))}>
                  {t(onDemand ? "startRecording" : "resumeRecording")}
                </button>
              )}
              {recorded && !c.recordingPaused && allowPause && (
                <button data-testid="pause-recording" onClick={() => props.act(() => api.contacts.pauseRecording({ name: c.name }))}>
                  {t("pauseRecording")}
                </button>
              )}
              <button data-testid="end-contact" onClick={() => props.act(() => api.contacts.endContact({ name: c.name }))}>
                {t("endContact")}
              </button>
              <TransferForm c={c} api={api} t={t} act={props.act} queues={queues} />
              {c.consultLeg && c.agentId === props.me && (
                <div className="consult row" data-testid="consulting">
                  {/* The consulting agent talks to the consulted one on the phone; sessions refuses
                      a transfer or conference until the leg is answered, and the error shows. */}
                  {others.length > 0 ? (
                    <span className="state-pill" data-testid="conference-with">
                      {t("inConferenceWith")} {others.join(", ")}
                    </span>
                  ) : (
                    <span className="state-pill held" title={t("consultHint")}>{t("consulting")}</span>
                  )}
                  <button data-testid="consult-transfer" onClick={() => complete(Outcome.TRANSFER)}>
                    {t("completeTransfer")}
                  </button>
                  {others.length === 0 && (
                    <button data-testid="consult-conference" onClick={() => complete(Outcome.CONFERENCE)}>
                      {t("conference")}
                    </button>
                  )}
                  <button data-testid="consult-cancel" onClick={() => complete(Outcome.CANCEL)}>
                    {others.length > 0 ? t("dropConsulted") : t("cancelConsult")}
                  </button>
                </div>
              )}
            </div>
          )}
          {c.state === ContactState.AFTER_CONTACT_WORK && (
            <form
              className="wrapup"
              data-testid="wrap-up"
              onSubmit={(e) => {
                e.preventDefault();
                props.act(() => api.contacts.wrapUpContact({ name: c.name, disposition, notes }));
              }}
            >
              <h3>{t("wrapUp")}</h3>
              {pop?.customer?.name && (
                <div className="resolution" data-testid="resolution">
                  <label>
                    {resolutionQuestion(queueOf, props.lang)}{" "}
                    <input data-testid="resolution-answer" value={answer} maxLength={2000} disabled={answered} onChange={(e) => setAnswer(e.target.value)} />
                  </label>
                  <button type="button" data-testid="record-answer" disabled={answered} onClick={recordAnswer}>
                    {answered ? t("answerRecorded") : t("recordAnswer")}
                  </button>
                  {answerError && <span className="error" data-testid="answer-error">{answerError}</span>}
                </div>
              )}
              <label>
                {t("disposition")}{" "}
                <select data-testid="disposition" value={disposition} onChange={(e) => setDisposition(e.target.value)} required>
                  <option value="">{t("chooseDisposition")}</option>
                  {codes.map((d) => (
                    <option key={d} value={d}>{d}</option>
                  ))}
                </select>
              </label>
              <label>
                {t("wrapUpNotes")} <textarea data-testid="wrap-up-notes" maxLength={4000} value={notes} onChange={(e) => setNotes(e.target.value)} />
              </label>
              <button type="submit" className="primary" data-testid="submit-wrap-up">{t("submitWrapUp")}</button>
            </form>
          )}
        </div>
      </div>
    </section>
  );
}
