// Checks the Telegram stand-in with grammY (a real, widely used Bot API client): long polling, replies,
// edits, chat actions, privacy mode, file downloads, webhook delivery with the secret token, and the
// error shapes a channel must handle (409, 429 with retry_after, 401, "message is not modified").
// Prints one line per check; exits non-zero on the first failure.
import http from 'node:http';
import assert from 'node:assert/strict';
import { Bot, GrammyError, webhookCallback } from 'grammy';
import { TelegramStandIn } from '../telegram.mjs';
import { check, waitFor } from './util.mjs';

const tg = await new TelegramStandIn({ privacyMode: true }).start();
const bot = new Bot(tg.token, { client: { apiRoot: tg.url } });
const dm = tg.chat({ id: 7, type: 'private', first_name: 'Ada' });
const group = tg.chat({ id: -100200, type: 'supergroup', title: 'team' });

await check('getMe reports the bot and its privacy mode', async () => {
  const me = await bot.api.getMe();
  assert.equal(me.is_bot, true);
  assert.equal(me.username, 'moat_test_bot');
  assert.equal(me.can_read_all_group_messages, false);
});

const seen = [];
bot.on('message', async (ctx) => {
  seen.push(ctx.message);
  await ctx.replyWithChatAction('typing');
  await ctx.reply(`echo: ${ctx.message.text}`, { reply_parameters: { message_id: ctx.message.message_id } });
});
bot.on('edited_message', (ctx) => seen.push({ edited: ctx.editedMessage }));
bot.catch((e) => console.error('grammY handler error:', e.message));
const polling = bot.start({ timeout: 1, drop_pending_updates: false });

await check('long polling delivers a direct message and the reply arrives', async () => {
  tg.userSays({ chat: dm, text: 'hello' });
  await waitFor(() => tg.sent.some((s) => s.chat_id === 7 && s.text === 'echo: hello'), 5000);
  assert.deepEqual(tg.actions.at(-1), { chat_id: 7, action: 'typing' });
});

await check('privacy mode: a plain group message is not delivered, a mention and a reply to the bot are', async () => {
  tg.userSays({ chat: group, text: 'just chatting' });
  tg.userSays({ chat: group, text: 'hey @moat_test_bot what time is it' });
  await waitFor(() => tg.sent.some((s) => s.text === 'echo: hey @moat_test_bot what time is it'), 5000);
  const botMessage = tg.sent.at(-1).message_id;
  tg.userSays({ chat: group, text: 'and tomorrow?', replyTo: botMessage });
  await waitFor(() => tg.sent.some((s) => s.text === 'echo: and tomorrow?'), 5000);
  assert.ok(!seen.some((m) => m.text === 'just chatting'));
  const mention = seen.find((m) => m.text?.includes('@moat_test_bot'));
  assert.deepEqual(mention.entities, [{ type: 'mention', offset: 4, length: 14 }]);
});

await check('an edit arrives as edited_message', async () => {
  const m = tg.userSays({ chat: dm, text: 'typo' });
  tg.userEdits({ chat: dm, message_id: m.message_id, text: 'fixed' });
  await waitFor(() => seen.some((x) => x.edited?.text === 'fixed'), 5000);
});

await check('confirmed updates are not delivered again', async () => {
  await waitFor(() => tg.updates.length === 0, 5000);
  assert.equal(seen.filter((m) => m.text === 'hello').length, 1);
});

await check('a second poller ends the first with 409 and grammY reports it', async () => {
  // grammY stops polling on a 409; the stand-in sends it to the older request.
  const errors = [];
  const stopped = polling.catch((e) => errors.push(e));
  await waitFor(() => tg.poller !== null, 5000);
  const raw = await fetch(`${tg.url}/bot${tg.token}/getUpdates?timeout=0`).then((r) => r.json());
  assert.equal(raw.ok, true);
  await stopped;
  assert.ok(errors[0] instanceof GrammyError, String(errors[0]));
  assert.equal(errors[0].error_code, 409);
  assert.match(errors[0].description, /terminated by other getUpdates request/);
});

await check('editMessageText edits; the same text again is "message is not modified"', async () => {
  const sent = await bot.api.sendMessage(7, 'draft');
  const edited = await bot.api.editMessageText(7, sent.message_id, 'final');
  assert.equal(edited.text, 'final');
  await assert.rejects(bot.api.editMessageText(7, sent.message_id, 'final'), (e) =>
    e instanceof GrammyError && e.error_code === 400 && /message is not modified/.test(e.description));
  assert.deepEqual(tg.sent.find((s) => s.message_id === sent.message_id).edits, ['final']);
});

await check('4096 UTF-16 units fit, one more does not', async () => {
  const emoji = '😀'; // two UTF-16 units
  await bot.api.sendMessage(7, emoji.repeat(2048));
  await assert.rejects(bot.api.sendMessage(7, emoji.repeat(2048) + 'x'), (e) => e.error_code === 400 && /too long/.test(e.description));
});

await check('429 carries parameters.retry_after', async () => {
  tg.fault({ method: 'sendMessage', code: 429, retry_after: 3 });
  await assert.rejects(bot.api.sendMessage(7, 'x'), (e) => e.error_code === 429 && e.parameters.retry_after === 3);
});

await check('a bad token is 401 Unauthorized', async () => {
  const other = new Bot('999:wrong', { client: { apiRoot: tg.url } });
  await assert.rejects(other.api.getMe(), (e) => e.error_code === 401 && e.description === 'Unauthorized');
});

await check('getFile and the file download', async () => {
  const m = tg.userSays({ chat: dm, text: undefined, document: { name: 'notes.txt', data: 'attached bytes' } });
  const file = await bot.api.getFile(m.document.file_id);
  const body = await fetch(`${tg.url}/file/bot${tg.token}/${file.file_path}`).then((r) => r.text());
  assert.equal(body, 'attached bytes');
});

await check('webhook: getUpdates is refused while set; deliveries carry the secret; a forged one is refused by grammY', async () => {
  const hookBot = new Bot(tg.token, { client: { apiRoot: tg.url }, botInfo: await bot.api.getMe() });
  const got = [];
  hookBot.on('message', (ctx) => got.push(ctx.message.text));
  const handle = webhookCallback(hookBot, 'http', { secretToken: 'right-secret' });
  const server = http.createServer(handle);
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const hook = `http://127.0.0.1:${server.address().port}/hook`;
  await bot.api.setWebhook(hook, { secret_token: 'right-secret' });
  await assert.rejects(bot.api.getUpdates({ timeout: 0 }), (e) => e.error_code === 409 && /webhook is active/.test(e.description));
  tg.userSays({ chat: dm, text: 'via webhook' });
  await waitFor(() => got.includes('via webhook'), 5000);
  // A stand-in told the wrong secret: grammY answers 401, and the stand-in keeps the update and retries.
  await bot.api.setWebhook(hook, { secret_token: 'forged' });
  tg.userSays({ chat: dm, text: 'not with that secret' });
  await waitFor(() => tg.deliveries.filter((d) => d.status === 401).length >= 2, 5000);
  assert.ok(!got.includes('not with that secret'));
  const info = await bot.api.getWebhookInfo();
  assert.equal(info.pending_update_count, 1);
  assert.match(info.last_error_message, /401/);
  await bot.api.deleteWebhook({ drop_pending_updates: true });
  server.close();
});

await tg.stop();
console.log('telegram stand-in: every check passed');
process.exit(0);
