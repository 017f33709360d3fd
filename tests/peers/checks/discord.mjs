// Checks the Discord stand-in with @discordjs/ws and @discordjs/rest (discord.js's own Gateway and REST
// clients): identify and READY, dispatches with sequence numbers, the message-content intent, resume
// after a dropped connection and after op 7 with the missed events replayed, re-identify after op 9,
// a withheld heartbeat ACK seen as a zombie connection, fatal close codes, create/edit with nonce and
// enforce_nonce, history for backfill, and 429s that the REST client waits out.
import assert from 'node:assert/strict';
import { REST } from '@discordjs/rest';
import { WebSocketManager, WebSocketShardEvents } from '@discordjs/ws';
import { DiscordStandIn, Intents } from '../discord.mjs';
import { check, waitFor } from './util.mjs';

const d = await new DiscordStandIn({ heartbeatInterval: 400 }).start();
const rest = new REST({ version: '10', api: `${d.url}/api`, retries: 1 }).setToken(d.token);
const guildChannel = d.channel({ id: '3300000000000000003', type: 0, guild_id: '4400000000000000004' });
const dmChannel = d.channel({ id: '3300000000000000005', type: 1 });

const events = [];
const closes = [];
let resumed = 0;
let ready = 0;
function manager(intents, token = d.token) {
  const m = new WebSocketManager({ token, intents, rest: new REST({ version: '10', api: `${d.url}/api` }).setToken(d.token) });
  m.on(WebSocketShardEvents.Dispatch, ({ data }) => {
    if (data.t === 'MESSAGE_CREATE') events.push({ s: data.s, id: data.d.id, content: data.d.content });
  });
  m.on(WebSocketShardEvents.Ready, () => ready++);
  m.on(WebSocketShardEvents.Resumed, () => resumed++);
  m.on(WebSocketShardEvents.Closed, ({ code }) => closes.push(code));
  m.on(WebSocketShardEvents.Error, () => {});
  return m;
}
const all = Intents.GUILDS | Intents.GUILD_MESSAGES | Intents.DIRECT_MESSAGES;

await check('REST: the bot user and the gateway URL', async () => {
  const me = await rest.get('/users/@me');
  assert.equal(me.bot, true);
  const gw = await rest.get('/gateway/bot');
  assert.equal(gw.url, d.gatewayUrl);
  assert.equal(gw.session_start_limit.max_concurrency, 1);
});

const ws = manager(all | Intents.MESSAGE_CONTENT);
await check('Gateway: HELLO, heartbeats, IDENTIFY, READY, then MESSAGE_CREATE with sequence numbers', async () => {
  await ws.connect();
  await waitFor(() => ready === 1, 5000, 'READY');
  d.userSays({ channel: guildChannel, content: 'first' });
  d.userSays({ channel: dmChannel, content: 'second' });
  await waitFor(() => events.length === 2, 5000, 'two dispatches');
  assert.deepEqual(events.map((e) => e.content), ['first', 'second']);
  assert.ok(events[1].s > events[0].s);
  await waitFor(() => d.sockets.size === 1, 1000, "one gateway connection");
});

await check('a dropped connection (1006) resumes and replays what was missed, nothing twice', async () => {
  const before = events.length;
  d.drop();
  const missed = d.userSays({ channel: guildChannel, content: 'while away' }); // queued in the session
  await waitFor(() => resumed === 1, 10000, 'RESUMED');
  await waitFor(() => events.some((e) => e.id === missed.id), 5000, 'the replayed event');
  assert.equal(events.slice(before).filter((e) => e.id === missed.id).length, 1);
  assert.equal(d.identifies, 1);
});

await check('op 7 RECONNECT is followed by a resume', async () => {
  d.reconnect();
  await waitFor(() => resumed === 2, 10000, 'the second RESUMED');
  assert.equal(d.identifies, 1);
});

await check('a withheld heartbeat ACK is a zombie connection: the client reconnects and resumes', async () => {
  d.withholdAcks = true;
  await waitFor(() => d.resumes >= 3, 10000, 'a resume after the zombie');
  d.withholdAcks = false;
  await waitFor(() => resumed >= 3, 5000);
});

await check('op 9 INVALID SESSION (not resumable) makes the client identify afresh', async () => {
  d.invalidate(false);
  await waitFor(() => d.identifies === 2, 15000, 'a second IDENTIFY');
  await waitFor(() => ready === 2, 5000);
  d.userSays({ channel: guildChannel, content: 'after re-identify' });
  await waitFor(() => events.some((e) => e.content === 'after re-identify'), 5000);
});

