// Threadline chat: agents, threads and a live view of one thread, rebuilt from its event stream.
//
// The conversation is never kept anywhere but in the server's log: opening a thread (or reloading
// the page) opens GET /v1/threads/{id}/stream?after=0 and rebuilds every message, run and tool call
// from the frames, so what is shown is exactly what was recorded. Each frame is applied once: its
// key is the event's version in the thread's stream (the `id:` line) plus its event name.
// No innerHTML anywhere: every piece of text goes through textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  const store = {
    get(name, fallback) {
      try {
        const raw = localStorage.getItem(`threadline.${name}`);
        return raw === null ? fallback : JSON.parse(raw);
      } catch {
        return fallback;
      }
    },
    set(name, value) { localStorage.setItem(`threadline.${name}`, JSON.stringify(value)); },
    remove(name) { localStorage.removeItem(`threadline.${name}`); },
  };

  /** An element with properties and children; strings become text nodes, never markup. */
  function h(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  const ACTIVE = new Set(["queued", "in_progress", "requires_action", "cancelling"]);
  const RUN_STATUSES = ["created", "queued", "in_progress", "requires_action", "completed", "failed", "cancelled",
    "expired", "cancelling", "incomplete", "updated"];
  const EVENTS = [
    "thread.created", "thread.updated", "thread.deleted",
    ...["created", "in_progress", "delta", "completed", "incomplete", "updated", "deleted"].map((s) => `thread.message.${s}`),
    ...RUN_STATUSES.map((s) => `thread.run.${s}`),
    ...["created", "in_progress", "delta", "completed", "failed", "cancelled", "expired"].map((s) => `thread.run.step.${s}`),
    "error", "ping",
  ];

  const state = {
    key: store.get("key", ""),
    agentId: store.get("agent", ""),
    threadId: null,
    source: null,
    lastId: "0",
    seen: new Set(),
    messages: new Map(),   // message id -> {node, body, status, parts}
    runs: new Map(),       // run id -> {node, history, run}
    steps: new Map(),      // step id -> {node, status, calls}
    latestRunId: null,
    busy: false,
    reconnectTimer: null,
  };

  // -- helpers ------------------------------------------------------------------------------------

  const keyTag = () => state.key.slice(-8);     // thread lists are per key (a key is a project)
  const clip = (text, n) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);

  function showError(message) {
    const node = $("error");
    node.textContent = message;
    node.hidden = !message;
  }

  async function api(method, path, body, key = state.key) {
    const headers = { Authorization: `Bearer ${key}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(`/v1${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch { /* not JSON */ }
    if (!response.ok) {
      const error = new Error((data && data.error && data.error.message) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      if (response.status === 401 && key === state.key) askForKey(error.message);
      throw error;
    }
    return data;
  }

  /** Run fn, then keep the conversation scrolled to the bottom if it was there before. */
  function keepScrolled(fn) {
    const box = $("messages");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const result = fn();
    if (atBottom) box.scrollTop = box.scrollHeight;
    return result;
  }

  function appendToConversation(node) {
    $("empty-hint").hidden = true;
    keepScrolled(() => $("messages").append(node));
  }

  // -- the API key --------------------------------------------------------------------------------

  function askForKey(message) {
    const dialog = $("key-dialog");
    $("key-error").textContent = message || "";
    $("key-error").hidden = !message;
    if (!dialog.open) dialog.showModal();
    $("key-input").focus();
  }

  $("key-dialog").addEventListener("cancel", (event) => { if (!state.key) event.preventDefault(); });
  $("change-key").addEventListener("click", () => { $("key-input").value = ""; askForKey(""); });

  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    $("key-save").disabled = true;
    try {
      await api("GET", "/assistants?limit=1", undefined, key);
      const changed = key !== state.key;
      state.key = key;
      store.set("key", key);
      $("key-dialog").close();
      if (changed) start();
    } catch (error) {
      $("key-error").textContent = error.status === 401 ? "This key was refused." : error.message;
      $("key-error").hidden = false;
    } finally {
      $("key-save").disabled = false;
    }
  });

  // -- agents -------------------------------------------------------------------------------------

  async function loadAgents() {
    const page = await api("GET", "/assistants?limit=100&order=desc");
    const select = $("agent-select");
    select.replaceChildren();
    if (!page.data.length) select.append(h("option", { value: "", text: "(no agents yet: create one)" }));
    for (const agent of page.data) {
      select.append(h("option", { value: agent.id, text: `${agent.name || agent.id} · ${agent.model}` }));
    }
    if (!page.data.some((agent) => agent.id === state.agentId)) {
      state.agentId = page.data.length ? page.data[0].id : "";
      store.set("agent", state.agentId);
    }
    select.value = state.agentId;
    $("agent-create").open = !page.data.length;
  }

  $("agent-select").addEventListener("change", (event) => {
    state.agentId = event.target.value;
    store.set("agent", state.agentId);
  });

  $("agent-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { model: $("agent-model").value.trim() };
    const name = $("agent-name").value.trim();
    const instructions = $("agent-instructions").value.trim();
    const tools = $("agent-tools").value.split(",").map((s) => s.trim()).filter(Boolean);
    if (name) body.name = name;
    if (instructions) body.instructions = instructions;
    if (tools.length) {
      body.tools = tools.map((tool) => ({
        type: "function", function: { name: tool, parameters: { type: "object", properties: {} } },
      }));
    }
    $("agent-create-button").disabled = true;
    try {
      const agent = await api("POST", "/assistants", body);
      state.agentId = agent.id;
      store.set("agent", agent.id);
      await loadAgents();
      $("agent-create").open = false;
      $("agent-form").reset();
      showError("");
    } catch (error) {
      showError(`Could not create the agent: ${error.message}`);
    } finally {
      $("agent-create-button").disabled = false;
    }
  });

  // -- threads ------------------------------------------------------------------------------------

  const localThreads = () => store.get(`threads.${keyTag()}`, []);

  function rememberThread(id, title) {
    const rest = localThreads().filter((t) => t.id !== id);
    store.set(`threads.${keyTag()}`, [{ id, title }, ...rest].slice(0, 100));
  }

  function forgetThread(id) {
    store.set(`threads.${keyTag()}`, localThreads().filter((t) => t.id !== id));
  }

  async function renderThreads() {
    let items = localThreads();
    if ($("all-threads").checked) {
      try {
        const page = await api("GET", "/threads?limit=100&order=desc");
        const titles = new Map(items.map((t) => [t.id, t.title]));
        items = page.data.map((t) => ({ id: t.id, title: (t.metadata && t.metadata.title) || titles.get(t.id) || "" }));
      } catch (error) {
        showError(`Could not list the project's threads: ${error.message}`);
      }
    }
    const list = $("thread-list");
    list.replaceChildren(...items.map((t) => h("li", {},
      h("button", {
        type: "button", class: t.id === state.threadId ? "thread active" : "thread",
        "data-thread-id": t.id, onclick: () => openThread(t.id),
      }, h("span", { class: "thread-name", text: t.title || "Untitled thread" }),
      h("code", { class: "muted", text: t.id })))));
    if (!items.length) list.append(h("li", { class: "muted", text: "No threads yet." }));
  }

  $("all-threads").addEventListener("change", renderThreads);
  $("new-thread").addEventListener("click", () => { openThread(null); $("composer-input").focus(); });

  // -- the thread's stream --------------------------------------------------------------------------

  function setConnection(kind, text) {
    const node = $("connection");
    node.dataset.state = kind;
    node.textContent = text;
  }

  function closeStream() {
    clearTimeout(state.reconnectTimer);
    if (state.source) state.source.close();
    state.source = null;
  }

  function openThread(id) {
    closeStream();
    state.threadId = id;
    if (id) store.set(`thread.${keyTag()}`, id); else store.remove(`thread.${keyTag()}`);
    state.lastId = "0";
    state.seen.clear();
    state.messages.clear();
    state.runs.clear();
    state.steps.clear();
    state.latestRunId = null;
    $("messages").replaceChildren($("empty-hint"));
    $("empty-hint").hidden = false;
    $("timeline-rows").replaceChildren();
    $("timeline-count").textContent = "";
    $("action-panel").hidden = true;
    $("action-panel").dataset.calls = "";
    showError("");
    setPill(null);
    const known = localThreads().find((t) => t.id === id);
    $("thread-title").textContent = id ? (known && known.title) || "Untitled thread" : "New conversation";
    $("thread-id").textContent = id || "";
    renderThreads();
    if (id) connect();
    else setConnection("idle", "no thread");
  }

  function connect() {
    const id = state.threadId;
    const url = `/v1/threads/${encodeURIComponent(id)}/stream?after=${encodeURIComponent(state.lastId)}&api_key=${encodeURIComponent(state.key)}`;
    const source = new EventSource(url);
    state.source = source;
    setConnection("connecting", "connecting…");
    for (const name of EVENTS) {
      source.addEventListener(name, (event) => { if (state.source === source) onFrame(name, event); });
    }
    source.onopen = () => { if (state.source === source) setConnection("live", "live"); };
    source.onerror = () => {
      if (state.source !== source) return;
      if (source.readyState !== EventSource.CLOSED) {
        setConnection("reconnecting", "reconnecting…");      // EventSource resumes with Last-Event-ID
        return;
      }
      // Refused (not an event stream): find out why, then retry from the last event we applied.
      setConnection("closed", "disconnected");
      api("GET", `/threads/${encodeURIComponent(id)}`).then(() => {
        state.reconnectTimer = setTimeout(() => { if (state.threadId === id) connect(); }, 2000);
      }, (error) => {
        if (error.status === 404) {
          forgetThread(id);
          openThread(null);
          showError(`Thread ${id} no longer exists.`);
        } else {
          showError(`The thread's stream closed: ${error.message}`);
        }
      });
    };
  }

  function onFrame(name, event) {
    // "error" is also how EventSource reports a lost connection (no data): onerror handles that.
    if (name === "ping" || typeof event.data !== "string") return;
    const id = event.lastEventId;
    const key = `${id}|${name}`;      // every frame has its own id ("12.1", "12"): a repeat is a replay
    if (state.seen.has(key)) return;
    state.seen.add(key);
    if (id) state.lastId = id;        // frames arrive in order: resume (?after=) after the last one we applied
    let data;
    try { data = JSON.parse(event.data); } catch { data = event.data; }
    addTimelineRow(id, name, data);
    if (name.startsWith("thread.message.")) onMessage(name.slice("thread.message.".length), data);
    else if (name.startsWith("thread.run.step.")) onStep(name.slice("thread.run.step.".length), data);
    else if (name.startsWith("thread.run.")) onRun(data);
    else if (name === "thread.updated" && data.metadata && data.metadata.title) {
      $("thread-title").textContent = data.metadata.title;
    } else if (name === "thread.deleted") {
      forgetThread(state.threadId);
      showError("This thread was deleted.");
      closeStream();
      renderThreads();
    } else if (name === "error") {
      showError(`Stream error: ${data.message || JSON.stringify(data)}`);
    }
  }

  // -- messages -------------------------------------------------------------------------------------

  function contentText(part) {
    if (part.type === "text") return part.text ? part.text.value || "" : "";
    if (part.type === "image_file") return `[image ${part.image_file.file_id}]`;
    if (part.type === "image_url") return `[image ${part.image_url.url}]`;
    return `[${part.type}]`;
  }

  function messageView(data) {
    let view = state.messages.get(data.id);
    if (view) return view;
    const role = data.role === "user" ? "user" : "assistant";
    const status = h("span", { class: "status" });
    const body = h("div", { class: "body" });
    const node = h("article", { class: `msg ${role}`, "data-message-id": data.id },
      h("div", { class: "meta" }, h("span", { class: "role", text: role === "user" ? "You" : "Agent" }), status),
      body);
    view = { node, body, statusNode: status, parts: [], status: "" };
    state.messages.set(data.id, view);
    appendToConversation(node);
    return view;
  }

  function renderMessage(view) {
    keepScrolled(() => { view.body.textContent = view.parts.filter((p) => p !== undefined).join("\n\n"); });
  }

  function setMessageStatus(view, status) {
    if (!status) return;
    view.status = status;
    view.node.dataset.status = status;
    view.node.classList.toggle("streaming", status === "in_progress");
    view.statusNode.textContent = status === "in_progress" ? "writing…" : status === "incomplete" ? "incomplete" : "";
  }

  function onMessage(kind, data) {
    if (kind === "deleted") {
      const view = state.messages.get(data.id);
      if (view) view.node.remove();
      state.messages.delete(data.id);
      return;
    }
    if (kind === "delta") {
      const view = state.messages.get(data.id) || messageView({ id: data.id, role: data.delta.role });
      for (const part of data.delta.content || []) {
        if (part.type === "text") view.parts[part.index] = (view.parts[part.index] || "") + ((part.text && part.text.value) || "");
        else view.parts[part.index] = contentText(part);
      }
      renderMessage(view);
      return;
    }
    const view = messageView(data);
    if (Array.isArray(data.content) && data.content.length) {
      view.parts = data.content.map(contentText);      // the recorded content is the reference
      renderMessage(view);
    }
    setMessageStatus(view, data.status);
  }

  // -- runs, their status and requires_action ---------------------------------------------------------

  function setPill(status) {
    const pill = $("run-status");
    pill.dataset.status = status || "none";
    pill.textContent = status ? status.replace(/_/g, " ") : "no run";
    $("cancel-run").hidden = !(status && ACTIVE.has(status) && status !== "cancelling");
    updateComposer();
  }

  function onRun(run) {
    if (!run || !run.id) return;
    let view = state.runs.get(run.id);
    if (!view) {
      const history = h("span", { class: "history" });
      const detail = h("span", { class: "detail" });
      const node = h("div", { class: "run", "data-run-id": run.id },
        h("span", { class: "label", text: "run" }), h("code", { text: run.id }), history, detail);
      view = { node, history, detail, statuses: [] };
      state.runs.set(run.id, view);
      state.latestRunId = run.id;
      appendToConversation(node);
    }
    view.run = run;
    const status = run.status;
    if (status && view.statuses[view.statuses.length - 1] !== status) {
      view.statuses.push(status);
      view.node.dataset.status = status;
      view.history.replaceChildren(...view.statuses.map((s, i) =>
        h("span", { class: `step s-${s}`, text: (i ? "→ " : "") + s.replace(/_/g, " ") })));
    }
    view.detail.textContent = run.last_error ? `${run.last_error.code}: ${run.last_error.message}` :
      run.incomplete_details ? `incomplete: ${run.incomplete_details.reason}` : "";
    if (run.id === state.latestRunId) {
      setPill(status);
      showActions(run);
    }
  }

  function showActions(run) {
    const panel = $("action-panel");
    const action = run.status === "requires_action" && run.required_action;
    const calls = (action && action.submit_tool_outputs && action.submit_tool_outputs.tool_calls) || [];
    if (!calls.length) {
      panel.hidden = true;
      panel.dataset.calls = "";
      return;
    }
    const ids = `${run.id}:${calls.map((c) => c.id).join(",")}`;
    if (panel.dataset.calls === ids && !panel.hidden) return;      // keep what was typed
    panel.dataset.calls = ids;
    panel.dataset.runId = run.id;
    $("action-calls").replaceChildren(...calls.map((call) => {
      const fn = call.function || {};
      const inputId = `output-${call.id}`;
      return h("div", { class: "call" },
        h("div", { class: "call-head" },
          h("code", { class: "fn", text: fn.name || call.type }),
          h("code", { class: "args", text: fn.arguments || "" })),
        h("label", { class: "field", for: inputId },
          h("span", { text: `Output of ${fn.name || call.type} (${call.id})` })),
        h("textarea", { id: inputId, rows: 2, class: "call-output", "data-call-id": call.id, required: true }));
    }));
    panel.hidden = false;
    $("submit-outputs").disabled = false;
    const first = panel.querySelector("textarea");
    if (first) first.focus();
  }

  $("action-panel").addEventListener("submit", async (event) => {
    event.preventDefault();
    const panel = $("action-panel");
    const runId = panel.dataset.runId;
    const outputs = [...panel.querySelectorAll("textarea.call-output")].map((t) => ({
      tool_call_id: t.dataset.callId, output: t.value,
    }));
    $("submit-outputs").disabled = true;
    try {
      await api("POST", `/threads/${encodeURIComponent(state.threadId)}/runs/${encodeURIComponent(runId)}/submit_tool_outputs`,
        { tool_outputs: outputs });
      panel.hidden = true;
      showError("");
    } catch (error) {
      showError(`Could not submit the tool outputs: ${error.message}`);
      $("submit-outputs").disabled = false;
    }
  });

  $("cancel-run").addEventListener("click", async () => {
    if (!state.latestRunId) return;
    try {
      await api("POST", `/threads/${encodeURIComponent(state.threadId)}/runs/${encodeURIComponent(state.latestRunId)}/cancel`);
    } catch (error) {
      showError(`Could not cancel the run: ${error.message}`);
    }
  });

  // -- run steps: the tool calls of a run, shown in the conversation -------------------------------------

  function onStep(kind, data) {
    if (kind === "delta") {
      const view = state.steps.get(data.id);
      const details = data.delta && data.delta.step_details;
      if (!view || !details || !details.tool_calls) return;
      for (const call of details.tool_calls) {
        const known = view.calls[call.index] || { id: "", name: "", arguments: "", output: null };
        const fn = call.function || {};
        view.calls[call.index] = {
          id: call.id || known.id,
          name: fn.name || known.name || call.type,
          arguments: known.arguments + (fn.arguments || ""),
          output: fn.output !== undefined && fn.output !== null ? fn.output : known.output,
        };
      }
      renderStep(view);
      return;
    }
    if (data.type !== "tool_calls") return;         // message_creation: the message shows it
    let view = state.steps.get(data.id);
    if (!view) {
      view = { node: h("div", { class: "tool-step", "data-step-id": data.id }), calls: [], status: "" };
      state.steps.set(data.id, view);
      appendToConversation(view.node);
    }
    view.status = data.status || view.status;
    const calls = data.step_details && data.step_details.tool_calls;
    if (calls && calls.length) {
      view.calls = calls.map((call) => ({
        id: call.id, name: (call.function && call.function.name) || call.type,
        arguments: (call.function && call.function.arguments) || "",
        output: call.function ? call.function.output : null,
      }));
    }
    renderStep(view);
  }

  function renderStep(view) {
    keepScrolled(() => view.node.replaceChildren(
      h("div", { class: "tool-step-head", text: `tool calls · ${view.status.replace(/_/g, " ")}` }),
      ...view.calls.filter(Boolean).map((call) => h("div", { class: "tool-call" },
        h("code", { class: "fn", text: `${call.name}(${call.arguments})` }),
        call.output !== null && call.output !== undefined
          ? h("div", { class: "tool-output" }, h("span", { class: "muted", text: "returned " }), h("code", { text: call.output }))
          : h("div", { class: "muted", text: "waiting for its output" })))));
  }

  // -- the timeline ------------------------------------------------------------------------------------

  /** [short summary, the object's id]: the timeline shows the first and the id as its tooltip. */
  function summary(name, data) {
    if (typeof data !== "object" || data === null) return [String(data), ""];
    if (name === "thread.message.delta") {
      return [JSON.stringify((data.delta.content || []).map((p) => (p.text && p.text.value) || "").join("")), data.id];
    }
    if (name === "thread.run.step.delta") {
      const calls = ((data.delta.step_details || {}).tool_calls || []).map((c) => (c.function && c.function.name) || c.type);
      return [`calls ${calls.join(", ")}`, data.id];
    }
    if (name.startsWith("thread.run.step.")) return [`${data.type || ""} ${data.status || ""}`, data.id];
    if (name.startsWith("thread.run.")) {
      let text = data.status || "";
      if (data.last_error) text += `: ${data.last_error.code}: ${data.last_error.message}`;
      if (data.required_action) text += `: ${data.required_action.submit_tool_outputs.tool_calls.length} tool calls`;
      return [text, data.id];
    }
    if (name.startsWith("thread.message.")) {
      const text = (data.content || []).map(contentText).join(" ");
      return [`${data.role || ""} ${data.status || ""}${text ? ` ${JSON.stringify(text)}` : ""}`.trim(), data.id];
    }
    return [data.id || "", data.id || ""];
  }

  function clock() {
    const now = new Date();
    const pad = (n, w = 2) => String(n).padStart(w, "0");
    return `${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}.${pad(now.getMilliseconds(), 3)}`;
  }

  function addTimelineRow(id, name, data) {
    const [text, objectId] = summary(name, data);
    const group = name === "thread.message.delta" ? "ev-delta"
      : name.startsWith("thread.run.step.") ? "ev-step"
        : name.startsWith("thread.run.") ? "ev-run"
          : name.startsWith("thread.message.") ? "ev-message" : "ev-thread";
    const row = h("tr", { class: group },
      h("td", { class: "time", text: clock() }),
      h("td", { class: "id", text: id }),
      h("td", { class: "event", title: objectId ? `${objectId}\n${clip(text, 2000)}` : null },
        h("code", { text: name }),
        text ? h("div", { class: "summary", text: clip(text, 300) }) : null));
    const box = $("timeline").querySelector(".timeline-scroll");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    $("timeline-rows").append(row);
    $("timeline-count").textContent = `${state.seen.size} frames`;
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  $("timeline-toggle").addEventListener("click", () => {
    const timeline = $("timeline");
    timeline.hidden = !timeline.hidden;
    $("timeline-toggle").setAttribute("aria-pressed", String(!timeline.hidden));
    store.set("timeline", !timeline.hidden);
    const box = timeline.querySelector(".timeline-scroll");
    box.scrollTop = box.scrollHeight;
  });

  // -- sending ------------------------------------------------------------------------------------

  function updateComposer() {
    const run = state.latestRunId && state.runs.get(state.latestRunId);
    const active = Boolean(run && ACTIVE.has(run.run.status));
    $("send").disabled = state.busy || active;
    $("send").textContent = active ? "Running…" : "Send";
  }

  async function send(event) {
    event.preventDefault();
    const input = $("composer-input");
    const text = input.value.trim();
    if (!text) return;
    if (!state.agentId) {
      showError("Create or choose an agent first.");
      return;
    }
    state.busy = true;
    updateComposer();
    showError("");
    try {
      let threadId = state.threadId;
      if (!threadId) {
        const title = clip(text.replace(/\s+/g, " "), 60);
        const thread = await api("POST", "/threads", { metadata: { title } });
        rememberThread(thread.id, title);
        openThread(thread.id);
        threadId = thread.id;
      }
      await api("POST", `/threads/${encodeURIComponent(threadId)}/messages`, { role: "user", content: text });
      input.value = "";
      await api("POST", `/threads/${encodeURIComponent(threadId)}/runs`, { assistant_id: state.agentId });
    } catch (error) {
      showError(error.message);
    } finally {
      state.busy = false;
      updateComposer();
    }
  }

  $("composer").addEventListener("submit", send);
  $("composer-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!$("send").disabled) $("composer").requestSubmit();
    }
  });

  // -- start ----------------------------------------------------------------------------------------

  async function start() {
    openThread(store.get(`thread.${keyTag()}`, null));
    try {
      await loadAgents();
    } catch (error) {
      if (error.status !== 401) showError(`Could not load the agents: ${error.message}`);
    }
  }

  if (store.get("timeline", false)) {
    $("timeline").hidden = false;
    $("timeline-toggle").setAttribute("aria-pressed", "true");
  }
  if (state.key) start();
  else askForKey("");
})();
