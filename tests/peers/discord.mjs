// A stand-in for Discord's REST API and Gateway v10 (https://discord.com/developers/docs), for moat's
// channel tests. It keeps the platform's behaviour where a channel can get it wrong:
//   Gateway: HELLO with a heartbeat interval, heartbeat ACKs (which a fault can withhold), IDENTIFY with
//   intents (MESSAGE_CONTENT is privileged: without it, content is empty except in DMs and mentions),
//   READY with session_id and resume_gateway_url, a sequence number on every dispatch, RESUME on the
//   resume URL replaying what came after the client's sequence then RESUMED, op 7 RECONNECT, op 9
//   INVALID SESSION, fatal close codes (4004 bad token, 4013/4014 intents), a dropped TCP connection
//   (1006, no close frame), and a missed heartbeat closing the session.
//   GUILD_CREATE after READY for each guild the bot is in, with the bot's member (its roles, for role
//   mentions).
//   REST: Bot-token auth, create/edit message with nonce + enforce_nonce (a repeated nonce returns the
//   message already made, within the nonce window), 2000 characters per message, message history
//   (before/after/limit, newest first), typing, rate-limit headers and 429 with retry_after (per
//   route bucket and global).
// checks/discord.mjs runs @discordjs/ws and @discordjs/rest, real clients, against it.
//
// In-process: `const d = new DiscordStandIn(opts); await d.start();` (d.url is the REST/Gateway base).
// Out of process: `node discord.mjs [--port N] [--token T]` prints {"url", "gateway"} and takes control
// requests at POST /_control/<verb> (see #control).
import http from 'node:http';
import { EventEmitter } from 'node:events';
import { createHash } from 'node:crypto';
import { readBody, sendJson, serveFromCommandLine } from './common.mjs';
import { WebSocketServer } from 'ws';

const EPOCH = 1420070400000n;
export const Intents = { GUILDS: 1 << 0, GUILD_MESSAGES: 1 << 9, DIRECT_MESSAGES: 1 << 12, MESSAGE_CONTENT: 1 << 15 };
const KNOWN_INTENTS = (1 << 26) - 1;
const NONCE_WINDOW_MS = 5 * 60 * 1000; // Discord keeps nonces "a few minutes"; the stand-in says five

export class DiscordStandIn extends EventEmitter {
  constructor({ token = 'moat-discord-test-token', botId = '1100000000000000001', username = 'moat-bot',
                messageContentAllowed = true, heartbeatInterval = 41250 } = {}) {
    super();
    this.token = token;
    this.bot = { id: botId, username, discriminator: '0', global_name: null, bot: true, avatar: null };
    this.messageContentAllowed = messageContentAllowed;
    this.heartbeatInterval = heartbeatInterval;
    this.counter = 0n;
    this.channels = new Map();  // id -> {id, type, guild_id?, messages: [] (oldest first)}
    this.guilds = new Map();    // id -> {id, name, botRoles: [role ids]}
    this.sessions = new Map();  // session_id -> {seq, events: [{s, t, d}], intents, socket}
    this.sockets = new Set();
    this.sent = [];             // messages the bot made through REST, with their edits
    this.files = new Map();     // CDN path -> {data, type}: files people attached
    this.typing = [];
    this.nonces = new Map();    // `${channel}:${nonce}` -> {message, at}
    this.faults = [];           // REST: {route, times, code, retry_after, global}
    this.withholdAcks = false;
    this.identifies = 0;
    this.nonceRepeats = 0;     // creates answered with the message an earlier one made (same nonce)
    this.resumes = 0;
    this.buckets = new Map();   // bucket -> {remaining, resetAt}
    this.routeLimit = 5;        // per bucket per window, like Discord's message route
    this.routeWindowMs = 5000;
  }

