// Drives order_service's homepage in a real browser (Debian's chromium through
// playwright-core): open the page, click "success", watch the saga's steps appear
// live and the order end APPROVED, then save a screenshot.
//
//   node homepage.mjs <homepage url> <screenshot path>
//
// Environment: FTGO_BROWSER_NODE is the directory whose node_modules holds the
// pinned playwright-core (system_tests/tests/homepage.rs installs it under
// target/browser-node); by default, this script's own directory. CHROMIUM_PATH
// overrides /usr/bin/chromium.
//
// Prints one line `homepage ok order_id=<id> events=<n> state=APPROVED` on success;
// exits non-zero (with a screenshot of the failure) otherwise.

import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error('usage: node homepage.mjs <homepage url> <screenshot path>');
  process.exit(2);
}
const base = process.env.FTGO_BROWSER_NODE || dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(base, 'package.json'));
const { chromium } = require('playwright-core');

/** Generous: the saga takes well under a second, a cold CI machine much longer. */
const SAGA_TIMEOUT_MS = 60_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const problems = [];
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
  page = await context.newPage();
  page.setDefaultTimeout(SAGA_TIMEOUT_MS);
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('response', (response) => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()} for ${response.url()}`);
  });
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });

  await page.goto(url, { waitUntil: 'domcontentloaded' });
  const buttons = await page.locator('button.scenario').count();
  if (buttons !== 6) throw new Error(`expected 6 scenario buttons, found ${buttons}`);

  await page.locator('button[data-scenario="success"]').click();

  // The order id appears, then the steps as the events arrive.
  const orderId = page.locator('#saga-order-id');
  await page.waitForFunction(
    () => /^[0-9a-f-]{36}$/.test(document.querySelector('#saga-order-id').textContent.trim()),
  );
  const id = (await orderId.textContent()).trim();
  await page.locator('#events tr[data-type="COMMAND_SENT"]').first().waitFor();
  await page.waitForFunction(
    () => document.querySelector('#saga-state').textContent.trim() === 'APPROVED',
    null,
    { timeout: SAGA_TIMEOUT_MS },
  );
  await page.waitForFunction(() => document.querySelectorAll('#steps li.done').length === 6);
  // The stream ended (the page fetched the outcome) and the list shows the order.
  await page.locator('#saga-outcome.approved').waitFor();
  await page.locator(`#order-rows tr[data-order-id="${id}"] .state.approved`).waitFor();

  const events = await page.locator('#events tr.event').count();
  const types = await page.locator('#events tr.event').evaluateAll((rows) => rows.map((r) => r.dataset.type));
  for (const expected of ['SAGA_STARTED', 'COMMAND_SENT', 'STEP_SUCCEEDED', 'ORDER_APPROVED']) {
    if (!types.includes(expected)) throw new Error(`no ${expected} event on the page: ${types.join(', ')}`);
  }
  if (problems.length > 0) throw new Error(problems.join('\n'));
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`homepage ok order_id=${id} events=${events} state=APPROVED`);
} catch (error) {
  console.error(`homepage check failed: ${error.stack || error}`);
  if (problems.length > 0) console.error(problems.join('\n'));
  if (page) {
    await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
    console.error(`screenshot of the failure: ${screenshot}`);
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
