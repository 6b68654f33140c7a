// Drives Debian's Chromium (headless) against a real `steward serve`, as people use the
// dashboard. Run by tests/tests/server/dashboard_browser.rs, which starts the server, prepares
// what each phase needs and checks the registry after it; this script fails (exit 1, saying
// which step) when a page does not show or refuse what it must.
//
//   node dashboard.mjs <phase>     phase: approve | unfreeze
//
// Environment: STEWARD_URL, CHROMIUM, SCREENSHOTS (a directory), AGENT (its name),
// REQUESTER, APPROVER, SECOND_APPROVER (e-mail addresses), PASSWORD_<n> for each person
// (PASSWORD_REQUESTER, PASSWORD_APPROVER, PASSWORD_SECOND_APPROVER).

import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const env = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`dashboard.mjs: ${name} is not set`);
    process.exit(2);
  }
  return v;
};
const BASE = env("STEWARD_URL");
const SHOTS = env("SCREENSHOTS");
const AGENT = env("AGENT");
mkdirSync(SHOTS, { recursive: true });

let phaseStep = "start";
function check(ok, what) {
  if (!ok) throw new Error(what);
}

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
  ],
});

// Each person in a browser of their own (a fresh profile: playwright's contexts share nothing),
// with JavaScript on (htmx sends the forms) or off (plain forms and redirects).
async function signIn(role, { javaScript = true } = {}) {
  const email = env(role);
  const context = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    javaScriptEnabled: javaScript,
  });
  const page = await context.newPage();
  // Console errors include what the Content-Security-Policy refused (an inline style, eval).
  const violations = [];
  page.on("console", (m) => {
    if (m.type() === "error") violations.push(`console error at ${page.url()} (${phaseStep}, ${m.location().url}): ${m.text()}`);
  });
  page.on("dialog", (d) => d.accept());
  await page.goto(`${BASE}/`);
  // Not signed in: to the issuer's sign-in form.
  check(page.url().startsWith(`${BASE}/oauth2/v1/authorize`), `${email}: not sent to sign in (at ${page.url()})`);
  await page.getByLabel(/e-?mail/i).fill(email);
  await page.getByLabel(/password/i).fill(env(`PASSWORD_${role}`));
  await Promise.all([page.waitForURL(`${BASE}/`), page.getByRole("button", { name: /sign in/i }).click()]);
  check((await page.textContent("header")).includes(email), `${email}: the page does not say who is signed in`);
  if (javaScript) {
    check((await page.evaluate(() => typeof htmx)) === "object", `${email}: htmx did not load`);
  }
  return { email, context, page, violations, javaScript };
}

// No serious or critical accessibility violation on the page (axe-core), nothing refused by
// the Content-Security-Policy, and a screenshot.
async function audit(who, name) {
  check(who.violations.length === 0, `${name}: ${who.violations.join("; ")}`);
  phaseStep = `axe on ${name}`;
  await who.page.evaluate(axeSource);
  const result = await who.page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    (await axe.run(document, { resultTypes: ["violations"] })).violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.length,
    })),
  );
  const serious = result.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(serious.length === 0, `${name}: accessibility violations: ${JSON.stringify(serious)}`);
  await who.page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  // axe-core leaves empty `style` attributes behind, which htmx would copy when it swaps (and
  // the Content-Security-Policy refuse): go on from the page as the server sends it.
  await who.page.reload();
  phaseStep = `after ${name}`;
}

// A form POST as this browser's session, bypassing the page (what a forger can do).
async function forge(who, path, form, headers = {}) {
  const r = await who.context.request.post(`${BASE}${path}`, { form, headers, maxRedirects: 0 });
  return r.status();
}

// The inbox says the decision is recorded (after a page load, or after htmx's swap).
async function recorded(who, what) {
  try {
    await who.page.locator("main p", { hasText: "is recorded" }).first().waitFor({ timeout: 15000 });
  } catch {
    throw new Error(`${what} is not confirmed: ${(await who.page.textContent("main")).slice(0, 300)}`);
  }
}

async function approvalId(who) {
  await who.page.goto(`${BASE}/approvals`);
  const card = who.page.locator("article.approval", { hasText: AGENT }).first();
  check((await card.count()) === 1, `${who.email}: the request for ${AGENT} is not in the inbox`);
  return (await card.getAttribute("aria-labelledby")).replace(/^ap-/, "");
}

