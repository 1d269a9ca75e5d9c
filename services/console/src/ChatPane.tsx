// The conversation pane of a chat contact the agent holds: the history (ListMessages), the
// live messages, the customer's typing and read markers (StreamMessages, reopened after a
// drop from the last sequence held, resume.ts), a composer (SendMessage with a request id
// kept until the send succeeds, so a retry is stored once), the agent's typing (SendTyping)
// and read markers (MarkRead). The folding is pure, in chat.ts.

import { useEffect, useReducer, useRef, useState } from "react";
import { ConnectError, type Client } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  applyEvent,
  customerTyping,
  emptyConversation,
  lastFromCustomer,
  merge,
  newRequestId,
  readByCustomer,
  typingDue,
  validText,
  type Conversation,
} from "./chat";
import { keepStreaming } from "./resume";
import { ACCEPT, checkFile, fileSize, type FileRefusal } from "./files";
import { clockTime } from "./format";
import type { Key, Lang } from "./i18n";
import {
  ConversationService,
  DeliveryStatus,
  MessageKind,
  SenderKind,
  type Message,
  type StreamMessagesResponse,
} from "./gen/centralita/media/v1/media_pb";

type Action = { kind: "messages"; messages: Message[] } | { kind: "event"; ev: StreamMessagesResponse; now: number };

const errorText = (e: unknown) => (e instanceof ConnectError ? e.rawMessage : String(e));

