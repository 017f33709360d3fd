// A stand-in for the Telegram Bot API (https://core.telegram.org/bots/api), for moat's channel tests.
// It speaks the documented wire format and keeps the platform's behaviour where a channel can get it
// wrong: updates kept until an offset above them confirms them, one long poller at a time (the older
// one gets 409), 409 while a webhook is set, webhook deliveries retried until answered 2xx (so a slow
// or failing receiver sees repeats), the secret-token header, privacy mode in groups, 4096 UTF-16 units
// per message, "message is not modified", 429 with parameters.retry_after, 401 for a bad token.
// checks/telegram.mjs runs grammY, a real client, against it: a stand-in grammY cannot use is a bug.
//
// In-process: `const tg = new TelegramStandIn(opts); await tg.start();` then tg.url is the API root.
// Out of process (for the C++ tests): `node telegram.mjs [--port N] [--token T]` prints one JSON line
// {"url": ...} and takes control requests at POST /_control/<verb> with a JSON body (see control()).
import http from 'node:http';
import { EventEmitter } from 'node:events';
import { readBody, sendJson, serveFromCommandLine } from './common.mjs';

const NOT_MODIFIED =
  'Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message';

export class TelegramStandIn extends EventEmitter {
  constructor({ token = '123456:moat-test-token', botId = 123456, username = 'moat_test_bot', privacyMode = true } = {}) {
    super();
    this.token = token;
    this.bot = { id: botId, is_bot: true, first_name: 'moat test bot', username };
    this.privacyMode = privacyMode;
    this.updates = [];        // unconfirmed updates, in update_id order
    this.nextUpdateId = 1000;
    this.nextMessageId = 1;
    this.chats = new Map();   // id -> chat
    this.messages = new Map(); // `${chat}:${id}` -> message (everyone's)
    this.sent = [];           // every message the bot sent, with its edits: {chat_id, message_id, text, edits: []}
    this.actions = [];        // sendChatAction calls
    this.calls = [];          // every method call: {method, params}
    this.files = new Map();   // file_id -> {file_path, data}
    this.faults = [];         // {method, times, code, description, retry_after, delay_ms}
    this.poller = null;       // the pending getUpdates: {res, timer}
    this.webhook = null;      // {url, secret_token, pending: bool, last_error_message, last_error_date}
    this.deliveries = [];     // webhook deliveries: {update_id, status}
  }

