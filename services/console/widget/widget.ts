// Centralita web chat widget: one script a tenant pastes on its site.
//
//   <script src="https://console.example/widget/centralita-chat.js"
//           data-endpoint="https://chat.example"      (media's web chat front door)
//           data-tenant="acme" data-widget-key="wk_…" data-lang="es"
//           data-prechat="true"></script>               (optional: ask phone and email first)
//
// It starts a chat (POST …/chats with the widget key, from the page's origin, which the
// tenant's manifest allows), keeps the visitor token for the tab (sessionStorage, so a
// reload continues the same chat), and talks over media's WebSocket: messages, typing,
// read markers. A dropped socket reconnects with backoff from the last sequence seen, so
// nothing is missed or shown twice; messages written meanwhile are sent once it is back
// (with their request ids: media stores each once). Plain DOM, no framework.

import { applyFrame, attachmentUrl, backoffMs, compose, initialChat, socketUrl, uploadUrl, type ChatState, type FileRef } from "./chat";
import { ACCEPT, checkFile, fileSize, type FileRefusal } from "../src/files";

const WORDS = {
  en: { prechat: "So we can find your earlier conversations (optional):", phone: "Phone (+34…)", email: "Email", start: "Start chat", open: "Chat with us", title: "Chat", placeholder: "Write a message…", send: "Send", typing: "The agent is typing…", ended: "The chat has ended.", leave: "End chat", connecting: "connecting…", offline: "reconnecting…", you: "You", agent: "Agent", error: "Could not start the chat", attach: "Send a file", fileType: "This kind of file cannot be sent (images, PDF, text, audio, MP4).", fileTooLarge: "A file is at most 5 MB.", fileEmpty: "The file is empty.", fileName: "Rename the file and try again.", fileFailed: "The file could not be sent" },
  es: { prechat: "Para encontrar sus conversaciones anteriores (opcional):", phone: "Teléfono (+34…)", email: "Correo", start: "Empezar chat", open: "Chatea con nosotros", title: "Chat", placeholder: "Escribe un mensaje…", send: "Enviar", typing: "El agente está escribiendo…", ended: "El chat ha terminado.", leave: "Terminar chat", connecting: "conectando…", offline: "reconectando…", you: "Tú", agent: "Agente", error: "No se pudo iniciar el chat", attach: "Enviar un archivo", fileType: "Este tipo de archivo no se puede enviar (imágenes, PDF, texto, audio, MP4).", fileTooLarge: "Un archivo tiene como máximo 5 MB.", fileEmpty: "El archivo está vacío.", fileName: "Cambia el nombre del archivo e inténtalo de nuevo.", fileFailed: "No se pudo enviar el archivo" },
};

interface Session {
  contact: string;
  visitorId: string;
  visitorToken: string;
}