export function ChatPane(props: {
  conversations?: Client<typeof ConversationService>;
  contact: string;
  me: string;
  canSend: boolean;
  timeZone: string;
  lang: Lang;
  t: (k: Key) => string;
  /** The queue's canned replies, filled in for this contact (script.ts). */
  cannedReplies?: string[];
  /** Files can be sent on this conversation (web chat and email). */
  canAttach?: boolean;
}) {
  const { conversations: api, contact, t } = props;
  const [conv, dispatch] = useReducer(
    (c: Conversation, a: Action) => (a.kind === "messages" ? merge(c, a.messages) : applyEvent(c, a.ev, a.now)),
    emptyConversation,
  );
  const [live, setLive] = useState(false);
  const [error, setError] = useState<string>();
  // Why the stream last dropped; cleared once events flow again.
  const [streamError, setStreamError] = useState<string>();
  // Why the last read marker was not recorded; cleared by the next one that is.
  const [readError, setReadError] = useState<string>();
  const [draft, setDraft] = useState("");
  const [requestId, setRequestId] = useState(newRequestId);
  const [sending, setSending] = useState(false);
  const [now, setNow] = useState(Date.now());
  const typingSent = useRef<number | undefined>(undefined);
  const marked = useRef(0n);
  const list = useRef<HTMLOListElement>(null);

  // History first, then the stream from the last sequence held; after a drop it reopens from
  // the last sequence seen, so nothing is missed, and merge() drops any repeat.
  useEffect(() => {
    if (!api) return;
    const client = api;
    const ctl = new AbortController();
    let last = 0n;
    const seen = (ms: Message[]) => {
      for (const m of ms) if (m.sequence > last) last = m.sequence;
      dispatch({ kind: "messages", messages: ms });
    };
    // Each (re)opening catches up with ListMessages from the last sequence held (the whole
    // history the first time), which also shows media answers, then follows the stream.
    const catchUp = async (signal: AbortSignal) => {
      let pageToken = "";
      do {
        const page = await client.listMessages({ parent: contact, afterSequence: last, pageSize: 500, pageToken }, { signal });
        seen(page.messages);
        pageToken = page.nextPageToken;
      } while (pageToken);
    };
    async function* open(signal: AbortSignal): AsyncIterable<StreamMessagesResponse> {
      await catchUp(signal);
      setLive(true);
      setStreamError(undefined);
      yield* client.streamMessages({ parent: contact, afterSequence: last }, { signal });
    }
    if (props.canSend) {
      void keepStreaming(
        open,
        {
          event: (ev) => {
            if (ev.event.case === "message") seen([ev.event.value]);
            else dispatch({ kind: "event", ev, now: Date.now() });
          },
          dropped: (e) => {
            setLive(false);
            setStreamError(e ? errorText(e) : undefined);
          },
        },
        ctl.signal,
      );
    } else {
      // Ended (after-contact work): the conversation is closed, so no stream; the history
      // once, for the wrap-up.
      setLive(false);
      catchUp(ctl.signal).then(
        () => setStreamError(undefined),
        (e) => {
          if (!ctl.signal.aborted) setStreamError(errorText(e));
        },
      );
    }
    return () => ctl.abort();
  }, [api, contact, props.canSend]);

  // The customer's typing indicator expires by itself.
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);

  // The agent sees the pane: mark the customer's messages read up to the last one.
  const lastCustomer = lastFromCustomer(conv);
  useEffect(() => {
    if (!api || lastCustomer <= marked.current) return;
    const before = marked.current;
    marked.current = lastCustomer;
    api.markRead({ parent: contact, sequence: lastCustomer }).then(
      () => setReadError(undefined),
      (e) => {
        // Tried again with the next customer message (a read marker only moves forward).
        marked.current = before;
        setReadError(errorText(e));
      },
    );
  }, [api, contact, lastCustomer]);

  // Keep the newest message in view.
  useEffect(() => {
    if (list.current) list.current.scrollTop = list.current.scrollHeight;
  }, [conv.messages.length]);

  if (!api) return <p className="warn" data-testid="chat-unavailable">{t("chatUnavailable")}</p>;

  const typed = (text: string) => {
    setDraft(text);
    const at = Date.now();
    if (text.trim() && typingDue(typingSent.current, at)) {
      typingSent.current = at;
      // Best effort: a marker lost on the way (a dropped connection) expires at media by
      // itself, so it is no error to show the agent.
      api.sendTyping({ parent: contact, active: true }).catch(() => undefined);
    }
  };

  const send = async () => {
    const text = validText(draft);
    if (!text) {
      setError(t("chatTooLong"));
      return;
    }
    setSending(true);
    setError(undefined);
    try {
      // The same request id until it succeeds: a retry after an error is stored once.
      const stored = await api.sendMessage({ parent: contact, text, requestId });
      dispatch({ kind: "messages", messages: [stored] });
      setDraft("");
      setRequestId(newRequestId());
      // Done typing: the customer's indicator goes now rather than when it expires.
      if (typingSent.current !== undefined) {
        typingSent.current = undefined;
        api.sendTyping({ parent: contact, active: false }).catch(() => undefined);
      }
    } catch (e) {
      setError(errorText(e));
    } finally {
      setSending(false);
    }
  };

  const refusalKey: Record<FileRefusal, Key> = {
    type: "chatFileType",
    tooLarge: "chatFileTooLarge",
    empty: "chatFileEmpty",
    name: "chatFileName",
  };

  // The agent's file: checked here first (the same rule as media), then SendAttachment with
  // a request id of its own, so a retry is stored once.
  const attach = async (file: File) => {
    const refused = checkFile(file.name, file.type, file.size);
    if (refused) {
      setError(t(refusalKey[refused]));
      return;
    }
    setSending(true);
    setError(undefined);
    try {
      const data = new Uint8Array(await file.arrayBuffer());
      const stored = await api.sendAttachment({ parent: contact, fileName: file.name, contentType: file.type, data, requestId: newRequestId() });
      dispatch({ kind: "messages", messages: [stored] });
    } catch (e) {
      setError(errorText(e));
    } finally {
      setSending(false);
    }
  };

  // A file of the conversation, fetched with GetAttachment and saved under its name.
  const download = async (m: Message) => {
    if (!m.attachment) return;
    try {
      const got = await api.getAttachment({ name: m.attachment.name });
      const url = URL.createObjectURL(new Blob([got.data as BlobPart], { type: m.attachment.contentType }));
      const a = document.createElement("a");
      a.href = url;
      a.download = m.attachment.fileName;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      setError(errorText(e));
    }
  };

  const who = (m: Message) =>
    m.sender === SenderKind.CUSTOMER ? t("customer") : m.sender === SenderKind.AGENT ? (m.agentId === props.me ? t("chatYou") : `${t("chatAgent")} ${m.agentId}`) : "";

  return (
    <div className="chat" data-testid="chat">
      <h3>
        {t("chat")} <span className={`chat-live ${live || !props.canSend ? "ok" : "warn"}`} data-testid="chat-status">
          {!props.canSend ? t("chatEnded") : live ? t("connected") : t("reconnecting")}
        </span>
      </h3>
      <ol className="chat-messages" data-testid="chat-messages" ref={list}>
        {conv.messages.length === 0 && <li className="chat-empty">{t("chatNoMessages")}</li>}
        {conv.messages.map((m) => (
          <li
            key={String(m.sequence)}
            className={`chat-message ${m.kind === MessageKind.NOTICE ? "chat-notice" : m.sender === SenderKind.CUSTOMER ? "from-customer" : "from-agent"}`}
            data-testid="chat-message"
            data-sender={SenderKind[m.sender]?.toLowerCase()}
            data-sequence={String(m.sequence)}
          >
            {who(m) && <span className="chat-who">{who(m)}</span>}
            {m.kind === MessageKind.ATTACHMENT && m.attachment ? (
              <button type="button" className="link chat-file" data-testid="chat-file" onClick={() => void download(m)}>
                📎 {m.attachment.fileName} ({fileSize(Number(m.attachment.sizeBytes))})
              </button>
            ) : (
              <span className="chat-text">{m.text}</span>
            )}
            <span className="chat-meta">
              {m.createTime ? clockTime(timestampMs(m.createTime), props.timeZone, props.lang) : ""}
              {m.sender === SenderKind.AGENT && readByCustomer(conv, m) && <span data-testid="chat-read"> · {t("chatRead")}</span>}
              {m.status === DeliveryStatus.FAILED && (
                <span className="error" data-testid="chat-failed"> · {t("chatFailed")}{m.failureReason && `: ${m.failureReason}`}</span>
              )}
            </span>
          </li>
        ))}
      </ol>
      {props.canSend && customerTyping(conv, now) && <p className="chat-typing" data-testid="chat-typing">{t("chatTyping")}</p>}
      {props.canSend && (
        <form
          className="chat-composer"
          onSubmit={(e) => {
            e.preventDefault();
            void send();
          }}
        >
          {props.cannedReplies && props.cannedReplies.length > 0 && (
            <select
              data-testid="canned"
              aria-label={t("cannedReplies")}
              value=""
              onChange={(e) => {
                if (e.target.value) typed(e.target.value);
              }}
            >
              <option value="">{t("cannedReplies")}…</option>
              {props.cannedReplies.map((r) => (
                <option key={r} value={r}>
                  {r.length > 60 ? `${r.slice(0, 59)}…` : r}
                </option>
              ))}
            </select>
          )}
          <textarea
            data-testid="chat-input"
            value={draft}
            placeholder={t("chatPlaceholder")}
            aria-label={t("chatPlaceholder")}
            rows={2}
            onChange={(e) => typed(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === "Enter" && !e.shiftKey) {
                e.preventDefault();
                void send();
              }
            }}
          />
          {props.canAttach && (
            <label className="chat-attach" title={t("chatAttach")}>
              📎
              <input
                type="file"
                data-testid="chat-attach"
                aria-label={t("chatAttach")}
                accept={ACCEPT}
                hidden
                disabled={sending}
                onChange={(e) => {
                  const file = e.target.files?.[0];
                  e.target.value = "";
                  if (file) void attach(file);
                }}
              />
            </label>
          )}
          <button type="submit" className="primary" data-testid="chat-send" disabled={sending || !draft.trim()}>
            {t("chatSend")}
          </button>
        </form>
      )}
      {streamError && <p className="warn" data-testid="chat-stream-error">{streamError}</p>}
      {readError && <p className="warn" data-testid="chat-read-error">{readError}</p>}
      {error && <p className="error" data-testid="chat-error">{error}</p>}
    </div>
  );
}
