// The console in a real browser: headless Chromium (Debian's `chromium`) driven by playwright-core, against a
// running console (tests/console_browser.rs starts it). Checks what a user sees, takes the screenshots that
// docs/console.md shows, and prints one JSON line of results. Any failed check exits 1 with the reason.
//
// Environment: CONSOLE_URL, CONSOLE_TOKEN, CHROMIUM (the executable), PLAYWRIGHT_DIR (a folder whose
// node_modules holds playwright-core), SHOTS (where the screenshots go), EXPECT_JOB, EXPECT_REASON,
// EXPECT_MODEL, EXPECT_CHAIN (zones of the model's path, comma-separated), US_ZONE.
import { createRequire } from 'node:module';
import path from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) { console.error(`missing environment variable ${k}`); process.exit(2); }
  return v;
};
const url = env('CONSOLE_URL');
const token = env('CONSOLE_TOKEN');
const require = createRequire(path.join(env('PLAYWRIGHT_DIR'), 'noop.js'));
const { chromium } = require('playwright-core');

const results = {};
const check = (ok, what) => {
  if (!ok) { console.error(`FAILED: ${what}`); process.exit(1); }
  results[what] = true;
};

// Login: nothing without the token; the token as a Basic password lets a viewer in; no mutating method anywhere.
const basic = 'Basic ' + Buffer.from(`viewer:${token}`).toString('base64');
for (const p of ['/', '/zones', '/jobs', '/models', '/audit', '/nodes', '/plots', '/style.css']) {
  const anon = await fetch(url + p);
  check(anon.status === 401, `GET ${p} without login is refused (401, got ${anon.status})`);
  const wrong = await fetch(url + p, { headers: { authorization: 'Basic ' + Buffer.from('viewer:wrong-token-0000000').toString('base64') } });
  check(wrong.status === 401, `GET ${p} with a wrong token is refused (got ${wrong.status})`);
  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
    const r = await fetch(url + p, { method, headers: { authorization: basic }, body: method === 'DELETE' ? undefined : 'x' });
    check(r.status === 405, `${method} ${p} as a viewer is refused (405, got ${r.status})`);
    const a = await fetch(url + p, { method });
    check(a.status === 401, `${method} ${p} without login is refused (401, got ${a.status})`);
  }
}

const browser = await chromium.launch({ executablePath: env('CHROMIUM'), args: ['--no-sandbox'] });
const context = await browser.newContext({ httpCredentials: { username: 'viewer', password: token }, javaScriptEnabled: false, viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const shots = env('SHOTS');

// Reloads until `text` is on the page (the console re-reads its snapshot in the background).
async function open(p, text, timeoutMs = 30000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = await page.goto(url + p);
    check(r.status() === 200, `GET ${p} as a viewer answers 200 (got ${r.status()})`);
    const body = await page.locator('main').innerText();
    if (body.includes(text)) return body;
    if (Date.now() > end) { console.error(body); check(false, `${p} shows "${text}" within ${timeoutMs} ms`); }
    await page.waitForTimeout(300);
  }
}

// Zones: the US-owned zone is flagged, in its own row.
await open('/zones', 'EXPOSED to the US CLOUD Act');
const usRow = await page.locator(`tr#zone-${env('US_ZONE')}`).innerText();
check(usRow.includes('EXPOSED to the US CLOUD Act'), `the ${env('US_ZONE')} row shows the CLOUD Act flag`);
const euRows = await page.locator('tr[id^="zone-"]').allInnerTexts();
check(euRows.some((r) => r.includes('Not exposed')), 'an EU-owned zone is shown as not exposed');
// Keyboard: the first Tab reaches the skip link, the next ones the views.
await page.keyboard.press('Tab');
check(await page.evaluate(() => document.activeElement.textContent) === 'Skip to content', 'Tab reaches the skip link first');
await page.keyboard.press('Tab');
check(await page.evaluate(() => document.activeElement.getAttribute('href')) === '/zones', 'the next Tab reaches the navigation');
await page.screenshot({ path: `${shots}/zones.png`, fullPage: true });

// Jobs: the waiting job's reason, in words.
const job = env('EXPECT_JOB');
await open(`/jobs?id=${job}`, env('EXPECT_REASON'));
const article = await page.locator(`article#job-${job}`).innerText();
check(article.includes('Why it waits') && article.includes(env('EXPECT_REASON')), `job ${job} shows why it waits`);
check(/Per filter, of \d+ nodes/.test(article), `job ${job} shows the per-filter node counts`);
await page.screenshot({ path: `${shots}/jobs.png`, fullPage: true });
await open('/jobs?state=placed', 'satisfies class');
await page.screenshot({ path: `${shots}/jobs-placed.png` });

// Models: the chain through the data zones, and the UNDER EXCEPTION badge.
await open(`/models?model=${env('EXPECT_MODEL')}`, 'UNDER EXCEPTION');
const chain = await page.getByRole('list', { name: `Chain of ${env('EXPECT_MODEL')}` }).innerText();
const want = env('EXPECT_CHAIN').split(',');
let at = -1;
for (const z of want) {
  const i = chain.indexOf(z, at + 1);
  check(i > at, `the chain lists ${z} in order (chain: ${chain.replace(/\n/g, ' | ')})`);
  at = i;
}
const badges = await page.locator('.badge', { hasText: 'UNDER EXCEPTION' }).count();
check(badges >= 2, `UNDER EXCEPTION marks the exception and the promotion made under it (${badges} badges)`);
await page.screenshot({ path: `${shots}/models.png`, fullPage: true });

// Audit: both chains verified, entries filterable.
const audit = await open('/audit', 'scheduler\'s receipts log');
check(/verified\s+registry's audit log/.test(audit), 'the registry chain is verified');
await open('/audit?log=registry&kind=exception', 'exception');
const kinds = await page.locator('tbody tr td:nth-child(3)').allInnerTexts();
check(kinds.length > 0 && kinds.every((k) => k === 'exception'), `the kind filter keeps only exceptions (${kinds})`);
await page.goto(url + '/audit');
await page.screenshot({ path: `${shots}/audit.png`, fullPage: true });

// Pools and nodes; the simulator's plot as an image.
await open('/nodes', 'GPUs per pool');
await page.screenshot({ path: `${shots}/nodes.png` });
await open('/plots', 'utilisation.svg');
const loaded = await page.locator('img.plot').first().evaluate((i) => i.complete && i.naturalWidth > 0);
check(loaded, 'the simulator plot renders');
await page.screenshot({ path: `${shots}/plots.png` });

await browser.close();
console.log(JSON.stringify({ ok: true, checks: Object.keys(results).length }));
