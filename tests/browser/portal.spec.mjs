// End-to-end scenarios of the `phoenix serve` portal in headless Chromium, driven by
// playwright-core's library API (no test runner: bin/phoenix/tests/browser.rs prepares the
// state, starts the server and runs one scenario per call, in the order the story needs).
//
//   node portal.spec.mjs SCENARIO
//
// Environment: PHOENIX_URL (http://127.0.0.1:PORT), PHOENIX_VIEWER_TOKEN,
// PHOENIX_DEPLOYER_TOKEN, PHOENIX_FLEET, PHOENIX_CHROMIUM (the browser binary, default
// /usr/bin/chromium), PHOENIX_SCREENSHOTS (a directory: when set, the main pages are saved
// there as PNG), and per scenario what it names below. Each check prints `ok: ...`; a failed
// check prints `FAILED: ...` and exits 1. Every wait has a timeout.

import { chromium } from 'playwright-core';
import path from 'node:path';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};

const BASE = env('PHOENIX_URL');
const FLEET = env('PHOENIX_FLEET', '');
const SHOTS = process.env.PHOENIX_SCREENSHOTS || '';
// Long enough for a loaded 2-core machine, short enough that a hung page fails the test.
const TIMEOUT_MS = 30_000;

function check(cond, what) {
  if (!cond) throw new Error(what);
  console.log(`ok: ${what}`);
}

async function shot(page, name, fullPage = true) {
  if (SHOTS) {
    await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage });
    console.log(`screenshot: ${name}.png`);
  }
}

/** A fresh browser context signed in with `token`. */
async function signedIn(browser, token) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  await page.goto(`${BASE}/portal/sign-in`);
  await page.fill('input[name=token]', token);
  await Promise.all([page.waitForURL(`${BASE}/portal`), page.click('button:has-text("Sign in")')]);
  return { context, page };
}

