// The browser chat page served at `GET /` by `trainer serve`: one self-contained HTML document (CSS and JavaScript
// inline, no external resource, no network beyond this server's own API), kept in the binary as this string.
//
// What the page does: a multi-turn conversation streamed through this server's `POST /v1/chat/completions`
// (`stream: true`, the SSE read with fetch + ReadableStream, `stream_options.include_usage` for the token count),
// a system prompt, sliders for temperature, top_p and max_tokens, the tokens/s of each reply, `<think>…</think>`
// shown as a collapsible <details> block (as MiniMind's scripts/web_demo.py shows reasoning: "Thinking…" while the
// block is open, "Thought" once closed, a blank block dropped), a stop button that aborts the request (the server
// then cancels the generation: a client that disconnects stops its job), an API key field sent as
// `Authorization: Bearer KEY` when filled, and the server's errors (401, other 4xx/5xx, an SSE error event, a
// network failure) shown in the conversation. Model text is only ever inserted as text (`textContent`), never as
// HTML. Stable ids for tests: #prompt, #send, #stop, #messages (each user turn `.user`, each reply `.assistant`
// with `data-state` streaming | done | stopped | error, its statistics in the following `.meta`), #system,
// #temperature, #top_p, #max_tokens, #api_key, #clear; errors are `.error` elements inside #messages.

