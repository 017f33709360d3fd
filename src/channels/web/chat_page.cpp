#include "channels/web/chat_page.h"

namespace moat::channels {

std::string_view chat_html() {
  return R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>moat chat</title>
<link rel="stylesheet" href="/chat.css">
<script src="/chat.js" defer></script>
</head>
<body>
<header>
  <h1>moat</h1>
  <label for="agent">Agent</label>
  <select id="agent" aria-label="agent"></select>
  <span id="status" role="status">connecting…</span>
</header>
<main id="log" aria-live="polite"></main>
<form id="form" autocomplete="off">
  <textarea id="text" rows="2" placeholder="Message (Enter sends, Shift+Enter for a new line)"></textarea>
  <button id="send" type="submit">Send</button>
</form>
</body>
</html>
)HTML";
}

std::string_view chat_script() {
  return R"JS('use strict';
// moat web chat. Agent text is only ever set with textContent: nothing from the server is parsed as HTML.
(function () {
  const $ = (id) => document.getElementById(id);
  const log = $('log');
  const seen = new Set();   // message keys already shown (SSE replays and retries repeat them)
  const turns = new Map();  // chat -> [turn blocks not yet replaced by their durable reply]
  let lastKey = '';

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setStatus(text, error) {
    const s = $('status');
    s.textContent = text;
    s.className = error ? 'error' : '';
  }
  function scroll() { log.scrollTop = log.scrollHeight; }

  function bubble(role, agent) {
    const box = el('div', 'msg ' + role);
    box.appendChild(el('div', 'who', role === 'user' ? 'you → ' + agent : agent));
    const tools = el('div', 'tools');
    const text = el('div', 'text');
    box.appendChild(tools);
    box.appendChild(text);
    log.appendChild(box);
    scroll();
    return { el: box, tools: tools, text: text, ended: false };
  }

  function summarize(input) {
    let s;
    if (input && typeof input === 'object' && !Array.isArray(input)) {
      s = Object.keys(input).map((k) => {
        let v = input[k];
        v = typeof v === 'string' ? v : JSON.stringify(v);
        if (v && v.length > 60) v = v.slice(0, 60) + '…';
        return k + '=' + v;
      }).join(', ');
    } else {
      s = input === undefined ? '' : JSON.stringify(input);
    }
    return s.length > 160 ? s.slice(0, 160) + '…' : s;
  }

  function addMessage(m) {
    if (!m || !m.key || seen.has(m.key)) return;
    seen.add(m.key);
    lastKey = m.key;
    if (m.role === 'agent') {
      // The durable reply replaces the text streamed for the oldest open turn of that chat.
      const open = turns.get(m.chat);
      if (open && open.length) {
        const t = open.shift();
        t.text.textContent = m.text;
        t.el.dataset.key = m.key;
        t.el.classList.remove('streaming');
        if (m.is_error) t.el.classList.add('error');
        return;
      }
    }
    const b = bubble(m.role, m.agent);
    b.text.textContent = m.text;
    b.el.dataset.key = m.key;
    if (m.is_error) b.el.classList.add('error');
  }

  function onLive(ev) {
    let open = turns.get(ev.chat);
    if (!open) { open = []; turns.set(ev.chat, open); }
    let t = open[open.length - 1];
    if (!t || t.ended) {
      t = bubble('agent', ev.agent);
      t.el.classList.add('streaming');
      open.push(t);
    }
    const d = ev.data || {};
    switch (ev.kind) {
      case 'text':
        t.text.textContent += d.text || '';
        break;
      case 'tool_call': {
        const call = el('div', 'tool tool-call');
        call.appendChild(el('span', 'tool-name', d.name || 'tool'));
        call.appendChild(el('span', 'tool-input', summarize(d.input)));
        t.tools.appendChild(call);
        break;
      }
      case 'tool_result': {
        const res = el('details', 'tool tool-result' + (d.is_error ? ' error' : ''));
        res.appendChild(el('summary', null, (d.is_error ? 'failed: ' : 'result: ') + (d.name || 'tool')));
        const out = typeof d.output === 'string' ? d.output : JSON.stringify(d.output, null, 2);
        res.appendChild(el('pre', null, out || ''));
        t.tools.appendChild(res);
        break;
      }
      case 'turn_ended':
        t.ended = true;
        break;
      default:
        break;
    }
    scroll();
  }

  function randomId() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  async function post(body) {
    // Resubmitting with the same client_id is safe: the server treats it as a duplicate.
    let lastError = null;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const r = await fetch('/api/messages', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', 'X-Moat': '1' },
          body: JSON.stringify(body),
          credentials: 'same-origin',
        });
        const j = await r.json().catch(() => ({}));
        if (r.ok) return j;
        lastError = j.error || ('HTTP ' + r.status);
        if (r.status < 500) break;
      } catch (e) {
        lastError = String(e);
      }
      await new Promise((res) => setTimeout(res, 500 * (attempt + 1)));
    }
    throw new Error(lastError || 'send failed');
  }

  async function send(ev) {
    if (ev) ev.preventDefault();
    const text = $('text').value.trim();
    const agent = $('agent').value;
    if (!text) return;
    if (!agent) { setStatus('pick an agent first', true); return; }
    const clientId = randomId();
    addMessage({ key: 'u:' + clientId, role: 'user', agent: agent, chat: '', text: text });
    $('text').value = '';
    try {
      const r = await post({ agent: agent, text: text, client_id: clientId });
      if (r.outcome === 'held') setStatus('waiting for approval: ask the owner to run  moat approve ' + (r.pairing_code || ''));
      else if (r.outcome === 'dropped') setStatus('not delivered: ' + (r.reason || 'no route'), true);
      else setStatus('sent');
    } catch (e) {
      setStatus('not sent: ' + e.message, true);
    }
  }

  function connect() {
    const url = '/api/events' + (lastKey ? '?after=' + encodeURIComponent(lastKey) : '');
    const es = new EventSource(url);
    es.addEventListener('ready', () => setStatus('connected'));
    es.addEventListener('message', (e) => { try { addMessage(JSON.parse(e.data)); } catch (_) {} });
    es.addEventListener('live', (e) => { try { onLive(JSON.parse(e.data)); } catch (_) {} });
    es.onerror = () => setStatus('reconnecting…', true);
  }

  async function start() {
    $('form').addEventListener('submit', send);
    $('text').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey) send(e);
    });
    try {
      const a = await (await fetch('/api/agents', { credentials: 'same-origin' })).json();
      const sel = $('agent');
      for (const ag of a.agents || []) {
        const o = el('option', null, ag.description ? ag.name + ' — ' + ag.description : ag.name);
        o.value = ag.name;
        sel.appendChild(o);
      }
      if (!(a.agents || []).length) setStatus('no agents are configured', true);
      const h = await (await fetch('/api/history', { credentials: 'same-origin' })).json();
      for (const m of h.messages || []) addMessage(m);
    } catch (e) {
      setStatus('cannot load: ' + e, true);
    }
    connect();
  }
  start();
})();
)JS";
}