await check('REST history backfills after a message id (what an op 9 gap needs), newest first', async () => {
  const first = events[0].id;
  const page = await rest.get(`/channels/${guildChannel.id}/messages`, { query: new URLSearchParams({ after: first, limit: '100' }) });
  assert.ok(page.length >= 2);
  assert.ok(BigInt(page[0].id) > BigInt(page.at(-1).id));
  assert.ok(page.every((m) => BigInt(m.id) > BigInt(first)));
});

await ws.destroy();

await check('without MESSAGE_CONTENT a guild message arrives with empty content unless it mentions the bot', async () => {
  const plain = manager(all);
  const start = events.length;
  await plain.connect();
  await waitFor(() => ready === 3, 5000);
  d.userSays({ channel: guildChannel, content: 'secret words' });
  d.userSays({ channel: guildChannel, content: '<@1100000000000000001> hi', mentionBot: true });
  d.userSays({ channel: dmChannel, content: 'dm words' });
  await waitFor(() => events.length === start + 3, 5000);
  assert.deepEqual(events.slice(start).map((e) => e.content), ['', '<@1100000000000000001> hi', 'dm words']);
  await plain.destroy();
});

await check('fatal close codes: a bad token is 4004, a disallowed intent is 4014', async () => {
  const bad = manager(all, 'wrong-token');
  await bad.connect().catch(() => {});
  await waitFor(() => closes.includes(4004), 5000, 'close 4004');
  await bad.destroy();
  const strict = await new DiscordStandIn({ messageContentAllowed: false }).start();
  const codes = [];
  const m = new WebSocketManager({ token: strict.token, intents: all | Intents.MESSAGE_CONTENT,
                                   rest: new REST({ version: '10', api: `${strict.url}/api` }).setToken(strict.token) });
  m.on(WebSocketShardEvents.Closed, ({ code }) => codes.push(code));
  m.on(WebSocketShardEvents.Error, () => {});
  await m.connect().catch(() => {});
  await waitFor(() => codes.includes(4014), 5000, 'close 4014');
  await m.destroy();
  await strict.stop();
});

await check('create with nonce + enforce_nonce: a retried send returns the same message, not a second one', async () => {
  const body = { content: 'reply o31.1', nonce: 'o31.1', enforce_nonce: true };
  const a = await rest.post(`/channels/${guildChannel.id}/messages`, { body });
  const b = await rest.post(`/channels/${guildChannel.id}/messages`, { body });
  assert.equal(a.id, b.id);
  assert.equal(d.sent.filter((s) => s.nonce === 'o31.1').length, 1);
  const edited = await rest.patch(`/channels/${guildChannel.id}/messages/${a.id}`, { body: { content: 'reply o31.1, final' } });
  assert.equal(edited.content, 'reply o31.1, final');
  await assert.rejects(rest.post(`/channels/${guildChannel.id}/messages`, { body: { content: 'x'.repeat(2001) } }),
                       (e) => e.status === 400 && e.code === 50035);
});

await check('429 with retry_after: the REST client waits it out and succeeds', async () => {
  d.fault({ route: `POST /channels/:id/messages`, retry_after: 0.3 });
  const t0 = Date.now();
  const m = await rest.post(`/channels/${dmChannel.id}/messages`, { body: { content: 'after a 429' } });
  assert.equal(m.content, 'after a 429');
  assert.ok(Date.now() - t0 >= 250, `waited only ${Date.now() - t0} ms`);
});

await check('GUILD_CREATE after READY carries the bot\'s member (its roles) and the channels; GET /guilds/{id}/members/{bot}', async () => {
  d.guild({ id: guildChannel.guild_id, botRoles: ['5500000000000000005'] });
  const guilds = [];
  const g = manager(all);
  g.on(WebSocketShardEvents.Dispatch, ({ data }) => { if (data.t === 'GUILD_CREATE') guilds.push(data.d); });
  await g.connect();
  await waitFor(() => guilds.length === 1, 5000, 'GUILD_CREATE');
  const me = guilds[0].members.find((m) => m.user.id === d.bot.id);
  assert.deepEqual(me.roles, ['5500000000000000005']);
  assert.ok(guilds[0].channels.some((c) => c.id === guildChannel.id && c.last_message_id));
  const member = await rest.get(`/guilds/${guildChannel.guild_id}/members/${d.bot.id}`);
  assert.deepEqual(member.roles, ['5500000000000000005']);
  await g.destroy();
});

await d.stop();
console.log('discord stand-in: every check passed');
process.exit(0);