/// The chat page (`GET /`). Static: it needs no API key to load; every API call it makes carries the key typed
/// into its field.
public enum ChatPage {
    /// `Content-Security-Policy` of the page: inline script and style only, fetches to this origin only.
    public static let contentSecurityPolicy =
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    /// The whole document (UTF-8).
    public static let html = #"""
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SwiftMind chat</title>
<style>
  :root { --bg: #f6f7f9; --panel: #ffffff; --line: #dde1e6; --text: #1d232b; --muted: #6b7480; --user: #3d4450;
          --accent: #2f6feb; --danger: #c0392b; }
  * { box-sizing: border-box; }
  html, body { height: 100%; margin: 0; }
  body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans CJK SC", sans-serif;
         color: var(--text); background: var(--bg); display: flex; }
  aside { width: 290px; flex: none; background: var(--panel); border-right: 1px solid var(--line); padding: 16px;
          overflow-y: auto; display: flex; flex-direction: column; gap: 14px; }
  aside h1 { font-size: 18px; margin: 0; }
  aside .model { color: var(--muted); font-size: 13px; margin-top: -10px; word-break: break-all; }
  label { display: block; font-size: 13px; color: var(--muted); margin-bottom: 4px; }
  label output { float: right; color: var(--text); font-variant-numeric: tabular-nums; }
  textarea, input[type=password], input[type=text] { width: 100%; font: inherit; font-size: 14px; padding: 6px 8px;
          border: 1px solid var(--line); border-radius: 6px; background: #fff; color: var(--text); }
  input[type=range] { width: 100%; }
  main { flex: 1; display: flex; flex-direction: column; min-width: 0; }
  #messages { flex: 1; overflow-y: auto; padding: 20px 28px; display: flex; flex-direction: column; gap: 6px; }
  #messages > * { flex-shrink: 0; }
  .empty { color: var(--muted); margin: auto; text-align: center; }
  .user { align-self: flex-end; max-width: 75%; background: var(--user); color: #fff; padding: 8px 14px;
          border-radius: 18px; white-space: pre-wrap; word-break: break-word; margin-top: 10px; }
  .assistant { align-self: flex-start; max-width: 85%; background: var(--panel); border: 1px solid var(--line);
               padding: 8px 14px; border-radius: 12px; white-space: pre-wrap; word-break: break-word; min-height: 2.3em; }
  .assistant[data-state=streaming]::after { content: "▍"; color: var(--accent); animation: blink 1s steps(1) infinite; }
  @keyframes blink { 50% { opacity: 0; } }
  .assistant details { border-left: 2px solid #9aa3ad; padding-left: 10px; margin: 2px 0 8px; color: var(--muted); }
  .assistant summary { cursor: pointer; font-size: 13px; }
  .assistant details .thought { font-size: 0.95em; max-height: 160px; overflow-y: auto; }
  .meta { align-self: flex-start; font-size: 12px; color: var(--muted); margin: 0 0 4px 4px; font-variant-numeric: tabular-nums; }
  .error { align-self: stretch; background: #fdecea; color: var(--danger); border: 1px solid #f5c6c0; border-radius: 8px;
           padding: 8px 12px; white-space: pre-wrap; word-break: break-word; }
  form { display: flex; gap: 8px; padding: 12px 28px 18px; border-top: 1px solid var(--line); background: var(--panel); }
  #prompt { flex: 1; resize: none; height: 64px; }
  button { font: inherit; padding: 0 18px; border-radius: 8px; border: 1px solid var(--line); background: #fff; cursor: pointer; }
  button:disabled { opacity: 0.45; cursor: default; }
  #send { background: var(--accent); border-color: var(--accent); color: #fff; }
  #stop { color: var(--danger); }
  #clear { padding: 6px 12px; align-self: flex-start; }
  .hint { font-size: 12px; color: var(--muted); }
</style>
</head>
<body>
<aside>
  <h1>SwiftMind chat</h1>
  <div class="model" id="model">model: …</div>
  <div>
    <label for="system">System prompt</label>
    <textarea id="system" rows="4" placeholder="(none)"></textarea>
  </div>
  <div>
    <label for="temperature">temperature <output id="temperature_out"></output></label>
    <input type="range" id="temperature" min="0" max="2" step="0.05" value="0.85">
  </div>
  <div>
    <label for="top_p">top_p <output id="top_p_out"></output></label>
    <input type="range" id="top_p" min="0.05" max="1" step="0.05" value="0.85">
  </div>
  <div>
    <label for="max_tokens">max_tokens <output id="max_tokens_out"></output></label>
    <input type="range" id="max_tokens" min="1" max="8192" step="1" value="512">
  </div>
  <div>
    <label for="api_key">API key</label>
    <input type="password" id="api_key" autocomplete="off" placeholder="only if the server has --api-key">
  </div>
  <button type="button" id="clear">New conversation</button>
  <div class="hint">Enter sends, Shift+Enter starts a new line. Replies stream from this server's
    /v1/chat/completions; Stop cancels the generation.</div>
</aside>
<main>
  <div id="messages"><div class="empty" id="empty">Type a message below to start.</div></div>
  <form id="composer">
    <textarea id="prompt" placeholder="Message" autofocus></textarea>
    <button type="submit" id="send">Send</button>
    <button type="button" id="stop" disabled>Stop</button>
  </form>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const messagesEl = $("messages"), promptEl = $("prompt"), sendBtn = $("send"), stopBtn = $("stop");
/** The conversation sent with every request: {role, content} of the finished turns. */
let history = [];
/** The AbortController of the request in flight, or null. */
let inFlight = null;
/** Incremented by "New conversation": a reply of an earlier conversation that ends later is not added to history. */
let conversation = 0;

for (const id of ["temperature", "top_p", "max_tokens"]) {
  const input = $(id), out = $(id + "_out");
  const show = () => { out.textContent = input.value; };
  input.addEventListener("input", show);
  show();
}

// The model name and context length from GET /health (open without a key); max_tokens cannot exceed the context.
fetch("/health").then(r => r.json()).then(h => {
  if (h.model) $("model").textContent = "model: " + h.model;
  if (h.context_length) {
    const m = $("max_tokens");
    m.max = String(h.context_length);
    if (Number(m.value) > h.context_length) m.value = String(h.context_length);
    $("max_tokens_out").textContent = m.value;
  }
}).catch(() => {});

function add(cls, text) {
  const empty = $("empty");
  if (empty) empty.remove();
  const el = document.createElement("div");
  el.className = cls;
  if (text !== undefined) el.textContent = text;
  messagesEl.appendChild(el);
  messagesEl.scrollTop = messagesEl.scrollHeight;
  return el;
}

function showError(text) { return add("error", text); }

/**
 * Splits a reply into text and reasoning segments: `<think>…</think>` blocks, a block still open at the end, and
 * (as MiniMind's demo does) a `</think>` with no opening tag, whose preceding text is the reasoning.
 */
function segments(text) {
  const OPEN = "<think>", CLOSE = "</think>";
  const out = [];
  let rest = text;
  const c0 = rest.indexOf(CLOSE), o0 = rest.indexOf(OPEN);
  if (c0 >= 0 && (o0 < 0 || c0 < o0)) {
    out.push({ think: true, text: rest.slice(0, c0), done: true });
    rest = rest.slice(c0 + CLOSE.length);
  }
  while (rest.length > 0) {
    const o = rest.indexOf(OPEN);
    if (o < 0) { out.push({ think: false, text: rest }); break; }
    if (o > 0) out.push({ think: false, text: rest.slice(0, o) });
    rest = rest.slice(o + OPEN.length);
    const c = rest.indexOf(CLOSE);
    if (c < 0) { out.push({ think: true, text: rest, done: false }); break; }
    out.push({ think: true, text: rest.slice(0, c), done: true });
    rest = rest.slice(c + CLOSE.length);
  }
  // A finished block with nothing in it is not shown; neither is the blank line usually following a block.
  return out.map((s, i) => s.think ? { ...s, text: s.text.trim() }
                                    : (i > 0 ? { ...s, text: s.text.replace(/^\n+/, "") } : s))
            .filter(s => s.think ? !(s.done && s.text === "") : s.text.length > 0);
}

/**
 * Renders `text` into the reply element `el`, reusing the existing child nodes where the kind matches, so a
 * reasoning block the reader collapsed stays collapsed while the reply grows. Text only (textContent).
 */
function render(el, text) {
  const segs = segments(text);
  const kids = Array.from(el.childNodes);
  segs.forEach((s, i) => {
    let node = kids[i];
    const want = s.think ? "DETAILS" : "SPAN";
    if (!node || node.nodeName !== want) {
      node = document.createElement(s.think ? "details" : "span");
      if (s.think) {
        node.open = true;
        node.appendChild(document.createElement("summary"));
        const body = document.createElement("div");
        body.className = "thought";
        node.appendChild(body);
      }
      if (kids[i]) el.replaceChild(node, kids[i]); else el.appendChild(node);
      kids[i] = node;
    }
    if (s.think) {
      node.firstChild.textContent = s.done ? "Thought" : "Thinking…";
      node.lastChild.textContent = s.text;
    } else if (node.textContent !== s.text) {
      node.textContent = s.text;
    }
  });
  for (let i = segs.length; i < kids.length; i++) kids[i].remove();
}

function setBusy(busy) {
  sendBtn.disabled = busy;
  stopBtn.disabled = !busy;
}

function formatMeta(tokens, seconds, note) {
  const rate = seconds > 0 ? (tokens / seconds).toFixed(1) : "–";
  return `${tokens} tokens · ${rate} tokens/s · ${seconds.toFixed(2)} s` + (note ? " · " + note : "");
}

/** The message of an OpenAI-shaped error body, else the body itself. */
function errorText(status, bodyText) {
  let msg = bodyText;
  try {
    const j = JSON.parse(bodyText);
    if (j && j.error) msg = j.error.message + (j.error.code ? ` (${j.error.code})` : "");
  } catch (_) {}
  return `Error ${status}: ${msg || "(no message)"}`;
}

async function send() {
  const text = promptEl.value;
  if (inFlight || text.trim() === "") return;
  promptEl.value = "";
  add("user", text);
  const turn = { role: "user", content: text };
  const messages = [];
  const system = $("system").value;
  if (system.trim() !== "") messages.push({ role: "system", content: system });
  messages.push(...history, turn);

  const reply = add("assistant");
  reply.dataset.state = "streaming";
  const meta = add("meta", "waiting…");
  const controller = new AbortController();
  const mine = conversation;
  inFlight = controller;
  setBusy(true);

  const headers = { "Content-Type": "application/json" };
  const key = $("api_key").value.trim();
  if (key !== "") headers["Authorization"] = "Bearer " + key;
  const body = {
    messages, stream: true, stream_options: { include_usage: true },
    temperature: Number($("temperature").value), top_p: Number($("top_p").value),
    max_tokens: Number($("max_tokens").value),
  };
  const started = performance.now();
  let content = "", chunks = 0, usageTokens = null, finish = null, failed = null;
  const elapsed = () => (performance.now() - started) / 1000;
  // Chunks can arrive by the thousand per second: the reply is redrawn at most every 30 ms, so the page stays
  // responsive however long it grows.
  let drawTimer = null;
  const draw = () => {
    drawTimer = null;
    render(reply, content);
    meta.textContent = formatMeta(chunks, elapsed(), "streaming");
    messagesEl.scrollTop = messagesEl.scrollHeight;
  };
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST", headers, body: JSON.stringify(body), signal: controller.signal });
    if (!res.ok) {
      failed = errorText(res.status, await res.text());
    } else {
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      read: while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") break read;
            let obj;
            try { obj = JSON.parse(data); } catch (_) { continue; }
            if (obj.error) { failed = "Error: " + obj.error.message; continue; }
            if (obj.usage) usageTokens = obj.usage.completion_tokens;
            const choice = obj.choices && obj.choices[0];
            if (!choice) continue;
            if (choice.finish_reason) finish = choice.finish_reason;
            const piece = choice.delta && choice.delta.content;
            if (piece) {
              content += piece;
              chunks += 1;
              if (drawTimer === null) drawTimer = setTimeout(draw, chunks === 1 ? 0 : 30);
            }
          }
        }
      }
    }
  } catch (e) {
    if (e.name === "AbortError") {
      reply.dataset.state = "stopped";
    } else {
      failed = "Network error: " + e.message;
    }
  }
  inFlight = null;
  if (drawTimer !== null) clearTimeout(drawTimer);
  render(reply, content);
  const seconds = elapsed();
  if (failed !== null) {
    reply.dataset.state = "error";
    if (content === "") { reply.remove(); meta.remove(); } else { meta.textContent = formatMeta(chunks, seconds, "failed"); }
    showError(failed);
  } else {
    if (reply.dataset.state !== "stopped") reply.dataset.state = "done";
    const tokens = usageTokens !== null ? usageTokens : chunks;
    const note = reply.dataset.state === "stopped" ? "stopped" : (finish === "length" ? "max_tokens reached" : "");
    meta.textContent = formatMeta(tokens, seconds, note);
    if (mine === conversation) history.push(turn, { role: "assistant", content });
  }
  messagesEl.scrollTop = messagesEl.scrollHeight;
  setBusy(false);
  promptEl.focus();
}

$("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
promptEl.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
});
stopBtn.addEventListener("click", () => { if (inFlight) inFlight.abort(); });
$("clear").addEventListener("click", () => {
  if (inFlight) inFlight.abort();
  conversation += 1;
  history = [];
  messagesEl.textContent = "";
  const empty = document.createElement("div");
  empty.className = "empty"; empty.id = "empty"; empty.textContent = "Type a message below to start.";
  messagesEl.appendChild(empty);
});
</script>
</body>
</html>
"""#
}