  async start(port = 0) {
    this.server = http.createServer((req, res) => this.#handle(req, res).catch((e) => {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: false, error_code: 500, description: `Internal Server Error: ${e.message}` }));
    }));
    await new Promise((resolve) => this.server.listen(port, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  async stop() {
    if (this.poller) this.#answerPoll([]);
    clearTimeout(this.webhookTimer);
    this.webhook = null;
    this.server.closeAllConnections?.();
    await new Promise((resolve) => this.server.close(resolve));
  }

  // --- what people do on the platform ---------------------------------------------------------

  // A chat the bot is in: {id, type: 'private'|'group'|'supergroup', title?, first_name?}.
  chat(chat) {
    const c = { ...chat };
    this.chats.set(c.id, c);
    return c;
  }

  // Someone writes in a chat; returns the message. In a group under privacy mode the bot gets it only
  // when it is a command, mentions the bot by username or replies to one of the bot's messages.
  userSays({ chat, from = { id: 42, is_bot: false, first_name: 'Ada' }, text, replyTo, document }) {
    const c = this.chats.get(chat.id) ?? this.chat(chat);
    const message = { message_id: this.nextMessageId++, from, chat: c, date: now(), text };
    if (!text) delete message.text;
    const mention = `@${this.bot.username}`;
    const entities = [];
    if (text) {
      for (let at = text.indexOf(mention); at >= 0; at = text.indexOf(mention, at + 1))
        entities.push({ type: 'mention', offset: at, length: mention.length });
      if (text.startsWith('/')) entities.push({ type: 'bot_command', offset: 0, length: text.split(/\s/)[0].length });
    }
    if (entities.length) message.entities = entities;
    if (replyTo) message.reply_to_message = this.messages.get(`${c.id}:${replyTo}`);
    if (document) {
      const file_id = `file-${this.files.size + 1}`;
      this.files.set(file_id, { file_path: `documents/${document.name}`, data: Buffer.from(document.data) });
      message.document = { file_id, file_unique_id: `u${file_id}`, file_name: document.name, file_size: document.data.length };
    }
    this.messages.set(`${c.id}:${message.message_id}`, message);
    if (this.#visible(message)) this.#push({ message });
    return message;
  }

  // Someone edits their message: an edited_message update.
  userEdits({ chat, message_id, text }) {
    const m = this.messages.get(`${chat.id}:${message_id}`);
    const edited = { ...m, text, edit_date: now() };
    this.messages.set(`${chat.id}:${message_id}`, edited);
    if (this.#visible(edited)) this.#push({ edited_message: edited });
    return edited;
  }

  #visible(message) {
    if (message.chat.type === 'private' || !this.privacyMode) return true;
    if (message.entities?.some((e) => e.type === 'bot_command' || e.type === 'mention')) return true;
    return message.reply_to_message?.from?.id === this.bot.id;
  }

  #push(update) {
    this.updates.push({ update_id: this.nextUpdateId++, ...update });
    if (this.poller) this.#answerPoll(this.#pending(this.poller.offset, this.poller.limit));
    if (this.webhook) this.#deliverSoon(0);
  }

  // --- faults ----------------------------------------------------------------------------------

  // The next `times` calls of `method` fail with `code` (429 carries retry_after) or are delayed.
  fault({ method, times = 1, code, description, retry_after, delay_ms }) {
    this.faults.push({ method, times, code, description, retry_after, delay_ms });
  }

  // Another process long-polls with the same token (a second bot instance): a pending poll ends in 409.
  conflict() {
    if (this.poller) this.#conflictPoll();
  }

  // --- the Bot API -----------------------------------------------------------------------------

  async #handle(req, res) {
    const url = new URL(req.url, this.url);
    const body = await readBody(req);
    if (url.pathname.startsWith('/_control/')) return this.#control(url.pathname.slice(10), body, res);
    const file = url.pathname.match(/^\/file\/bot([^/]+)\/(.+)$/);
    if (file) {
      if (file[1] !== this.token) return reply(res, 401, { ok: false, error_code: 401, description: 'Unauthorized' });
      const found = [...this.files.values()].find((f) => f.file_path === decodeURIComponent(file[2]));
      if (!found) return reply(res, 404, { ok: false, error_code: 404, description: 'Not Found' });
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': found.data.length });
      return res.end(found.data);
    }
    const m = url.pathname.match(/^\/bot([^/]+)\/([A-Za-z]+)$/);
    if (!m) return reply(res, 404, { ok: false, error_code: 404, description: 'Not Found' });
    if (m[1] !== this.token) return reply(res, 401, { ok: false, error_code: 401, description: 'Unauthorized' });
    const method = m[2];
    const params = parseParams(url, req.headers['content-type'] ?? '', body);
    this.calls.push({ method, params });
    const fault = this.faults.find((f) => f.method === method && f.times > 0);
    if (fault) {
      fault.times--;
      if (fault.delay_ms) await sleep(fault.delay_ms);
      if (fault.code) {
        const out = { ok: false, error_code: fault.code, description: fault.description ?? describe(fault) };
        if (fault.retry_after !== undefined) out.parameters = { retry_after: fault.retry_after };
        return reply(res, fault.code, out);
      }
    }
    const handler = this.methods[method.toLowerCase()];
    if (!handler) return reply(res, 404, { ok: false, error_code: 404, description: 'Not Found' });
    const out = await handler.call(this, params, res);
    if (out === undefined) return; // answered later (a long poll)
    if (out.error) return reply(res, out.error, { ok: false, error_code: out.error, description: out.description });
    return reply(res, 200, { ok: true, result: out.result });
  }

  methods = {
    getme() {
      return { result: { ...this.bot, can_join_groups: true, can_read_all_group_messages: !this.privacyMode, supports_inline_queries: false } };
    },
    getupdates(p, res) {
      if (this.webhook)
        return err(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first");
      const offset = p.offset === undefined ? undefined : Number(p.offset);
      const limit = Math.min(Math.max(Number(p.limit ?? 100), 1), 100);
      // An offset confirms every update below it; a negative one keeps only the last -offset.
      if (offset !== undefined && offset < 0) this.updates = this.updates.slice(offset);
      else if (offset !== undefined) this.updates = this.updates.filter((u) => u.update_id >= offset);
      if (this.poller) this.#conflictPoll();
      const ready = this.#pending(offset, limit);
      const timeout = Number(p.timeout ?? 0);
      if (ready.length || timeout <= 0) return { result: ready };
      this.poller = { res, offset, limit, timer: setTimeout(() => this.#answerPoll([]), timeout * 1000) };
      res.on('close', () => { if (this.poller?.res === res) { clearTimeout(this.poller.timer); this.poller = null; } });
      return undefined;
    },
    setwebhook(p) {
      if (!p.url) return this.methods.deletewebhook.call(this, p);
      if (p.secret_token !== undefined && !/^[A-Za-z0-9_-]{1,256}$/.test(p.secret_token))
        return err(400, 'Bad Request: secret token contains unallowed characters');
      if (p.drop_pending_updates === true || p.drop_pending_updates === 'true') this.updates = [];
      if (this.poller) this.#conflictPoll();
      this.webhook = { url: p.url, secret_token: p.secret_token, last_error_message: undefined, last_error_date: undefined };
      this.#deliverSoon(0);
      return { result: true };
    },
    deletewebhook(p) {
      if (p.drop_pending_updates === true || p.drop_pending_updates === 'true') this.updates = [];
      this.webhook = null;
      clearTimeout(this.webhookTimer);
      return { result: true };
    },
    getwebhookinfo() {
      const w = this.webhook;
      const info = { url: w?.url ?? '', has_custom_certificate: false, pending_update_count: this.updates.length };
      if (w?.last_error_date) Object.assign(info, { last_error_date: w.last_error_date, last_error_message: w.last_error_message });
      return { result: info };
    },
    sendmessage(p) {
      const chat = this.#chatOf(p.chat_id);
      if (!chat) return err(400, 'Bad Request: chat not found');
      const text = p.text === undefined ? '' : String(p.text);
      if (!text.length) return err(400, 'Bad Request: message text is empty');
      if (text.length > 4096) return err(400, 'Bad Request: message is too long'); // JS length: UTF-16 units
      const message = { message_id: this.nextMessageId++, from: this.bot, chat, date: now(), text };
      const replyTo = p.reply_parameters?.message_id ?? p.reply_to_message_id;
      if (replyTo !== undefined) message.reply_to_message = this.messages.get(`${chat.id}:${Number(replyTo)}`);
      this.messages.set(`${chat.id}:${message.message_id}`, message);
      this.sent.push({ chat_id: chat.id, message_id: message.message_id, text, edits: [] });
      this.emit('sent', message);
      return { result: message };
    },
    editmessagetext(p) {
      const chat = this.#chatOf(p.chat_id);
      if (!chat) return err(400, 'Bad Request: chat not found');
      const key = `${chat.id}:${Number(p.message_id)}`;
      const m = this.messages.get(key);
      if (!m) return err(400, 'Bad Request: message to edit not found');
      if (m.from.id !== this.bot.id) return err(400, "Bad Request: message can't be edited");
      const text = String(p.text ?? '');
      if (!text.length) return err(400, 'Bad Request: message text is empty');
      if (text.length > 4096) return err(400, 'Bad Request: MESSAGE_TOO_LONG');
      if (text === m.text) return err(400, NOT_MODIFIED);
      const edited = { ...m, text, edit_date: now() };
      this.messages.set(key, edited);
      const s = this.sent.find((x) => x.chat_id === chat.id && x.message_id === m.message_id);
      s.edits.push(text);
      s.text = text;
      this.emit('edited', edited);
      return { result: edited };
    },
    sendchataction(p) {
      if (!this.#chatOf(p.chat_id)) return err(400, 'Bad Request: chat not found');
      this.actions.push({ chat_id: Number(p.chat_id), action: p.action });
      return { result: true };
    },
    getfile(p) {
      const f = this.files.get(p.file_id);
      if (!f) return err(400, 'Bad Request: invalid file_id');
      if (f.data.length > 20 * 1024 * 1024) return err(400, 'Bad Request: file is too big');
      return { result: { file_id: p.file_id, file_unique_id: `u${p.file_id}`, file_size: f.data.length, file_path: f.file_path } };
    },
  };

  #chatOf(id) {
    return this.chats.get(Number(id));
  }

  #pending(offset, limit) {
    return this.updates.filter((u) => offset === undefined || offset < 0 || u.update_id >= offset).slice(0, limit);
  }

  #answerPoll(result) {
    const p = this.poller;
    if (!p) return;
    this.poller = null;
    clearTimeout(p.timer);
    reply(p.res, 200, { ok: true, result });
  }

  #conflictPoll() {
    const p = this.poller;
    this.poller = null;
    clearTimeout(p.timer);
    reply(p.res, 409, {
      ok: false,
      error_code: 409,
      description: 'Conflict: terminated by other getUpdates request; make sure that only one bot instance is running',
    });
  }

  // Webhook delivery: one update at a time, in order; anything but a 2xx within 10 s is retried (with
  // a growing pause), so a receiver that stored an update but answered late sees it again.
  #deliverSoon(ms) {
    clearTimeout(this.webhookTimer);
    this.webhookTimer = setTimeout(() => this.#deliver().catch(() => {}), ms);
  }

  async #deliver() {
    const w = this.webhook;
    if (!w || this.delivering || !this.updates.length) return;
    this.delivering = true;
    const update = this.updates[0];
    let status = 0;
    try {
      const headers = { 'content-type': 'application/json' };
      if (w.secret_token) headers['x-telegram-bot-api-secret-token'] = w.secret_token;
      const r = await fetch(w.url, { method: 'POST', headers, body: JSON.stringify(update), signal: AbortSignal.timeout(10000) });
      status = r.status;
      await r.arrayBuffer();
    } catch (e) {
      w.last_error_message = `Connection failed: ${e.message}`;
    }
    this.delivering = false;
    this.deliveries.push({ update_id: update.update_id, status });
    if (this.webhook !== w) return;
    if (status >= 200 && status < 300) {
      this.updates = this.updates.filter((u) => u.update_id !== update.update_id);
      w.failures = 0;
      this.#deliverSoon(0);
    } else {
      if (status) w.last_error_message = `Wrong response from the webhook: ${status}`;
      w.last_error_date = now();
      w.failures = (w.failures ?? 0) + 1;
      this.#deliverSoon(Math.min(100 * 2 ** w.failures, 5000));
    }
  }

  // --- control, for tests in another process ----------------------------------------------------

  #control(verb, body, res) {
    const p = body.length ? JSON.parse(body.toString()) : {};
    const verbs = {
      chat: () => this.chat(p),
      say: () => this.userSays(p),
      edit: () => this.userEdits(p),
      fault: () => (this.fault(p), true),
      conflict: () => (this.conflict(), true),
      privacy: () => ((this.privacyMode = Boolean(p.on)), true),
      state: () => ({ sent: this.sent, actions: this.actions, pending: this.updates.length, deliveries: this.deliveries, calls: this.calls.length }),
      polling: () => this.poller !== null,  // a long poll is parked here (benchmarks wait for it)
    };
    if (!verbs[verb]) return reply(res, 404, { error: `unknown control verb ${verb}` });
    return reply(res, 200, verbs[verb]());
  }
}