std::string_view chat_style() {
  return R"CSS(* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; display: flex; flex-direction: column; height: 100vh;
       background: #f6f7f9; color: #1d2330; }
header { display: flex; gap: .6em; align-items: center; padding: .5em 1em; background: #1d2330; color: #fff; }
header h1 { font-size: 1.1em; margin: 0 1em 0 0; }
#status { margin-left: auto; font-size: .85em; opacity: .85; }
#status.error { color: #ffb4b4; }
#log { flex: 1; overflow-y: auto; padding: 1em; display: flex; flex-direction: column; gap: .6em; }
.msg { max-width: 80%; padding: .5em .8em; border-radius: 10px; background: #fff; box-shadow: 0 1px 2px #0002; }
.msg.user { align-self: flex-end; background: #dbe8ff; }
.msg.agent.streaming { border-left: 3px solid #6b8cff; }
.msg.error { background: #ffe3e3; }
.who { font-size: .75em; opacity: .6; }
.text { white-space: pre-wrap; word-break: break-word; }
.tools:empty { display: none; }
.tool { font: 12px/1.4 ui-monospace, monospace; background: #eef0f4; border-radius: 6px; padding: .25em .5em; margin: .2em 0; }
.tool-name { font-weight: bold; margin-right: .5em; }
.tool-result.error summary { color: #a00; }
.tool pre { white-space: pre-wrap; max-height: 20em; overflow: auto; margin: .3em 0 0; }
form { display: flex; gap: .5em; padding: .6em 1em; background: #fff; border-top: 1px solid #dde; }
textarea { flex: 1; font: inherit; padding: .4em; resize: vertical; }
button { padding: 0 1.2em; font: inherit; }
)CSS";
}

}  // namespace moat::channels