const scenarios = {
  /** The demo fleet healthy in the overview. */
  async overview(browser) {
    const { page } = await signedIn(browser, env('PHOENIX_VIEWER_TOKEN'));
    const row = page.locator(`tr:has(a[href="/portal/fleets/${FLEET}"])`).first();
    await row.waitFor();
    const health = await row.locator('td').nth(1).innerText();
    check(/^(\d+)\/\1 healthy$/.test(health.trim()), `overview shows ${FLEET} as ${health.trim()}`);
    check(
      (await row.locator('td:nth-child(2) .ok').count()) === 1,
      'the fleet health is drawn as healthy (class ok)',
    );
    const group = (await row.locator('details.group summary').first().innerText()).trim();
    check(/^core · eu: 1 sites, (\d+)\/\1 healthy$/.test(group), `its sites by tier and region: "${group}"`);
    await shot(page, 'overview');
  },

  /** The diff between two revisions, reached from the fleet page. */
  async diff(browser) {
    const { page } = await signedIn(browser, env('PHOENIX_VIEWER_TOKEN'));
    await page.goto(`${BASE}/portal/fleets/${FLEET}`);
    await shot(page, 'fleet');
    await Promise.all([page.waitForURL(/\/diff\?from=1&to=2$/), page.click('a:has-text("diff with r1")')]);
    const title = await page.locator('h1').innerText();
    check(title.includes('r1 to r2'), `the diff page is titled "${title}"`);
    check(
      (await page.locator('h2:has-text("Added (1)")').count()) === 1,
      'one instance added between r1 and r2',
    );
    const cells = await page.locator('pre').allInnerTexts();
    check(
      cells.some((t) => t.includes('replicas: 1')) && cells.some((t) => t.includes('replicas: 2')),
      'both texts of the changed spec file are shown side by side',
    );
    await shot(page, 'diff');
  },

  /** A rollback refused to a viewer session, then done from a deployer session. */
  async rollback(browser) {
    const viewer = await signedIn(browser, env('PHOENIX_VIEWER_TOKEN'));
    let page = viewer.page;
    await page.goto(`${BASE}/portal/fleets/${FLEET}`);
    check(
      (await page.locator('button:has-text("Roll back")').count()) === 0,
      'a viewer session is offered no rollback button',
    );
    // A viewer forging the form anyway (with its own session's CSRF token, taken from the
    // sign-out form) is refused by the server, not only by the missing button. The page's CSP
    // allows no script fetches, so the forged form is put into the page and submitted.
    const csrf = await page.locator('form[action="/portal/sign-out"] input[name=csrf]').inputValue();
    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith(`/portal/fleets/${FLEET}/rollback`)),
      page.evaluate(
        ({ fleet, csrf }) => {
          const form = document.createElement('form');
          form.method = 'post';
          form.action = `/portal/fleets/${fleet}/rollback`;
          for (const [name, value] of Object.entries({ csrf, to: '1' })) {
            const input = document.createElement('input');
            input.type = 'hidden';
            input.name = name;
            input.value = value;
            form.appendChild(input);
          }
          document.body.appendChild(form);
          form.submit();
        },
        { fleet: FLEET, csrf },
      ),
    ]);
    await page.waitForLoadState('load');
    const refused = { status: answer.status(), text: await page.locator('main').innerText() };
    check(refused.status === 403, `a viewer's rollback is answered ${refused.status}`);
    check(refused.text.includes('viewer role'), 'the refusal says the viewer role cannot roll back');
    await viewer.context.close();

    const deployer = await signedIn(browser, env('PHOENIX_DEPLOYER_TOKEN'));
    page = deployer.page;
    await page.goto(`${BASE}/portal/fleets/${FLEET}`);
    const before = await page.locator('h2:has-text("Revisions") + table tr').count();
    // The form posts, the server rolls back through the engine (health gates included), then
    // redirects to the fleet page: wait for that page's load after the redirect.
    await Promise.all([
      page.waitForResponse(
        (r) => r.url() === `${BASE}/portal/fleets/${FLEET}` && r.request().method() === 'GET',
        { timeout: 120_000 },
      ),
      page.click('button:has-text("Roll back to r1")'),
    ]);
    await page.waitForLoadState('load');
    const rows = page.locator('h2:has-text("Revisions") + table tr');
    check((await rows.count()) === before + 1, 'the rollback added a revision');
    const last = (await rows.last().innerText()).replace(/\s+/g, ' ');
    check(/rollback applied deploy/.test(last), `the new revision reads "${last}"`);
    const health = await page.locator('main p').first().innerText();
    check(/^(\d+)\/\1 healthy/.test(health.trim()), `after the rollback the fleet is ${health.trim()}`);
  },

  /**
   * A failing rollout seen live: the fleet page is opened, its event stream connects, then
   * the scenario prints `ready` and the test starts `phoenix apply` of a spec whose health
   * gate fails. Without reloading, the page must show the gate failing, the rollback and each
   * instance it restored, and the operation's end, in that order, as they happen.
   */
  async live(browser) {
    const { page } = await signedIn(browser, env('PHOENIX_VIEWER_TOKEN'));
    await page.goto(`${BASE}/portal/fleets/${FLEET}`);
    await page.waitForSelector('#live[data-connected=true]');
    // Let the replay of the previous operation arrive, then note what is there already.
    await page.waitForSelector('#live[data-state^=finished]');
    const already = await page.locator('#live ol li').count();
    // Marks this document: a reload would lose it. Arrival times of each kind, in page time.
    await page.evaluate((already) => {
      window.__sameDocument = true;
      window.__arrived = [];
      const list = document.querySelector('#live ol');
      new MutationObserver((records) => {
        for (const r of records) {
          for (const n of r.addedNodes) {
            window.__arrived.push({ cls: n.className, t: performance.now(), text: n.textContent });
          }
        }
      }).observe(list, { childList: true });
      window.__already = already;
    }, already);
    console.log('ready');
    await page.waitForSelector('#live ol li.ev-operation-started', { state: 'attached' });
    await page.waitForSelector('#live[data-state=running], #live[data-state=failing], #live[data-state=rolling-back], #live[data-state^=finished]');
    await page.waitForSelector('#live li.ev-gate-failed', { timeout: 60_000 });
    await page.waitForSelector('#live li.ev-rollback-started', { timeout: 60_000 });
    await shot(page, 'fleet-rollout-live');
    await page.waitForSelector('#live[data-state=finished-failed]', { timeout: 90_000 });
    const arrived = await page.evaluate(() => window.__arrived);
    const first = (cls) => arrived.findIndex((a) => a.cls.split(' ').includes(cls));
    const [start, gate, rollback, restored, end] = [
      'ev-operation-started', 'ev-gate-failed', 'ev-rollback-started', 'ev-instance-restored',
      'ev-operation-finished',
    ].map(first);
    check(start >= 0 && gate > start && rollback > gate && restored > rollback && end > restored,
      `events arrived in order: start ${start}, gate failed ${gate}, rollback ${rollback}, restored ${restored}, end ${end}`);
    check(arrived[end].t - arrived[gate].t > 100,
      `the failed gate was shown ${(arrived[end].t - arrived[gate].t).toFixed(0)} ms before the operation ended (live, not at the end)`);
    check(await page.evaluate(() => window.__sameDocument === true), 'the page was never reloaded');
    const status = await page.locator('#live .status').innerText();
    check(/finished/.test(status), `the live status reads "${status}"`);
    for (const a of arrived) console.log(`  event: ${a.text}`);
  },

  /**
   * The ledger explorer of `phoenix serve --ledger URLS` over a real 4-validator testnet:
   * every validator signing, blocks advancing live without a reload; the explorer's API with a
   * viewer token; and the audit page of a fleet applied with --ledger, every record confirmed.
   */
  async ledger(browser) {
    const token = env('PHOENIX_VIEWER_TOKEN');
    const api = async (p) => {
      const r = await fetch(`${BASE}${p}`, { headers: { Authorization: `Bearer ${token}` } });
      return { status: r.status, body: await r.json() };
    };
    const { page } = await signedIn(browser, token);
    await page.goto(`${BASE}/portal/ledger`);
    await page.waitForSelector('#ledger-live[data-connected=true]');
    const rows = await page.locator('#validators tr td:last-child').allInnerTexts();
    check(rows.length === 4, `the explorer lists ${rows.length} validators`);
    check((await page.locator('#quorum').getAttribute('class')) === 'ok',
      `a quorum signs: "${await page.locator('#quorum').innerText()}"`);
    const h0 = Number(await page.locator('#finalized-height').innerText());
    await page.evaluate(() => { window.__sameDocument = true; });
    // Blocks keep coming on an idle testnet (empty blocks); two new ones within 60 s.
    await page.waitForFunction(
      (h0) => Number(document.getElementById('ledger-live').dataset.latest || 0) >= h0 + 2,
      h0,
      { timeout: 60_000 },
    );
    const h1 = Number(await page.locator('#finalized-height').innerText());
    check(h1 >= h0 + 2, `the finalized height advanced live from ${h0} to ${h1}`);
    // The tip's certificate may still be on its way; older blocks carry theirs.
    const signers = await page.locator('#blocks tbody tr td:last-child').allInnerTexts();
    check(signers.some((n) => Number(n) >= 3), `blocks show who finalized them: ${signers.join(' ')}`);
    check((await page.locator(`#blocks tr[data-height="${h1}"]`).count()) === 1,
      `block ${h1} arrived as a new row on top`);
    check(await page.evaluate(() => window.__sameDocument === true), 'the page was never reloaded');
    await shot(page, 'ledger');

    const v = await api('/api/v1/ledger/validators');
    check(v.status === 200 && v.body.validators.length === 4 && v.body.quorum_signing === true,
      `GET /api/v1/ledger/validators: ${v.body.signing} of ${v.body.validators.length} signing`);
    const b = await api('/api/v1/ledger/blocks?limit=3');
    check(b.status === 200 && b.body.blocks.length === 3, 'GET /api/v1/ledger/blocks?limit=3 gives 3 blocks');
    const one = await api(`/api/v1/ledger/blocks/${b.body.blocks[0].height}`);
    check(one.status === 200 && one.body.hash === b.body.blocks[0].hash, 'GET /api/v1/ledger/blocks/{height}');
    const proof = await api(`/api/v1/ledger/proof/audit/${FLEET}/1`);
    check(proof.status === 200, `GET /api/v1/ledger/proof/audit/${FLEET}/1 answers ${proof.status}`);
    const state = await api(`/api/v1/ledger/state/audit/${FLEET}/1`);
    check(state.status === 200 && state.body.value && state.body.value.record,
      `GET /api/v1/ledger/state/audit/${FLEET}/1 holds the fleet's first record`);
    const missing = await api(`/api/v1/ledger/state/audit/${FLEET}/999999`);
    check(missing.status === 404, `a state entry the ledger lacks is ${missing.status}`);
    const bad = await api('/api/v1/ledger/tx/not-a-hash');
    check(bad.status === 400 && bad.body.error, `a bad transaction hash is ${bad.status}: ${bad.body.error}`);
    const none = await api(`/api/v1/ledger/tx/${'0'.repeat(64)}`);
    check([200, 404].includes(none.status), `an unknown transaction answers ${none.status}`);

    // The records are sent as the apply runs; reload until all are finalized (bounded).
    let summary = '';
    for (let i = 0; i < 30; i++) {
      await page.goto(`${BASE}/portal/fleets/${FLEET}/audit`);
      summary = await page.locator('#ledger-confirmation').innerText();
      if ((await page.locator('#ledger-confirmation').getAttribute('class')) === 'ok') break;
      await page.waitForTimeout(1000);
    }
    check(/(\d+) of \1 records confirmed/.test(summary), `the audit page says "${summary}"`);
    const cells = await page.locator('#records td.ledger-confirmed').count();
    const all = await page.locator('#records tr').count();
    check(cells === all - 1, `every record row is marked confirmed (${cells} of ${all - 1})`);
    const a = await api(`/api/v1/fleets/${FLEET}/audit`);
    check(a.body.ledger && a.body.ledger.confirmed === a.body.records.length,
      `GET /api/v1/fleets/${FLEET}/audit has ledger.confirmed = ${a.body.ledger && a.body.ledger.confirmed}`);
    await shot(page, 'audit-ledger');
  },

  /**
   * An instance's logs, live: from the fleet page to web-0's page, which shows the tail of its
   * log and follows it; then the scenario asks web-0's http.server for a path no one asked for
   * before (the server logs each request), and the line appears on the page without a reload.
   */
  async logs(browser) {
    const token = env('PHOENIX_VIEWER_TOKEN');
    const api = async (p) => {
      const r = await fetch(`${BASE}${p}`, { headers: { Authorization: `Bearer ${token}` } });
      return { status: r.status, body: await r.json() };
    };
    const inst = await api(`/api/v1/fleets/${FLEET}/instances/web-0`);
    const port = inst.body.ports && inst.body.ports.port;
    check(inst.status === 200 && port > 0, `web-0 listens on port ${port}`);
    const { page } = await signedIn(browser, token);
    await page.goto(`${BASE}/portal/fleets/${FLEET}`);
    await Promise.all([
      page.waitForURL(new RegExp(`/portal/fleets/${FLEET}/instances/web-0$`)),
      page.click(`a[href="/portal/fleets/${FLEET}/instances/web-0"]`),
    ]);
    const tail = await page.locator('#log-lines li').count();
    check(tail > 0, `the instance page shows the tail of web-0's log (${tail} lines)`);
    await page.waitForSelector('#logs-live[data-connected=true]');
    await page.evaluate(() => { window.__sameDocument = true; });
    const marker = `/written-while-the-page-was-open-${Date.now()}`;
    // The unit answers 404 and logs the request line (to its stderr, i.e. its log file).
    await fetch(`http://127.0.0.1:${port}${marker}`).then((r) => r.text()).catch(() => '');
    const line = page.locator('#log-lines li.arrived', { hasText: marker });
    await line.first().waitFor({ timeout: 30_000 });
    check((await line.count()) === 1, `the new line arrived once: "${(await line.first().innerText()).trim()}"`);
    check((await page.locator('#log-lines li', { hasText: marker }).count()) === 1,
      'and was not in the tail the page was rendered with');
    check(await page.evaluate(() => window.__sameDocument === true), 'the page was never reloaded');
    await shot(page, 'instance-logs');
  },

  /**
   * The plan page: demand against capacity per tier and per site, the validator sets and the
   * timeline drawn as SVG, each drawing holding the numbers of the plan's JSON.
   */
  async plan(browser) {
    const token = env('PHOENIX_VIEWER_TOKEN');
    const r = await fetch(`${BASE}/api/v1/fleets/${FLEET}/plan`, { headers: { Authorization: `Bearer ${token}` } });
    const plan = await r.json();
    check(r.status === 200, `GET /api/v1/fleets/${FLEET}/plan answers ${r.status}`);
    const { page } = await signedIn(browser, token);
    await page.goto(`${BASE}/portal/fleets/${FLEET}`);
    await Promise.all([page.waitForURL(/\/plan$/), page.click(`a[href="/portal/fleets/${FLEET}/plan"]`)]);
    const sites = Object.keys(plan.sites);
    for (const [id, rows] of [['tier-cpu', plan.tiers.length], ['tier-memory', plan.tiers.length],
      ['tier-storage', plan.tiers.length], ['site-cpu', Math.min(sites.length, 60)],
      ['site-memory', Math.min(sites.length, 60)], ['site-storage', Math.min(sites.length, 60)]]) {
      const n = await page.locator(`svg#${id} g.row`).count();
      check(n === rows, `chart ${id} draws ${n} rows (the plan has ${rows})`);
    }
    for (const t of plan.tiers) {
      for (const [chart, key] of [['tier-cpu', 'cpu'], ['tier-memory', 'memory_bytes'], ['tier-storage', 'storage_bytes']]) {
        const g = page.locator(`svg#${chart} g.row[data-label="${t.tier}"]`);
        const got = [await g.getAttribute('data-demand-max'), await g.getAttribute('data-capacity-max')].map(Number);
        check(got[0] === t.demand[key].max && got[1] === t.capacity[key].max,
          `${chart} ${t.tier}: demand up to ${got[0]} of capacity ${got[1]}, as in the plan`);
      }
      const cell = page.locator(`#tier-numbers tr[data-label="${t.tier}"] td[data-demand-cpu-max]`);
      check(Number(await cell.getAttribute('data-demand-cpu-max')) === t.demand.cpu.max,
        `the tier table says ${t.tier} needs "${(await cell.innerText()).trim()}"`);
    }
    const box = await page.locator('svg#tier-cpu g.row rect.capacity').first().boundingBox();
    check(box && box.width > 10 && box.height > 5, `the capacity bars are drawn (${box && box.width.toFixed(0)} px wide)`);
    for (const v of plan.validator_sets) {
      const svg = page.locator(`svg.validator-set[data-set="${v.name}"]`);
      const squares = await svg.locator('rect.validator').count();
      const margin = v.f - v.worst_site[1];
      check(Number(await svg.getAttribute('data-n')) === v.n && squares === Math.min(v.n, 200) &&
        Number(await svg.getAttribute('data-quorum')) === v.quorum &&
        Number(await svg.getAttribute('data-margin')) === margin,
        `validator set ${v.name}: ${squares} validators drawn, n ${v.n}, f ${v.f}, quorum ${v.quorum}, margin ${margin}`);
      const row = page.locator(`#validator-numbers tr[data-set="${v.name}"]`);
      check((await row.locator('td.margin').innerText()).trim() === String(margin), `the table gives its margin ${margin}`);
    }
    if (plan.timeline) {
      const projects = Object.keys(plan.timeline.projects);
      check((await page.locator('svg#timeline g.project').count()) === projects.length,
        `the timeline draws ${projects.length} projects`);
      const critical = await page.locator('svg#timeline g.project.critical').evaluateAll(
        (gs) => gs.map((g) => g.dataset.project));
      check(JSON.stringify([...critical].sort()) === JSON.stringify([...plan.timeline.critical_path].sort()),
        `the critical path is highlighted: ${critical.join(', ')}`);
      for (const name of projects) {
        const g = page.locator(`svg#timeline g.project[data-project="${name}"]`);
        check(Number(await g.getAttribute('data-finish-hours')) === plan.timeline.projects[name].finish_hours.max,
          `${name} finishes by hour ${plan.timeline.projects[name].finish_hours.max}`);
      }
    }
    check((await page.locator('#phases tr').count()) === plan.phases.length + 1,
      `the phases table lists ${plan.phases.length} phases with their waves`);
    await shot(page, 'plan');
  },

  /** The audit log shown as verified (PHOENIX_EXPECT=verified) or broken (=broken). */
  async audit(browser) {
    const expect = env('PHOENIX_EXPECT');
    const { page } = await signedIn(browser, env('PHOENIX_VIEWER_TOKEN'));
    await page.goto(`${BASE}/portal/fleets/${FLEET}/audit`);
    const v = page.locator('#verification');
    const cls = await v.getAttribute('class');
    const text = await v.innerText();
    if (expect === 'verified') {
      check(cls === 'ok' && text.startsWith('Verified'), `the audit page says "${text}"`);
      await shot(page, 'audit');
    } else {
      const seq = env('PHOENIX_TAMPERED_SEQ');
      check(cls === 'bad' && text.startsWith('Does not verify'), `the audit page says "${text}"`);
      const problems = await page.locator('#verification + ul li').allInnerTexts();
      check(
        problems.some((p) => p.startsWith(`record ${seq}:`)),
        `the problems name the edited record ${seq}: ${JSON.stringify(problems)}`,
      );
      await shot(page, 'audit-broken');
    }
  },

  /**
   * The overview of a big fleet, loaded and rendered: PHOENIX_RUNS loads after one warm-up,
   * each timed from navigation start to the load event (the page has no script: rendered
   * then), and the first contentful paint. Prints `measure: ...` lines.
   */
  async measure(browser) {
    const runs = Number(env('PHOENIX_RUNS', '5'));
    const { page } = await signedIn(browser, env('PHOENIX_VIEWER_TOKEN'));
    const load = [];
    const paint = [];
    for (let i = 0; i <= runs; i++) {
      await page.goto(`${BASE}/portal`, { waitUntil: 'load' });
      const t = await page.evaluate(() => {
        const nav = performance.getEntriesByType('navigation')[0];
        const fcp = performance.getEntriesByName('first-contentful-paint')[0];
        return { load: nav.loadEventEnd - nav.startTime, fcp: fcp ? fcp.startTime : NaN };
      });
      if (i > 0) {
        load.push(t.load);
        paint.push(t.fcp);
      }
    }
    const row = `tr:has(a[href="/portal/fleets/${FLEET}"])`;
    const sites = await page.locator(`${row} .site`).count();
    check(sites >= Number(env('PHOENIX_MIN_SITES', '1')), `the overview lists ${sites} sites of ${FLEET}`);
    const groups = await page.locator(`${row} details.group summary`).allInnerTexts();
    check(groups.length > 1, `grouped by tier and region: ${groups.slice(0, 3).join('; ')}; ...`);
    // Chromium reports no paint entry for some reloads of an identical page; those are left out.
    const median = (xs) => {
      const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
      return v.length ? v[Math.floor(v.length / 2)] : NaN;
    };
    const fmt = (xs) => xs.map((x) => x.toFixed(0)).join(', ');
    console.log(`measure: sites=${sites} runs=${runs} load_median_ms=${median(load).toFixed(0)} load_max_ms=${Math.max(...load).toFixed(0)} fcp_median_ms=${median(paint).toFixed(0)}`);
    console.log(`measure: load_ms=[${fmt(load)}] fcp_ms=[${fmt(paint)}]`);
    await shot(page, 'overview-340-sites', false);
  },
};

const name = process.argv[2];
const scenario = scenarios[name];
if (!scenario) {
  console.error(`FAILED: no scenario ${name}; one of: ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: env('PHOENIX_CHROMIUM', '/usr/bin/chromium'),
  // Root in a container has no user namespaces for Chromium's sandbox; the pages are our own.
  args: ['--no-sandbox'],
  timeout: TIMEOUT_MS,
});
try {
  await scenario(browser);
} catch (e) {
  console.error(`FAILED: ${name}: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