function start(script: HTMLScriptElement) {
  const endpoint = script.dataset.endpoint ?? "";
  const tenant = script.dataset.tenant ?? "";
  const key = script.dataset.widgetKey ?? "";
  const w = WORDS[(script.dataset.lang as "en" | "es") ?? "en"] ?? WORDS.en;
  if (!endpoint || !tenant || !key) {
    console.error("centralita-chat: data-endpoint, data-tenant and data-widget-key are required");
    return;
  }
  const storeKey = `centralita-chat.${tenant}`;
  let state: ChatState = initialChat;
  let session: Session | undefined;
  let socket: WebSocket | undefined;
  let attempt = 0;
  let online = false;
  let typingTimer: ReturnType<typeof setTimeout> | undefined;

  // The DOM, in a shadow root so the site's styles and ours do not mix.
  const host = document.createElement("div");
  host.id = "centralita-chat";
  document.body.appendChild(host);
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML = `
    <style>
      .launcher { position: fixed; right: 1rem; bottom: 1rem; padding: .7rem 1rem; border-radius: 999px; border: 0; background: #14324f; color: #fff; font: 600 14px system-ui, sans-serif; cursor: pointer; }
      .panel { position: fixed; right: 1rem; bottom: 4.2rem; width: 320px; max-height: 460px; display: none; flex-direction: column; background: #fff; border-radius: 10px; box-shadow: 0 4px 18px rgba(0,0,0,.25); font: 14px system-ui, sans-serif; color: #1c2430; }
      .panel.open { display: flex; }
      header { display: flex; justify-content: space-between; align-items: center; padding: .5rem .8rem; background: #14324f; color: #fff; border-radius: 10px 10px 0 0; }
      header small { opacity: .8; }
      ol { list-style: none; margin: 0; padding: .6rem; overflow-y: auto; flex: 1; display: flex; flex-direction: column; gap: .35rem; min-height: 160px; }
      li { max-width: 80%; padding: .35rem .55rem; border-radius: 8px; white-space: pre-wrap; overflow-wrap: anywhere; }
      li.customer { align-self: flex-end; background: #dbeafe; }
      li.agent { align-self: flex-start; background: #f1f3f5; }
      li.system { align-self: center; background: none; color: #555; font-style: italic; font-size: 12px; }
      li.pending { opacity: .55; }
      .typing, .notice { padding: 0 .8rem; font-size: 12px; color: #555; min-height: 1em; }
      form { display: flex; gap: .4rem; padding: .5rem; border-top: 1px solid #e4e7eb; }
      form.prechat { flex-direction: column; border-top: 0; }
      form.prechat p { margin: 0; font-size: 12px; color: #555; }
      [hidden] { display: none !important; }
      textarea { flex: 1; resize: none; height: 2.4em; font: inherit; }
      li button.file { background: none; border: 0; padding: 0; color: #14324f; text-decoration: underline; text-align: left; }
      label.attach { cursor: pointer; align-self: center; font-size: 18px; }
      button { font: inherit; cursor: pointer; }
    </style>
    <button class="launcher" part="launcher" data-testid="chat-launcher"></button>
    <section class="panel" data-testid="chat-panel" role="dialog">
      <header><span class="title"></span><small class="status" data-testid="chat-status"></small><button class="leave" data-testid="chat-leave" type="button"></button></header>
      <form class="prechat" data-testid="chat-prechat" hidden><p></p>
        <input type="tel" name="phone" data-testid="chat-phone" autocomplete="tel">
        <input type="email" name="email" data-testid="chat-email" autocomplete="email">
        <button type="submit" data-testid="chat-start"></button></form>
      <ol data-testid="chat-messages" aria-live="polite"></ol>
      <div class="typing" data-testid="chat-typing"></div>
      <div class="notice" data-testid="chat-notice"></div>
      <form><label class="attach">📎<input type="file" data-testid="chat-attach" hidden></label><textarea maxlength="4096" data-testid="chat-input"></textarea><button type="submit" data-testid="chat-send"></button></form>
    </section>`;
  const $ = <T extends Element>(sel: string) => root.querySelector(sel) as T;
  const prechat = $<HTMLFormElement>("form.prechat");
  const askFirst = script.dataset.prechat === "true";
  let details: { phone?: string; email?: string } | undefined = askFirst ? undefined : {};
  const launcher = $<HTMLButtonElement>(".launcher");
  const panel = $<HTMLElement>(".panel");
  const list = $<HTMLOListElement>("ol");
  const input = $<HTMLTextAreaElement>("form:not(.prechat) textarea");
  const status = $<HTMLElement>(".status");
  launcher.textContent = w.open;
  $<HTMLElement>(".title").textContent = w.title;
  $<HTMLButtonElement>(".leave").textContent = w.leave;
  $<HTMLButtonElement>("form:not(.prechat) button").textContent = w.send;
  $<HTMLElement>("form.prechat p").textContent = w.prechat;
  $<HTMLInputElement>("[name=phone]").placeholder = w.phone;
  $<HTMLInputElement>("[name=email]").placeholder = w.email;
  $<HTMLButtonElement>("form.prechat button").textContent = w.start;
  input.placeholder = w.placeholder;
  const picker = $<HTMLInputElement>("input[type=file]");
  picker.accept = ACCEPT;
  $<HTMLLabelElement>("label.attach").title = w.attach;
  picker.setAttribute("aria-label", w.attach);
  picker.onchange = () => {
    const file = picker.files?.[0];
    picker.value = "";
    if (file) void upload(file);
  };

  const render = () => {
    list.replaceChildren(
      ...state.messages.map((m) => {
        const li = document.createElement("li");
        li.className = m.sender;
        li.dataset.sequence = String(m.sequence);
        if (m.attachment) {
          const b = document.createElement("button");
          b.type = "button";
          b.className = "file";
          b.dataset.testid = "chat-file";
          b.textContent = `📎 ${m.attachment.name} (${fileSize(m.attachment.size)})`;
          const file = m.attachment;
          b.onclick = () => void download(file);
          li.append(b);
        } else {
          li.textContent = m.text;
        }
        return li;
      }),
      ...state.pending.map((p) => {
        const li = document.createElement("li");
        li.className = "customer pending";
        li.textContent = p.text;
        return li;
      }),
    );
    list.scrollTop = list.scrollHeight;
    $<HTMLElement>(".typing").textContent = state.agentTyping ? w.typing : "";
    $<HTMLElement>(".notice").textContent = state.ended ? w.ended : (state.error ?? "");
    status.textContent = state.ended ? "" : online ? "" : session ? w.offline : w.connecting;
    input.disabled = state.ended;
    picker.disabled = state.ended || !session;
    prechat.hidden = !!session || details !== undefined;
  };
  const set = (next: ChatState) => {
    state = next;
    render();
  };

  // A file of the chat: fetched with the visitor token (the link alone gives nothing) and
  // saved under its name.
  const download = async (file: FileRef) => {
    if (!session) return;
    try {
      const r = await fetch(attachmentUrl(endpoint, tenant, file.id), { headers: { authorization: `Bearer ${session.visitorToken}` } });
      if (!r.ok) throw new Error(String(r.status));
      const url = URL.createObjectURL(await r.blob());
      const a = document.createElement("a");
      a.href = url;
      a.download = file.name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      set({ ...state, error: `${w.fileFailed}: ${e instanceof Error ? e.message : String(e)}` });
    }
  };

  const refusals: Record<FileRefusal, string> = { type: w.fileType, tooLarge: w.fileTooLarge, empty: w.fileEmpty, name: w.fileName };

  // The customer's file: checked here first (media's rule), then uploaded; the socket brings
  // it back as a message of the chat.
  const upload = async (file: File) => {
    const refused = checkFile(file.name, file.type, file.size);
    if (refused) {
      set({ ...state, error: refusals[refused] });
      return;
    }
    if (!session || state.ended) return;
    try {
      const r = await fetch(uploadUrl(endpoint, tenant, file.name, crypto.randomUUID()), {
        method: "POST",
        headers: { authorization: `Bearer ${session.visitorToken}`, "content-type": file.type },
        body: file,
      });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(`${r.status} ${body.message ?? ""}`.trim());
      set({ ...applyFrame(state, { type: "message", ...body }), error: undefined });
    } catch (e) {
      set({ ...state, error: `${w.fileFailed}: ${e instanceof Error ? e.message : String(e)}` });
    }
  };

  const flush = () => {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    for (const p of state.pending) socket.send(JSON.stringify({ type: "message", text: p.text, requestId: p.requestId }));
  };

  const connect = () => {
    if (!session || state.ended) return;
    const ws = new WebSocket(socketUrl(endpoint, tenant, session.visitorToken, state.lastSequence));
    socket = ws;
    ws.onopen = () => {
      online = true;
      attempt = 0;
      render();
      flush();
    };
    ws.onmessage = (ev) => {
      let frame: unknown;
      try {
        frame = JSON.parse(String(ev.data));
      } catch {
        return;
      }
      const before = state.lastSequence;
      set(applyFrame(state, frame));
      if (state.lastSequence > before) ws.send(JSON.stringify({ type: "read", sequence: state.lastSequence }));
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      online = false;
      render();
      if (!state.ended) setTimeout(connect, backoffMs(attempt++));
    };
  };

  const begin = async () => {
    if (session) return;
    const saved0 = sessionStorage.getItem(storeKey);
    if (!saved0 && details === undefined) {
      render(); // the pre-chat form first
      return;
    }
    const saved = sessionStorage.getItem(storeKey);
    if (saved) {
      try {
        // A reload keeps the chat; the socket replays it from the start (after = 0).
        session = JSON.parse(saved) as Session;
      } catch {
        sessionStorage.removeItem(storeKey);
      }
    }
    if (!session) {
      try {
        const r = await fetch(`${endpoint.replace(/\/+$/, "")}/v1/tenants/${encodeURIComponent(tenant)}/webchat/chats`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ widgetKey: key, requestId: crypto.randomUUID(), ...details }),
        });
        const body = await r.json().catch(() => ({}));
        if (!r.ok) throw new Error(`${r.status} ${body.message ?? body.error ?? ""}`.trim());
        session = { contact: body.contact, visitorId: body.visitorId, visitorToken: body.visitorToken };
        sessionStorage.setItem(storeKey, JSON.stringify(session));
      } catch (e) {
        // With a pre-chat form, show it again so the customer can correct what was refused.
        if (askFirst) details = undefined;
        set({ ...state, error: `${w.error}: ${e instanceof Error ? e.message : String(e)}` });
        return;
      }
    }
    connect();
  };

  launcher.onclick = () => {
    panel.classList.toggle("open");
    if (panel.classList.contains("open")) void begin();
    render();
  };
  prechat.onsubmit = (e) => {
    e.preventDefault();
    const phone = $<HTMLInputElement>("[name=phone]").value.trim();
    const email = $<HTMLInputElement>("[name=email]").value.trim();
    details = { ...(phone ? { phone } : {}), ...(email ? { email } : {}) };
    set({ ...state, error: undefined });
    void begin();
  };
  $<HTMLFormElement>("form:not(.prechat)").onsubmit = (e) => {
    e.preventDefault();
    const next = compose(state, input.value, crypto.randomUUID());
    if ("refused" in next) {
      set({ ...state, error: next.refused });
      return;
    }
    input.value = "";
    set({ ...next, error: undefined });
    flush();
  };
  input.oninput = () => {
    if (socket?.readyState !== WebSocket.OPEN) return;
    if (!typingTimer) socket.send(JSON.stringify({ type: "typing", active: true }));
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => {
      typingTimer = undefined;
      if (socket?.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "typing", active: false }));
    }, 3000);
  };
  $<HTMLButtonElement>(".leave").onclick = () => {
    if (socket?.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "leave" }));
    sessionStorage.removeItem(storeKey);
  };
  render();
}

const me = document.currentScript as HTMLScriptElement | null;
if (me) {
  if (document.body) start(me);
  else document.addEventListener("DOMContentLoaded", () => start(me));
}