function err(code, description) {
  return { error: code, description };
}

function describe(f) {
  if (f.code === 429) return `Too Many Requests: retry after ${f.retry_after ?? 1}`;
  if (f.code === 401) return 'Unauthorized';
  if (f.code === 409) return 'Conflict: terminated by other getUpdates request; make sure that only one bot instance is running';
  return 'Internal Server Error';
}

const reply = sendJson;

function now() {
  return Math.floor(Date.now() / 1000);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}


// The Bot API takes parameters as a query string, urlencoded or JSON bodies, or multipart/form-data.
function parseParams(url, type, body) {
  const p = Object.fromEntries(url.searchParams);
  if (type.startsWith('application/json') && body.length) Object.assign(p, JSON.parse(body.toString()));
  else if (type.startsWith('application/x-www-form-urlencoded')) Object.assign(p, Object.fromEntries(new URLSearchParams(body.toString())));
  else if (type.startsWith('multipart/form-data')) Object.assign(p, parseMultipart(type, body));
  for (const k of ['reply_parameters', 'allowed_updates'])
    if (typeof p[k] === 'string' && p[k].startsWith('{')) p[k] = JSON.parse(p[k]);
  return p;
}

function parseMultipart(type, body) {
  const boundary = type.match(/boundary=("?)([^";]+)\1/)?.[2];
  const out = {};
  if (!boundary) return out;
  for (const part of body.toString('latin1').split(`--${boundary}`)) {
    const m = part.match(/name="([^"]+)"(?:; filename="[^"]*")?\r\n(?:[^\r\n]+\r\n)*\r\n([\s\S]*)\r\n$/);
    if (m) out[m[1]] = Buffer.from(m[2], 'latin1').toString();
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await serveFromCommandLine(({ token }) => new TelegramStandIn({ token }), (s) => ({ url: s.url, token: s.token }));
}