async function approvePhase() {
  // The requester sees the request, no Approve button; a forged Approve from their session is
  // refused by the API's rules, and the request stays open.
  const requester = await signIn("REQUESTER");
  const id = await approvalId(requester);
  const card = requester.page.locator("article.approval", { hasText: AGENT });
  check((await card.getByRole("button", { name: "Approve" }).count()) === 0, "the requester sees an Approve button");
  const csrf = await requester.page.locator('input[name="csrf"]').first().inputValue();
  const forged = await forge(requester, `/approvals/${id}/approve`, { csrf, reason: "mine" });
  check(forged >= 400, `the requester's forged approval answered ${forged}`);

  // The approver: CSRF-less and cross-site posts are refused.
  const approver = await signIn("APPROVER");
  await approvalId(approver);
  const token = await approver.page.locator('input[name="csrf"]').first().inputValue();
  const noToken = await forge(approver, `/approvals/${id}/approve`, { reason: "no token" });
  check(noToken === 403, `a form without its token answered ${noToken}`);
  const crossSite = await forge(
    approver,
    `/approvals/${id}/approve`,
    { csrf: token, reason: "from evil" },
    { Origin: "https://evil.example", "Sec-Fetch-Site": "cross-site" },
  );
  check(crossSite === 403, `a cross-site form answered ${crossSite}`);
  await audit(approver, "approvals");

  // The approver approves in the inbox; htmx sends the form and swaps in the answer without
  // reloading the page (what the page set before is still there).
  const mine = approver.page.locator("article.approval", { hasText: AGENT });
  await mine.getByLabel("Reason").fill("needed for on-call triage");
  await approver.page.evaluate(() => {
    window.stewardBeforeApprove = true;
  });
  await mine.getByRole("button", { name: "Approve" }).click();
  await recorded(approver, "the decision");
  check(
    (await approver.page.evaluate(() => window.stewardBeforeApprove)) === true,
    "the page was reloaded: htmx did not send the form",
  );
  check(approver.page.url().endsWith("/approvals"), `the address changed to ${approver.page.url()}`);

  // The agent page shows it active, with its client.
  await approver.page.goto(`${BASE}/agents?q=${encodeURIComponent(AGENT)}`);
  await approver.page.getByRole("link", { name: AGENT }).click();
  for (let i = 0; i < 60; i++) {
    const facts = await approver.page.textContent("dl.facts");
    if (facts.includes("active")) break;
    await approver.page.waitForTimeout(250);
    await approver.page.reload();
  }
  const facts = await approver.page.textContent("dl.facts");
  check(facts.includes("active"), `the agent page does not show ${AGENT} active: ${facts}`);
  check(!/Client\s*none/.test(facts), "the agent page shows no client");
  await audit(approver, "agent");
  await approver.page.goto(`${BASE}/agents`);
  await audit(approver, "inventory");
}

async function unfreezePhase() {
  // After a token request for an excluded scope: the overview shows the freeze; two approvers
  // unfreeze it from the inbox.
  const first = await signIn("APPROVER");
  const overview = await first.page.textContent("main");
  check(overview.includes(AGENT) && overview.includes("frozen"), `the overview does not show the freeze: ${overview}`);
  await audit(first, "overview");
  await approvalId(first);
  const card = first.page.locator("article.approval", { hasText: AGENT });
  check((await card.getByRole("button", { name: "Decommission" }).count()) === 1, "no Decommission choice");
  await card.getByLabel("Reason").fill("false positive: test traffic");
  await card.getByRole("button", { name: "Unfreeze" }).click();
  await recorded(first, "the first vote");

  // The second approver has JavaScript off: the same forms, posted and answered as pages.
  const second = await signIn("SECOND_APPROVER", { javaScript: false });
  await approvalId(second);
  const card2 = second.page.locator("article.approval", { hasText: AGENT });
  await card2.getByLabel("Reason").fill("agreed");
  await Promise.all([second.page.waitForNavigation(), card2.getByRole("button", { name: "Unfreeze" }).click()]);
  await recorded(second, "the second vote");

  // The other pages a security approver reads: campaigns, and the audit trail with its chain.
  // (In the first approver's browser, with script: axe-core runs there.)
  await first.page.goto(`${BASE}/campaigns`);
  await audit(first, "campaigns");
  await first.page.goto(`${BASE}/audit?q=${encodeURIComponent(AGENT)}`);
  const trail = await first.page.textContent("main");
  check(trail.includes("Hash chain verified"), `the audit page does not verify the chain: ${trail.slice(0, 300)}`);
  await audit(first, "audit");
}

const phase = process.argv[2];
try {
  if (phase === "approve") await approvePhase();
  else if (phase === "unfreeze") await unfreezePhase();
  else throw new Error(`unknown phase ${phase}`);
  console.log(`dashboard.mjs: ${phase}: ok`);
} catch (e) {
  console.error(`dashboard.mjs: ${phase}: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