  async start(port = 0) {
    this.server = http.createServer((req, res) => this.#rest(req, res).catch((e) => json(res, 500, { message: e.message, code: 0 })));
    this.wss = new WebSocketServer({ noServer: true, maxPayload: 4096 * 1024 });
    this.server.on('upgrade', (req, socket, head) => {
      const url = new URL(req.url, 'http://x');
      if (url.searchParams.get('v') !== '10' || (url.searchParams.get('encoding') ?? 'json') !== 'json') {
        // Discord accepts the upgrade, then closes with 4012 for an API version it does not serve.
        return this.wss.handleUpgrade(req, socket, head, (ws) => ws.close(4012, 'Invalid API version'));
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.#gateway(ws));
    });
    await new Promise((resolve) => this.server.listen(port, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    this.gatewayUrl = `ws://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  async stop() {
    for (const ws of this.sockets) ws.terminate();
    this.wss.close();
    this.server.closeAllConnections?.();
    await new Promise((resolve) => this.server.close(resolve));
  }

  snowflake() {
    const id = ((BigInt(Date.now()) - EPOCH) << 22n) | (this.counter++ & 0xfffn);
    return id.toString();
  }

  // --- what people do on the platform ---------------------------------------------------------

  // A channel the bot can see: {id, type: 0 (guild text) | 1 (DM), guild_id?}.
  channel(c) {
    const ch = { messages: [], ...c };
    this.channels.set(ch.id, ch);
    return ch;
  }

  // A guild the bot is in, with the roles the bot has there: GUILD_CREATE to live sessions now and to
  // every session after its READY.
  guild({ id, name = 'guild', botRoles = [] }) {
    const g = { id, name, botRoles };
    this.guilds.set(id, g);
    for (const s of this.sessions.values()) if (!s.dead && (s.intents & Intents.GUILDS)) this.#send(s, 'GUILD_CREATE', this.#guildCreate(g));
    return g;
  }

  #guildCreate(g) {
    return { id: g.id, name: g.name, unavailable: false, member_count: 2, roles: g.botRoles.map((r) => ({ id: r, name: `role-${r}` })),
             members: [{ user: this.bot, roles: g.botRoles, joined_at: new Date().toISOString() }],
             channels: [...this.channels.values()].filter((c) => c.guild_id === g.id).map((c) => ({ id: c.id, type: c.type, name: `c${c.id}`, last_message_id: c.messages.at(-1)?.id ?? null })) };
  }

  // One event to one session (kept for its resumes).
  #send(s, t, d) {
    const payload = { op: 0, t, s: ++s.seq, d };
    s.events.push(payload);
    if (s.socket?.readyState === 1 && s.ready) s.socket.send(JSON.stringify(payload));
  }

  // Someone writes; a MESSAGE_CREATE goes to every identified session whose intents cover it.
  userSays({ channel, author = { id: '2200000000000000002', username: 'ada', discriminator: '0', global_name: 'Ada' }, content,
             mentionBot = false, mentionRoles = [], replyTo, files = [] }) {
    const ch = this.channels.get(channel.id) ?? this.channel(channel);
    // Files go to the CDN (here: /attachments/<channel>/<id>/<name> on this server, no auth, as Discord's).
    const attachments = files.map((f) => {
      const id = this.snowflake();
      const data = Buffer.from(f.data ?? '');
      this.files.set(`/attachments/${ch.id}/${id}/${f.name}`, { data, type: f.content_type ?? 'application/octet-stream' });
      const url = `${this.url}/attachments/${ch.id}/${id}/${encodeURIComponent(f.name)}?ex=1&is=1&hm=stand-in`;
      return { id, filename: f.name, size: data.length, url, proxy_url: url, content_type: f.content_type };
    });
    const m = {
      id: this.snowflake(), channel_id: ch.id, author, content, timestamp: new Date().toISOString(), edited_timestamp: null,
      tts: false, mention_everyone: false, mentions: mentionBot ? [this.bot] : [], mention_roles: mentionRoles,
      attachments, embeds: [], pinned: false, type: replyTo ? 19 : 0,
    };
    if (ch.guild_id) m.guild_id = ch.guild_id;
    if (replyTo) {
      const ref = ch.messages.find((x) => x.id === replyTo);
      m.message_reference = { message_id: replyTo, channel_id: ch.id, guild_id: ch.guild_id };
      m.referenced_message = ref ?? null;
      if (ref?.author.id === this.bot.id && !m.mentions.length) m.mentions = [this.bot];
    }
    ch.messages.push(m);
    this.dispatch('MESSAGE_CREATE', m);
    return m;
  }

  // Sends an event to every live session (and keeps it for resumes).
  dispatch(t, d) {
    for (const s of this.sessions.values()) {
      if (t === 'MESSAGE_CREATE' && !this.#wants(s, d)) continue;
      const s_ = ++s.seq;
      const payload = { op: 0, t, s: s_, d: this.#shape(s, d) };
      s.events.push(payload);
      if (s.socket?.readyState === 1 && s.ready) s.socket.send(JSON.stringify(payload));
    }
  }

  #wants(s, m) {
    return m.guild_id ? (s.intents & Intents.GUILD_MESSAGES) !== 0 : (s.intents & Intents.DIRECT_MESSAGES) !== 0;
  }

  // Without the MESSAGE_CONTENT intent a bot sees content only in DMs and messages that mention it.
  #shape(s, d) {
    if (!d.content || (s.intents & Intents.MESSAGE_CONTENT) || !d.guild_id || d.mentions?.some((u) => u.id === this.bot.id)) return d;
    return { ...d, content: '' };
  }

  // --- faults ----------------------------------------------------------------------------------

  drop() { for (const ws of this.sockets) ws.terminate(); }              // 1006: no close frame
  reconnect() { this.#each((ws) => ws.send(JSON.stringify({ op: 7, d: null }))); }
  invalidate(resumable = false) {                                        // op 9
    this.#each((ws) => ws.send(JSON.stringify({ op: 9, d: resumable })));
    if (!resumable) for (const s of this.sessions.values()) s.dead = true;
  }
  close(code, reason = '') { this.#each((ws) => ws.close(code, reason)); }
  fault({ route, times = 1, code = 429, retry_after = 1, global = false }) { this.faults.push({ route, times, code, retry_after, global }); }
  #each(fn) { for (const ws of this.sockets) if (ws.readyState === 1) fn(ws); }

  // --- Gateway ---------------------------------------------------------------------------------

  #gateway(ws) {
    this.sockets.add(ws);
    const conn = { session: null, lastBeat: Date.now() };
    ws.send(JSON.stringify({ op: 10, d: { heartbeat_interval: this.heartbeatInterval }, s: null, t: null }));
    // A connection that stops heartbeating is closed (Discord allows the interval plus some slack).
    const watchdog = setInterval(() => {
      if (Date.now() - conn.lastBeat > this.heartbeatInterval * 1.5) ws.close(4009, 'Session timed out');
    }, Math.max(50, this.heartbeatInterval / 4));
    ws.on('close', () => {
      clearInterval(watchdog);
      this.sockets.delete(ws);
      if (conn.session && conn.session.socket === ws) conn.session.socket = null;
    });
    ws.on('message', (raw) => {
      let p;
      try { p = JSON.parse(raw.toString()); } catch { return ws.close(4002, 'Error while decoding payload.'); }
      switch (p.op) {
        case 1:
          conn.lastBeat = Date.now();
          if (!this.withholdAcks) ws.send(JSON.stringify({ op: 11 }));
          return;
        case 2: return this.#identify(ws, conn, p.d);
        case 6: return this.#resume(ws, conn, p.d);
        case 3: case 4: case 8: return; // presence, voice, guild members: accepted, unused
        default: return ws.close(4001, 'Unknown opcode.');
      }
    });
  }

  #identify(ws, conn, d) {
    if (conn.session) return ws.close(4005, 'Already authenticated.');
    if (d?.token?.replace(/^Bot /, '') !== this.token) return ws.close(4004, 'Authentication failed.');
    if (typeof d.intents !== 'number' || d.intents & ~KNOWN_INTENTS) return ws.close(4013, 'Invalid intent(s).');
    if ((d.intents & Intents.MESSAGE_CONTENT) && !this.messageContentAllowed) return ws.close(4014, 'Disallowed intent(s).');
    if (d.shard && (d.shard[1] !== 1 || d.shard[0] !== 0)) return ws.close(4010, 'Invalid shard.');
    this.identifies++;
    const session_id = `s${this.snowflake()}`;
    const session = { id: session_id, seq: 0, events: [], intents: d.intents, socket: ws, ready: true };
    this.sessions.set(session_id, session);
    conn.session = session;
    const ready = { v: 10, user: this.bot, guilds: [], session_id, resume_gateway_url: this.gatewayUrl,
                    shard: d.shard ?? [0, 1], application: { id: this.bot.id, flags: 0 } };
    const payload = { op: 0, t: 'READY', s: ++session.seq, d: ready };
    session.events.push(payload);
    ws.send(JSON.stringify(payload));
    if (d.intents & Intents.GUILDS) for (const g of this.guilds.values()) this.#send(session, 'GUILD_CREATE', this.#guildCreate(g));
  }

  #resume(ws, conn, d) {
    if (d?.token?.replace(/^Bot /, '') !== this.token) return ws.close(4004, 'Authentication failed.');
    const s = this.sessions.get(d.session_id);
    if (!s || s.dead) {
      // Not resumable: op 9 false; the client waits 1-5 s and identifies afresh.
      return ws.send(JSON.stringify({ op: 9, d: false }));
    }
    if (typeof d.seq !== 'number' || d.seq > s.seq) return ws.close(4007, 'Invalid seq.');
    this.resumes++;
    if (s.socket && s.socket !== ws) s.socket.terminate();
    s.socket = ws;
    conn.session = s;
    for (const e of s.events) if (e.s > d.seq) ws.send(JSON.stringify(e));
    ws.send(JSON.stringify({ op: 0, t: 'RESUMED', s: ++s.seq, d: {} }));
  }

  // --- REST ------------------------------------------------------------------------------------

  async #rest(req, res) {
    const url = new URL(req.url, this.url);
    const body = await readBody(req);
    if (url.pathname.startsWith('/_control/')) return this.#control(url.pathname.slice(10), body, res);
    if (url.pathname.startsWith('/attachments/')) {
      const f = this.files.get(decodeURIComponent(url.pathname));
      if (!f) return json(res, 404, { message: '404: Not Found', code: 0 });
      res.writeHead(200, { 'content-type': f.type, 'content-length': f.data.length });
      return res.end(f.data);
    }
    const path = url.pathname.replace(/^\/api\/v10/, '');
    if (path === url.pathname) return json(res, 404, { message: '404: Not Found', code: 0 });
    if (req.headers.authorization !== `Bot ${this.token}`) return json(res, 401, { message: '401: Unauthorized', code: 0 });
    const data = body.length ? JSON.parse(body.toString()) : {};
    const route = `${req.method} ${path.replace(/\d{15,}/g, ':id')}`;
    const limited = this.#rateLimit(route, path, res);
    if (limited) return;

    let m;
    if (req.method === 'GET' && path === '/gateway/bot')
      return json(res, 200, { url: this.gatewayUrl, shards: 1,
                              session_start_limit: { total: 1000, remaining: 999, reset_after: 86400000, max_concurrency: 1 } });
    if (req.method === 'GET' && path === '/gateway') return json(res, 200, { url: this.gatewayUrl });
    if (req.method === 'GET' && path === '/users/@me') return json(res, 200, this.bot);
    if ((m = path.match(/^\/guilds\/(\d+)\/members\/(\d+)$/)) && req.method === 'GET') {
      const g = this.guilds.get(m[1]);
      if (!g) return json(res, 404, { message: 'Unknown Guild', code: 10004 });
      if (m[2] !== this.bot.id) return json(res, 404, { message: 'Unknown Member', code: 10007 });
      return json(res, 200, { user: this.bot, roles: g.botRoles, joined_at: new Date().toISOString() });
    }
    if ((m = path.match(/^\/channels\/(\d+)\/typing$/)) && req.method === 'POST') {
      if (!this.channels.has(m[1])) return unknownChannel(res);
      this.typing.push({ channel_id: m[1], at: Date.now() });
      res.writeHead(204);
      return res.end();
    }
    if ((m = path.match(/^\/channels\/(\d+)\/messages$/))) {
      const ch = this.channels.get(m[1]);
      if (!ch) return unknownChannel(res);
      if (req.method === 'GET') return json(res, 200, this.#history(ch, url.searchParams));
      if (req.method === 'POST') return this.#create(ch, data, res);
    }
    if ((m = path.match(/^\/channels\/(\d+)\/messages\/(\d+)$/)) && req.method === 'PATCH') {
      const ch = this.channels.get(m[1]);
      if (!ch) return unknownChannel(res);
      const msg = ch.messages.find((x) => x.id === m[2]);
      if (!msg) return json(res, 404, { message: 'Unknown Message', code: 10008 });
      if (msg.author.id !== this.bot.id) return json(res, 403, { message: 'Cannot edit a message authored by another user', code: 50005 });
      const invalid = tooLong(data.content);
      if (invalid) return json(res, 400, invalid);
      msg.content = data.content ?? msg.content;
      msg.edited_timestamp = new Date().toISOString();
      const s = this.sent.find((x) => x.id === msg.id);
      s.edits.push(msg.content);
      s.content = msg.content;
      this.dispatch('MESSAGE_UPDATE', msg);
      return json(res, 200, msg);
    }
    return json(res, 404, { message: '404: Not Found', code: 0 });
  }

  #create(ch, data, res) {
    const invalid = tooLong(data.content);
    if (invalid) return json(res, 400, invalid);
    if (!data.content && !data.embeds?.length)
      return json(res, 400, { message: 'Cannot send an empty message', code: 50006 });
    const nonceKey = data.nonce !== undefined ? `${ch.id}:${data.nonce}` : null;
    if (nonceKey && data.enforce_nonce) {
      const seen = this.nonces.get(nonceKey);
      if (seen && Date.now() - seen.at < NONCE_WINDOW_MS) {
        this.nonceRepeats++;
        return json(res, 200, seen.message);
      }
    }
    const msg = { id: this.snowflake(), channel_id: ch.id, author: this.bot, content: data.content ?? '',
                  timestamp: new Date().toISOString(), edited_timestamp: null, tts: false, mention_everyone: false,
                  mentions: [], mention_roles: [], attachments: [], embeds: data.embeds ?? [], pinned: false,
                  type: data.message_reference ? 19 : 0 };
    if (data.nonce !== undefined) msg.nonce = data.nonce;
    if (ch.guild_id) msg.guild_id = ch.guild_id;
    if (data.message_reference) msg.message_reference = { ...data.message_reference, channel_id: ch.id };
    ch.messages.push(msg);
    if (nonceKey) this.nonces.set(nonceKey, { message: msg, at: Date.now() });
    this.sent.push({ id: msg.id, channel_id: ch.id, content: msg.content, nonce: data.nonce, edits: [],
                     allowed_mentions: data.allowed_mentions ?? null, message_reference: data.message_reference ?? null });
    this.dispatch('MESSAGE_CREATE', msg);
    this.emit('sent', msg);
    return json(res, 200, msg);
  }

  // GET /channels/{id}/messages: newest first; around/before/after a message id; limit 1-100 (50).
  #history(ch, q) {
    const limit = Math.min(Math.max(Number(q.get('limit') ?? 50), 1), 100);
    let list = ch.messages;
    if (q.get('after')) list = list.filter((x) => BigInt(x.id) > BigInt(q.get('after'))).slice(0, limit);
    else if (q.get('before')) list = list.filter((x) => BigInt(x.id) < BigInt(q.get('before'))).slice(-limit);
    else list = list.slice(-limit);
    return [...list].reverse();
  }

  // Per-route buckets (5 per 5 s, like the message route) and injected 429s, with Discord's headers.
  // As on Discord, the bucket id names the route (the same for every channel) and the limit applies per
  // bucket and major parameter (the channel or guild id).
  #rateLimit(route, path, res) {
    const bucketId = createHash('sha1').update(route).digest('hex').slice(0, 16);
    const major = path.match(/^\/(?:channels|guilds|webhooks)\/(\d+)/)?.[1] ?? '';
    const nowMs = Date.now();
    let b = this.buckets.get(`${bucketId}:${major}`);
    if (!b || nowMs >= b.resetAt) b = { remaining: this.routeLimit, resetAt: nowMs + this.routeWindowMs };
    this.buckets.set(`${bucketId}:${major}`, b);
    const headers = {
      'x-ratelimit-limit': String(this.routeLimit),
      'x-ratelimit-bucket': bucketId,
      'x-ratelimit-reset': ((b.resetAt) / 1000).toFixed(3),
      'x-ratelimit-reset-after': ((b.resetAt - nowMs) / 1000).toFixed(3),
    };
    const fault = this.faults.find((f) => f.times > 0 && (!f.route || f.route === route));
    if (fault) {
      fault.times--;
      const h = { ...headers, 'retry-after': String(Math.ceil(fault.retry_after)), 'x-ratelimit-remaining': '0',
                  'x-ratelimit-scope': fault.global ? 'global' : 'user' };
      if (fault.global) h['x-ratelimit-global'] = 'true';
      json(res, fault.code, { message: 'You are being rate limited.', retry_after: fault.retry_after, global: fault.global }, h);
      return true;
    }
    if (b.remaining <= 0) {
      json(res, 429, { message: 'You are being rate limited.', retry_after: (b.resetAt - nowMs) / 1000, global: false },
           { ...headers, 'x-ratelimit-remaining': '0', 'x-ratelimit-scope': 'user', 'retry-after': String(Math.ceil((b.resetAt - nowMs) / 1000)) });
      return true;
    }
    b.remaining--;
    res.rateHeaders = { ...headers, 'x-ratelimit-remaining': String(b.remaining) };
    return false;
  }

  #control(verb, body, res) {
    const p = body.length ? JSON.parse(body.toString()) : {};
    const verbs = {
      channel: () => this.channel(p),
      guild: () => this.guild(p),
      // Settings a test changes before moatd connects: heartbeatInterval (ms, in the next HELLOs),
      // messageContentAllowed (false: IDENTIFY with MESSAGE_CONTENT is closed 4014), routeLimit.
      options: () => {
        for (const k of ['heartbeatInterval', 'messageContentAllowed', 'routeLimit', 'routeWindowMs']) if (k in p) this[k] = p[k];
        return true;
      },
      say: () => this.userSays(p),
      drop: () => (this.drop(), true),
      reconnect: () => (this.reconnect(), true),
      invalidate: () => (this.invalidate(Boolean(p.resumable)), true),
      close: () => (this.close(p.code, p.reason), true),
      fault: () => (this.fault(p), true),
      acks: () => ((this.withholdAcks = !p.on), true),
      state: () => ({ sent: this.sent, typing: this.typing.length, typingIn: [...new Set(this.typing.map((t) => t.channel_id))],
                      identifies: this.identifies, resumes: this.resumes, nonceRepeats: this.nonceRepeats, history: p.channel ? this.channels.get(p.channel)?.messages ?? [] : undefined,
                      connected: [...this.sockets].filter((w) => w.readyState === 1).length }),
    };
    if (!verbs[verb]) return json(res, 404, { error: `unknown control verb ${verb}` });
    return json(res, 200, verbs[verb]());
  }
}

function tooLong(content) {
  if (content === undefined || [...content].length <= 2000) return null;
  return { message: 'Invalid Form Body', code: 50035,
           errors: { content: { _errors: [{ code: 'BASE_TYPE_MAX_LENGTH', message: 'Must be 2000 or fewer in length.' }] } } };
}

function unknownChannel(res) {
  return json(res, 404, { message: 'Unknown Channel', code: 10003 });
}

// With the rate-limit headers #rateLimit left on the response.
function json(res, status, body, headers = {}) {
  sendJson(res, status, body, { ...(res.rateHeaders ?? {}), ...headers });
}


if (import.meta.url === `file://${process.argv[1]}`) {
  await serveFromCommandLine(({ token }) => new DiscordStandIn({ token }), (s) => ({ url: s.url, gateway: s.gatewayUrl, token: s.token }));
}
