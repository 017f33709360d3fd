// Drives moat's web chat in a real browser (Debian's chromium through playwright-core):
// opens the page, picks an agent, sends a message, and waits for the agent's reply (and, optionally,
// a tool activity element) to appear. Prints one JSON line and exits 0 on success, 1 on failure.
//
//   node web_chat.mjs URL AGENT MESSAGE EXPECTED_REPLY_TEXT [--tool NAME] [--timeout MS]
//
// CHROMIUM=/path overrides /usr/bin/chromium. Content-Security-Policy violations and page errors
// fail the run: the page must work under its own strict policy.
import { chromium } from 'playwright-core';

function usage(msg) {
  console.log(JSON.stringify({ ok: false, error: msg,
    usage: 'node web_chat.mjs URL AGENT MESSAGE EXPECTED_REPLY_TEXT [--tool NAME] [--timeout MS]' }));
  process.exit(2);
}

const positional = [];
let tool = null;
let timeout = 20000;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--tool') tool = argv[++i];
  else if (argv[i] === '--timeout') timeout = Number(argv[++i]);
  else positional.push(argv[i]);
}
if (positional.length !== 4) usage('expected 4 positional arguments');
const [url, agent, message, expected] = positional;

const result = { ok: false, url, agent, message, expected, tool };
const problems = [];  // page errors and CSP violations
let browser;
let step = 'launch chromium';
try {
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  const args = process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [];
  browser = await chromium.launch({ executablePath, headless: true, args, timeout });
  const page = await browser.newPage();
  page.setDefaultTimeout(timeout);
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push('console error: ' + m.text());
  });

  step = 'open ' + url;
  const resp = await page.goto(url);
  if (!resp || !resp.ok()) throw new Error(`page answered HTTP ${resp ? resp.status() : '(none)'}`);

  step = `find agent '${agent}' in the picker`;
  await page.waitForSelector(`#agent option[value="${agent}"]`, { state: 'attached' });
  await page.selectOption('#agent', agent);

  step = 'wait for the event stream to connect';
  await page.waitForFunction(() => document.getElementById('status').textContent === 'connected');

  step = 'send the message';
  await page.fill('#text', message);
  await page.click('#send');
  await page.waitForFunction((m) => [...document.querySelectorAll('.msg.user .text')]
    .some((e) => e.textContent === m), message);

  step = `wait for a durable reply containing '${expected}'`;
  const reply = await page.waitForFunction((exp) => {
    const done = [...document.querySelectorAll('.msg.agent[data-key] .text')];
    const hit = done.find((e) => e.textContent.includes(exp));
    return hit ? { text: hit.textContent, key: hit.parentElement.dataset.key } : null;
  }, expected);
  const r = await reply.jsonValue();
  result.reply = r.text;
  result.reply_key = r.key;

  if (tool) {
    step = `find tool activity for '${tool}'`;
    const t = await page.waitForFunction((name) => {
      const el = [...document.querySelectorAll('.tool-call')]
        .find((e) => e.querySelector('.tool-name')?.textContent === name);
      return el ? el.textContent : null;
    }, tool);
    result.tool_activity = await t.jsonValue();
    result.tool_result_collapsed = await page.evaluate(() => {
      const d = document.querySelector('details.tool-result');
      return d ? !d.open : null;
    });
  }
  result.agent_messages = await page.$$eval('.msg.agent', (els) => els.length);

  const csp = problems.filter((p) => /Content Security Policy|Refused to/i.test(p));
  if (csp.length) throw new Error('the page broke its Content-Security-Policy: ' + csp.join('; '));
  step = 'done';
  result.ok = true;
} catch (e) {
  result.error = `${step}: ${e.message.split('\n')[0]}`;
}
result.problems = problems;
if (browser) await browser.close().catch(() => {});
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
