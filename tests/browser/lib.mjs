// Shared pieces of the browser tests: Debian's chromium through playwright-core (never a
// downloaded browser), a tiny sequential scenario runner, console / CSP-violation tracking per
// page, and the control channel to the Rust driver (tests/e2e/web_app.rs), which owns the
// processes a scenario may need stopped or restarted.

import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export { assert };

/** Settings from the environment the Rust driver sets. */
export const env = {
  webUrl: required('COURIER_WEB_URL'),
  chromium: process.env.COURIER_CHROMIUM || '/usr/bin/chromium',
  screenshots: process.env.COURIER_WEB_SCREENSHOTS || '',
  only: process.env.COURIER_WEB_ONLY || '',
  control: process.env.COURIER_TEST_CONTROL === 'stdio',
  // The api's bootstrap admin (tests/harness: TEST_ADMIN_USERNAME / TEST_ADMIN_PASSWORD).
  adminUsername: process.env.COURIER_TEST_ADMIN_USERNAME || 'admin',
  adminPassword: process.env.COURIER_TEST_ADMIN_PASSWORD || '',
};

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set: run these tests through cargo (tests/e2e/web_app.rs), which starts the stack`);
    process.exit(2);
  }
  return value.replace(/\/$/, '');
}

export async function launch() {
  return chromium.launch({
    executablePath: env.chromium,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// --- control channel: "@@control <command>" on stdout, one answer line on stdin ------------------

let answers = null;
const waiting = [];

/** Asks the Rust driver to do `command` (e.g. stop-broadcaster); resolves with its answer. */
export function control(command) {
  if (!env.control) throw new Error(`'${command}' needs the Rust driver (cargo test --test e2e web_app)`);
  if (!answers) {
    answers = createInterface({ input: process.stdin });
    answers.on('line', (line) => waiting.shift()?.(line));
  }
  return new Promise((resolve, reject) => {
    waiting.push((line) => (line.startsWith('ok') ? resolve(line) : reject(new Error(`${command}: ${line}`))));
    process.stdout.write(`@@control ${command}\n`);
  });
}

// --- pages -----------------------------------------------------------------------------------

/**
 * A fresh context and page (own sessionStorage) that records console errors, page errors and
 * CSP violations. `allowErrors` are regexps of console errors a scenario expects.
 */
export async function openPage(browser, { width = 1400, height = 900 } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  const problems = { console: [], page: [], csp: [] };
  page.on('console', (message) => {
    if (message.type() === 'error') problems.console.push(message.text());
  });
  page.on('pageerror', (error) => problems.page.push(error.message));
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
    });
  });
  page.problems = problems;
  page.setDefaultTimeout(15_000);
  return page;
}

/** Fails on page errors, CSP violations or console errors not matched by `allowed`. */
export async function assertClean(page, allowed = []) {
  const csp = await page.evaluate(() => window.__csp ?? []).catch(() => []);
  assert.deepEqual(csp, [], 'Content-Security-Policy violations');
  assert.deepEqual(page.problems.page, [], 'uncaught errors in the page');
  const unexpected = page.problems.console.filter((text) => !allowed.some((re) => re.test(text)));
  assert.deepEqual(unexpected, [], 'console errors');
}

export async function screenshot(page, name) {
  if (!env.screenshots) return;
  mkdirSync(env.screenshots, { recursive: true });
  const size = page.viewportSize();
  const path = join(env.screenshots, `${name}-${size.width}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`  screenshot ${path}`);
  // The same state at phone width too, then back to the scenario's own size.
  if (size.width > 375) {
    await page.setViewportSize({ width: 375, height: 812 });
    const narrow = join(env.screenshots, `${name}-375.png`);
    await page.screenshot({ path: narrow, fullPage: true });
    console.log(`  screenshot ${narrow}`);
    await page.setViewportSize(size);
  }
}

/** Polls `check` (async, returns truthy when done) every 50 ms; fails naming `what`. */
export async function eventually(what, check, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

// --- REST, as another client -----------------------------------------------------------------

export async function http(method, path, { body, token, ifMatch, contentType = 'application/json' } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = contentType;
  if (token) headers.authorization = `Bearer ${token}`;
  if (ifMatch) headers['if-match'] = ifMatch;
  const response = await fetch(`${env.webUrl}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, headers: response.headers, data: text ? JSON.parse(text) : null };
}

// --- runner ----------------------------------------------------------------------------------

const scenarios = [];

export function scenario(name, run) {
  scenarios.push({ name, run });
}

/** Runs every scenario in order (or those whose name contains COURIER_WEB_ONLY). */
export async function runAll() {
  const browser = await launch();
  console.log(`chromium ${browser.version()} (${env.chromium}); app at ${env.webUrl}`);
  let passed = 0;
  let failed = 0;
  for (const { name, run } of scenarios) {
    if (env.only && !name.includes(env.only)) continue;
    const started = Date.now();
    const pages = [];
    const open = async (options) => {
      const page = await openPage(browser, options);
      pages.push(page);
      return page;
    };
    try {
      await run({ browser, open });
      passed += 1;
      console.log(`ok - ${name} (${Date.now() - started} ms)`);
    } catch (err) {
      failed += 1;
      console.log(`not ok - ${name} (${Date.now() - started} ms)\n  ${String(err.stack || err).replace(/\n/g, '\n  ')}`);
      for (const [i, page] of pages.entries()) {
        await screenshot(page, `FAILED-${name.replace(/\W+/g, '-')}-${i}`).catch(() => {});
        if (page.problems.console.length) console.log(`  console errors: ${JSON.stringify(page.problems.console)}`);
      }
    } finally {
      for (const page of pages) await page.context().close().catch(() => {});
    }
  }
  await browser.close();
  console.log(`browser: ${passed} passed, ${failed} failed`);
  if (passed + failed === 0) {
    console.log(`no scenario matches COURIER_WEB_ONLY='${env.only}'`);
    process.exit(1);
  }
  process.exit(failed === 0 ? 0 : 1);
}
