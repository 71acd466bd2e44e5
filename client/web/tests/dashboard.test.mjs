// The SRE dashboard in a real browser: the local stack (ClickHouse, collector,
// dashboard), synthetic reports through the real path (`rallypoint simulate`:
// relays → JetStream → collector → ClickHouse), then every view opened,
// checked for its data and saved as a screenshot artifact.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { launchChromium } from './browser.mjs';
import { startStack } from './stack.mjs';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const bin = process.env.RALLYPOINT_BIN ?? join(repo, 'target/debug/rallypoint');
const webDist = process.env.RALLYPOINT_WEB_DIST ?? join(repo, 'client/web/dist');
const artifacts = join(process.env.RALLYPOINT_WEB_ARTIFACTS ?? join(repo, 'artifacts/web'), '../dashboard');

let stack;
let browser;
let page;
let dashboard;
let authorization;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  stack = await startStack({ bin, repo, webDist });
  dashboard = stack.log().match(/dashboard\s+(http:\/\/127\.0\.0\.1:\d+)\//)?.[1];
  assert.ok(dashboard, `rallypoint up printed no dashboard URL:\n${stack.log()}`);
  // The dashboard asks who is there; rallypoint up prints its development sign-in.
  const [, user, password] = stack.log().match(/sign in as (\S+), password (\S+)/) ?? [];
  assert.ok(password, `rallypoint up printed no dashboard sign-in:\n${stack.log()}`);
  const unauthenticated = await fetch(`${dashboard}/`);
  assert.equal(unauthenticated.status, 401, 'the dashboard answers no one who has not signed in');
  authorization = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  // 600 labelled synthetic reports from eight markets, through the relays.
  await promisify(execFile)(bin, [
    'simulate', '--stack', stack.base, '--reports', '600', '--rate', '300', '--connections', '2',
  ], { cwd: repo, timeout: 120_000, env: { ...process.env, RALLYPOINT_JWT_SECRET: stack.jwtSecret } });
  browser = await launchChromium();
  page = await browser.context.newPage();
  await page.setExtraHTTPHeaders({ authorization });
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

/** Opens a view with synthetic data included, waiting until the collector has stored it. */
async function open(path, ready) {
  const sep = path.includes('?') ? '&' : '?';
  const url = `${dashboard}${path}${sep}synthetic=1&range=1h`;
  for (let attempt = 0; attempt < 60; attempt += 1) {
    await page.goto(url);
    if (await page.locator(ready).count()) return;
    await page.waitForTimeout(500); // the collector stores in batches; poll the page
  }
  assert.fail(`${url} never showed ${ready}`);
}

test('overview charts the elections per region', async () => {
  await open('/', 'figure.chart svg path');
  const calls = Number(await page.locator('[data-kpi="calls"] b').textContent());
  assert.ok(calls > 0, `calls started: ${calls}`);
  assert.ok(await page.locator('ul.legend li', { hasText: 'singapore' }).count(), 'legend names the regions');
  await page.screenshot({ path: join(artifacts, 'overview.png'), fullPage: true });
});

test('the region × ISP matrix has measured cells and links to a cell’s series', async () => {
  await open('/matrix', 'td.heat');
  const cell = page.locator('td.heat[data-region="singapore"][data-isp="Singtel"]');
  const p50 = Number(await cell.getAttribute('data-p50-ms'));
  assert.ok(p50 > 5 && p50 < 40, `Singtel to singapore median ${p50} ms`);
  const far = Number(await page.locator('td.heat[data-region="us-east"][data-isp="Singtel"]').getAttribute('data-p50-ms'));
  assert.ok(far > 200, `Singtel to us-east median ${far} ms`);
  await page.screenshot({ path: join(artifacts, 'matrix.png'), fullPage: true });
  await cell.locator('a').click();
  // One point per bucket; a single bucket is a dot, not a line.
  await page.waitForSelector('figure.chart svg circle');
  await page.screenshot({ path: join(artifacts, 'matrix-cell.png'), fullPage: true });
});

test('outcomes show each market winning its nearest region', async () => {
  await open('/outcomes', 'table[data-view="by-isp"] tr[data-group]');
  const singtel = await page.locator('table[data-view="by-isp"] tr[data-group="Singtel"] [data-shares]').getAttribute('data-shares');
  assert.match(singtel, /singapore 100\.0%/);
  const comcast = await page.locator('table[data-view="by-isp"] tr[data-group="Comcast"] [data-shares]').getAttribute('data-shares');
  assert.match(comcast, /us-east 100\.0%/);
  await page.screenshot({ path: join(artifacts, 'outcomes.png'), fullPage: true });
});

test('capacity answers what-if: without singapore, Singtel moves to us-east', async () => {
  await open('/capacity?remove=singapore', 'table[data-view="what-if-groups"]');
  const moved = Number(await page.locator('table[data-view="what-if-groups"] tr[data-isp="Singtel"] [data-moved]').getAttribute('data-moved'));
  assert.ok(moved > 0, `Singtel elections that would move: ${moved}`);
  const delta = Number(await page.locator('table[data-view="what-if-groups"] tr[data-isp="Singtel"] [data-delta-p50]').getAttribute('data-delta-p50'));
  assert.ok(delta > 150, `Singtel median RTT change ${delta} ms`);
  await page.screenshot({ path: join(artifacts, 'capacity.png'), fullPage: true });
});

test('the session explorer lists sessions and shows one in order', async () => {
  await open('/sessions', 'table[data-view="recent-sessions"] a');
  await page.locator('table[data-view="recent-sessions"] a').first().click();
  await page.waitForSelector('ol[data-view="session"] li');
  await page.screenshot({ path: join(artifacts, 'session.png'), fullPage: true });
});

test('filters live in the URL and the form is keyboard operable', async () => {
  await open('/matrix', 'td.heat');
  await page.locator('select[name="transport"]').focus();
  await page.keyboard.press('ArrowDown'); // websocket
  await page.locator('button[type="submit"]').first().press('Enter');
  await page.waitForURL(/transport=websocket/);
  assert.ok(await page.locator('td.heat').count(), 'the filtered matrix still has cells');
});

/** Every chart's text boxes on the page: overlapping pairs and boxes that
 * leave their chart, from the SVG's own geometry. */
const chartTextProblems = () =>
  page.evaluate(() => {
    const problems = [];
    for (const [index, svg] of [...document.querySelectorAll('figure.chart svg')].entries()) {
      const frame = svg.getBoundingClientRect();
      const boxes = [...svg.querySelectorAll('text')]
        .filter((t) => t.textContent.trim() !== '')
        .map((t) => ({ text: t.textContent, box: t.getBoundingClientRect() }));
      // Labels scale with the chart: what a 13 px label becomes on screen.
      const scale = frame.width / (svg.viewBox.baseVal?.width || frame.width);
      for (const t of svg.querySelectorAll('text')) {
        const px = parseFloat(getComputedStyle(t).fontSize) * scale;
        if (t.textContent.trim() !== '' && px < 10) {
          problems.push(`chart ${index}: "${t.textContent}" is ${px.toFixed(1)} px on screen`);
        }
      }
      for (const { text, box } of boxes) {
        const inside = box.left >= frame.left - 0.5 && box.right <= frame.right + 0.5
          && box.top >= frame.top - 0.5 && box.bottom <= frame.bottom + 0.5;
        if (!inside) problems.push(`chart ${index}: "${text}" leaves the chart`);
      }
      for (let i = 0; i < boxes.length; i += 1) {
        for (let j = i + 1; j < boxes.length; j += 1) {
          const [a, b] = [boxes[i].box, boxes[j].box];
          const overlap = Math.min(a.right, b.right) - Math.max(a.left, b.left) > 0.5
            && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 0.5;
          if (overlap) problems.push(`chart ${index}: "${boxes[i].text}" overlaps "${boxes[j].text}"`);
        }
      }
    }
    return problems;
  });

test('no chart label overlaps another, leaves its chart or shrinks below 10 px, on a desktop and on a phone; every point has a tooltip', async () => {
  const views = [
    ['/', 'figure.chart svg path', 'overview'],
    ['/matrix/cell?region=singapore&isp=Singtel', 'figure.chart svg circle', 'matrix-cell'],
    ['/capacity', 'figure.chart svg', 'capacity'],
  ];
  const problems = [];
  for (const [width, height, device] of [[1280, 900, 'desktop'], [390, 844, 'phone']]) {
    await page.setViewportSize({ width, height });
    for (const [path, ready, name] of views) {
      await open(path, ready);
      for (const problem of await chartTextProblems()) problems.push(`${device} ${path}: ${problem}`);
      const points = await page.locator('figure.chart svg circle.hover').count();
      const tips = await page.locator('figure.chart svg circle.hover title').count();
      assert.equal(tips, points, `${device} ${path}: every point has a tooltip`);
      await page.screenshot({ path: join(artifacts, `${name}-${device}.png`), fullPage: true });
    }
    for (const [path, ready, name] of [
      ['/matrix', 'td.heat', 'matrix'],
      ['/outcomes', 'table[data-view="by-isp"] tr[data-group]', 'outcomes'],
      ['/sessions', 'table[data-view="recent-sessions"] a', 'sessions'],
    ]) {
      await open(path, ready);
      await page.screenshot({ path: join(artifacts, `${name}-${device}.png`), fullPage: true });
    }
  }
  await page.setViewportSize({ width: 1280, height: 800 });
  assert.deepEqual(problems, []);
});
