// Browser tests of the migration GUI: playwright-core drives Debian's chromium
// (headless) against web-lab, a lab this test starts and stops by PID: the real oma
// binary serving the built GUI, and a VMA that copies real data into the OMA's exports.
// Screenshots of every page are saved to $MK_ARTIFACTS (build/test-artifacts/web).
// HTTPS: the lab's OMA serves the GUI and the API over HTTPS (web-lab --https: `oma
// --https on`, its own self-signed certificate, as it serves any address but loopback by
// default), and Chromium trusts exactly that certificate: its key is pinned with
// --ignore-certificate-errors-spki-list (no blanket ignore, no ignoreHTTPSErrors). Every
// request the page makes, the live event stream included, must be https://.
// Contract: every API request the page makes and every response it gets is checked
// against the OMA's own OpenAPI document (tests/api/contract.mjs); one mismatch fails
// the test.
//
// Environment (set by CTest): MK_WEB_LAB, MK_OMA, MK_WEB_DIST, MK_WEB_MODULES,
// MK_ARTIFACTS, MK_CHROMIUM.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, generateKeyPairSync } from "node:crypto";
import { createRequire } from "node:module";
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";

import { Contract } from "../api/contract.mjs";
import { Lab, LONG, until, labCertificate, pinnedGet, plainGet, spkiPin } from "./web_lab.mjs";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this test through CTest (ctest -L web)`);
  return v;
};
const require = createRequire(path.join(env("MK_WEB_MODULES"), "noop.js"));
const { chromium } = require("playwright-core");

const ARTIFACTS = env("MK_ARTIFACTS");

// Checks every exchange of `page` with the OMA's API against the document; violations
// and the number of exchanges checked are kept for the last subtest.
class ContractWatch {
  constructor(page, contract) {
    this.contract = contract;
    this.violations = [];
    this.checked = 0;
    this.pending = [];
    page.on("response", (resp) => this.pending.push(this.check(resp)));
  }
  async check(resp) {
    const u = new URL(resp.url());
    if (u.hostname !== "127.0.0.1" || !/^\/(api\/|health$|metrics$)/.test(u.pathname)) return;
    const req = resp.request();
    const contentType = resp.headers()["content-type"] ?? "";
    let requestBody, body;
    try {
      const sent = req.postData();
      if (sent) requestBody = JSON.parse(sent);
      // An event stream never ends: its status and media type are checked, not its body.
      if (contentType.startsWith("application/json")) body = await resp.json();
    } catch (e) {
      if (String(e).includes("Target page, context or browser has been closed")) return;
      this.violations.push(`${req.method()} ${u.pathname}: unreadable: ${e}`);
      return;
    }
    const problems = this.contract.check({ method: req.method(), url: resp.url(), requestBody, status: resp.status(),
                                           contentType, body });
    this.checked++;
    this.violations.push(...problems);
    // Documented, but never expected in these flows: an internal error (a reply that broke
    // the document is one, with --strict-api-replies).
    if (resp.status() === 500) this.violations.push(`${req.method()} ${u.pathname} -> 500: ${body?.error}`);
  }
  async settle() {
    while (this.pending.length) await Promise.all(this.pending.splice(0));
  }
}

// Chromium, headless, trusting the certificate whose SPKI pin is `pin` (and the public
// CAs, of which the OMA's self-signed certificate is none).
function launchChromium(pin) {
  return chromium.launch({
    executablePath: env("MK_CHROMIUM"),
    args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           `--ignore-certificate-errors-spki-list=${pin}`],
  });
}

// Chromium trusting exactly the lab OMA's certificate.
const launchPinned = (info) => launchChromium(spkiPin(labCertificate(info)));

// Every request of `page` that did not go over TLS (http:, ws:), and the event stream's
// responses (the GUI reads /api/v1/events with a streaming fetch).
class TransportWatch {
  constructor(page) {
    this.insecure = [];
    this.requests = 0;
    this.eventStreams = [];
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (u.protocol === "http:" || u.protocol === "ws:") this.insecure.push(r.url());
      else if (u.protocol === "https:") this.requests++;
    });
    page.on("response", (r) => {
      const u = new URL(r.url());
      if (u.pathname === "/api/v1/events")
        this.eventStreams.push({ protocol: u.protocol, status: r.status(), type: r.headers()["content-type"] ?? "" });
    });
  }
  // At least one event stream opened over https and answered 200 text/event-stream.
  assertLiveOverHttps() {
    const ok = this.eventStreams.filter((e) => e.protocol === "https:" && e.status === 200 &&
                                               e.type.startsWith("text/event-stream"));
    assert.ok(ok.length > 0, `no event stream over https: ${JSON.stringify(this.eventStreams)}`);
  }
}

// The page is the OMA's, over TLS, with its certificate; plain HTTP to the same port is
// refused with the OMA's 400 that names https://, for the browser and any other client.
// Returns the plain-HTTP origin the browser was sent to (on purpose).
async function assertHttps(page, info) {
  assert.match(info.gui_url, /^https:\/\/127\.0\.0\.1:\d+\/$/);
  assert.match(info.api_url, /^https:\/\//);
  const reply = await page.goto(info.gui_url);
  assert.equal(reply.status(), 200);
  assert.equal(await page.evaluate(() => location.protocol), "https:");
  const tls = await reply.securityDetails();
  assert.ok(tls && /^TLS 1\.[23]$/.test(tls.protocol), `TLS details: ${JSON.stringify(tls)}`);
  // The GUI's origin answers the API over the same certificate (what the page's fetches use).
  const health = await pinnedGet(info, new URL("/health", info.gui_url).href);
  assert.equal(health.status, 200, health.text);
  for (const url of [info.gui_url, info.api_url + "/api/v1/vms"]) {
    const plain = await plainGet(url.replace(/^https:/, "http:"));
    assert.equal(plain.status, 400, `plain HTTP to ${url}: ${JSON.stringify(plain)}`);
    assert.match(plain.text, /speaks HTTPS only: use https:\/\//);
  }
  const plainOrigin = new URL(info.gui_url.replace(/^https:/, "http:")).origin;
  const refused = await page.goto(plainOrigin + "/");
  assert.equal(refused.status(), 400);
  assert.match(await page.locator("body").innerText(), /speaks HTTPS only/);
  assert.equal(await page.locator("#token").count(), 0);
  return plainOrigin;
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: false, animations: "disabled" });
}

async function signIn(page, url, token) {
  await page.goto(url);
  await page.locator("#token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Virtual machines" }).waitFor({ timeout: LONG });
}

async function selectVm(page, name) {
  const button = page.getByRole("button", { name, exact: true });
  if ((await button.getAttribute("aria-pressed")) !== "true") await button.click();
  await page.getByRole("region", { name }).waitFor();
}

test("migration GUI against a running lab", { timeout: 900_000 }, async (t) => {
  rmSync(ARTIFACTS, { recursive: true, force: true }); // this run's screenshots only
  mkdirSync(ARTIFACTS, { recursive: true });
  const lab = new Lab(null, ["--https"]);
  let browser;
  try {
    let info = await lab.info(0);
    const token = lab.token(info);
    const addedFromDiscovery = !info.vm_added;
    browser = await launchPinned(info);
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    const docReply = await pinnedGet(info, `${info.api_url}/api/v1/openapi.json`, { Authorization: `Bearer ${token}` });
    assert.equal(docReply.status, 200);
    const contract = await Contract.load(JSON.parse(docReply.text));
    const watch = new ContractWatch(page, contract);
    const transport = new TransportWatch(page);
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    const external = [];
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (u.protocol.startsWith("http") && u.hostname !== "127.0.0.1") external.push(r.url());
    });

    await t.test("a browser that trusts another key refuses the OMA's certificate", async () => {
      const other = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "der" });
      const stranger = await launchChromium(createHash("sha256").update(other).digest("base64"));
      try {
        const p = await (await stranger.newContext()).newPage();
        await assert.rejects(p.goto(info.gui_url), /net::ERR_CERT_AUTHORITY_INVALID/);
      } finally {
        await stranger.close();
      }
    });

    let plainOrigin;
    await t.test("the GUI is served over HTTPS with the pinned certificate; plain HTTP is refused", async () => {
      plainOrigin = await assertHttps(page, info);
      await shot(page, "00-plain-http-refused");
    });

    await t.test("a wrong token is refused", async () => {
      await page.goto(info.gui_url);
      await page.locator("#token").fill("mko_" + "0".repeat(64));
      await page.getByRole("button", { name: "Sign in" }).click();
      const error = page.locator("#login-error");
      await error.waitFor({ timeout: LONG });
      assert.match(await error.innerText(), /refused this token/);
      assert.equal(await page.getByRole("heading", { name: "Virtual machines" }).count(), 0);
      await shot(page, "01-login-refused");
    });

    await t.test("log in with the admin token; the VMs page lists the lab VM", async () => {
      await signIn(page, info.gui_url, token);
      if (!info.vm_added) {
        // Add it from discovery (the VMA lists vCenter's VMs with their disks).
        await page.getByRole("button", { name: "Discover VMs…" }).click();
        const dialog = page.getByRole("dialog");
        if (info.blocked_vm) {
          // A VM with a snapshot of its own: marked blocked, its blocker and remedy shown, no Add.
          const blockers = dialog.getByRole("list", { name: `Blockers of ${info.blocked_vm}` });
          await blockers.waitFor({ timeout: LONG });
          assert.match(await blockers.innerText(), /snapshot\(s\) of its own \("before-upgrade"\)/);
          assert.match(await blockers.innerText(), /delete or consolidate them/);
          assert.equal(await dialog.getByRole("button", { name: `Add ${info.blocked_vm}` }).count(), 0);
        }
        await dialog.getByRole("button", { name: `Add ${info.vm.name}` }).click({ timeout: LONG });
        await dialog.getByText("managed").first().waitFor({ timeout: LONG });
        await shot(page, "02-discovery");
        await dialog.getByRole("button", { name: "Close" }).click();
      }
      const row = page.locator(`tr[data-vm="${info.vm.name}"]`);
      await row.waitFor();
      assert.match(await row.innerText(), /2 · \d+(\.\d+)? MiB/);
      assert.match(await row.innerText(), /none yet/);
      await until("live updates", async () => (await page.getByTestId("link-state").innerText()).includes("Live"));
      transport.assertLiveOverHttps();
      await shot(page, "03-vms");
    });

    let jobUrl;
    await t.test("start a full replication; progress reaches 100 % with the job's steps", async () => {
      await selectVm(page, info.vm.name);
      await page.getByRole("button", { name: "Start full pass" }).click();
      await page.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/, { timeout: LONG });
      jobUrl = page.url();
      const pct = page.getByTestId("job-percent");
      // Live progress pushed by the OMA: a value strictly between 0 and 100 shows up.
      const seen = await until("progress between 0 and 100 %", async () => {
        const v = parseFloat(await pct.innerText());
        return v > 0 && v < 100 ? v : null;
      });
      assert.ok(seen > 0 && seen < 100);
      await until("two throughput samples", async () => (await page.locator(".chart .u-over").count()) > 0);
      await shot(page, "04-job-copying");
      await until("100 %", async () => (await pct.innerText()).trim() === "100 %");
      await until("completed", async () => (await page.locator(".card-actions .badge").first().innerText()) === "completed");
      const steps = page.getByRole("list", { name: "Job steps" });
      for (const name of ["preparing volumes", "exporting", "starting copy on the VMA", "copying", "committing change IDs"]) {
        await until(`step ${name} completed`, async () => {
          const item = steps.locator("li", { hasText: name }).first();
          return (await item.count()) > 0 && (await item.locator(".badge").innerText()) === "completed";
        });
      }
      const log = await page.getByRole("list", { name: "Event log" }).innerText();
      assert.match(log, /job completed/);
      // Every disk copied all it planned to.
      const rows = await page.getByRole("table", { name: "Disk progress" }).locator("tbody tr").allInnerTexts();
      assert.equal(rows.length, 2);
      for (const r of rows) assert.match(r, /(\d+(?:\.\d+)? \S+) \/ \1/, r);
      // Where the time went: every disk has every phase of a pass, in pass order (the
      // fake VMA measures none: only the OMA's reporting is there).
      const phases = page.getByRole("table", { name: "Pass phases" });
      await until("the phase breakdown", async () => (await phases.count()) > 0);
      const heads = await phases.locator("thead th").allTextContents();  // DOM text: the CSS upper-cases headings
      const want = info.vma === "real"
        ? ["Snapshot", "Change query", "Reader start", "Planning", "Copying", "Flushing", "Snapshot removal", "Reporting"]
        : ["Reporting"];
      assert.deepEqual(heads.slice(1), want);
      const cells = await phases.locator("tbody td[data-phase]").allInnerTexts();
      assert.equal(cells.length, 2 * want.length);
      for (const c of cells) assert.match(c, /^\d+\.\d+ s$/, c);
      await shot(page, "05-job-completed");
    });

    await t.test("an incremental pass gives the VM a predicted downtime and cutover readiness", async () => {
      await page.getByRole("link", { name: "Virtual machines" }).click();
      await selectVm(page, info.vm.name);
      await page.getByRole("button", { name: "Start incremental pass" }).click();
      await page.waitForURL(/#\/jobs\//);
      await until("incremental completed", async () =>
        (await page.locator(".card-actions .badge").first().innerText()) === "completed");
      await page.getByRole("link", { name: "Virtual machines" }).click();
      const row = page.locator(`tr[data-vm="${info.vm.name}"]`);
      await until("ready", async () => /ready/.test(await row.innerText()) && !/not ready/.test(await row.innerText()));
      assert.match(await row.innerText(), /incremental/);
      assert.match(await row.innerText(), /≈ /);
    });

    await t.test("a schedule is set and still shown after the OMA restarts", async () => {
      await selectVm(page, info.vm.name);
      await page.locator("#interval").fill("15");
      await page.getByRole("button", { name: "Save schedule" }).click();
      await until("schedule shown", async () => /Every 15 min/.test(await page.getByTestId("schedule-state").innerText()));
      const before = info.https.fingerprint;
      lab.restartOma();
      info = await lab.info(1);
      // The OMA keeps its certificate: the browser's pin still holds.
      assert.equal(info.https.fingerprint, before);
      transport.eventStreams = [];
      await signIn(page, info.gui_url, token); // a new port is a new origin: sign in again
      assert.equal(await page.evaluate(() => location.protocol), "https:");
      await until("live updates after the restart", async () =>
        (await page.getByTestId("link-state").innerText()).includes("Live"));
      transport.assertLiveOverHttps();
      const row = page.locator(`tr[data-vm="${info.vm.name}"]`);
      await until("schedule in the list", async () => /every 15 min/.test(await row.innerText()));
      await selectVm(page, info.vm.name);
      assert.match(await page.getByTestId("schedule-state").innerText(), /Every 15 min; next/);
      await shot(page, "06-vm-detail-schedule-after-restart");
    });

    await t.test("cutover asks for confirmation saying what will happen, then shows the result", async () => {
      await selectVm(page, info.vm.name);
      await page.getByRole("button", { name: "Cut over…" }).click();
      const dialog = page.getByRole("dialog");
      await dialog.waitFor();
      const text = await dialog.innerText();
      assert.match(text, /Shut down the source VM/);
      assert.match(text, /final incremental pass/);
      assert.match(text, /Create the VM in CloudStack/);
      await shot(page, "07-cutover-confirm");
      // Keyboard: focus stays inside the dialog while Tab cycles through it...
      const inDialog = () => page.evaluate(() => !!document.activeElement?.closest("[role=dialog]"));
      assert.ok(await inDialog());
      for (let i = 0; i < 5; i++) {
        await page.keyboard.press(i % 2 ? "Shift+Tab" : "Tab");
        assert.ok(await inDialog(), "focus left the dialog");
      }
      // ...and Esc closes it without doing anything, giving focus back to its button.
      await page.keyboard.press("Escape");
      await until("dialog closed", async () => (await page.getByRole("dialog").count()) === 0);
      await until("focus back on the Cut over button", async () =>
        (await page.evaluate(() => document.activeElement?.textContent)) === "Cut over…");
      await page.getByRole("button", { name: "Cut over…" }).click();
      await page.getByRole("dialog").getByRole("button", { name: `Cut over ${info.vm.name}` }).click();
      await page.waitForURL(/#\/jobs\//, { timeout: LONG });
      await until("cutover ended", async () => {
        const s = await page.locator(".card-actions .badge").first().innerText();
        return s === "completed" || s === "failed" ? s : null;
      });
      assert.match(await page.locator(".card-head h2").first().innerText(), /cutover/);
      await shot(page, "08-cutover-result");
      assert.equal(await page.locator(".card-actions .badge").first().innerText(), "completed");
      const steps = await page.getByRole("list", { name: "Job steps" }).innerText();
      assert.match(steps, /final-pass/);
      await page.getByRole("link", { name: "Virtual machines" }).click();
      const row = page.locator(`tr[data-vm="${info.vm.name}"]`);
      await until("VM cut over", async () => /cut over/.test(await row.innerText()));
      await shot(page, "09-vms-after-cutover");
    });

    await t.test("infrastructure and settings pages", async () => {
      await page.getByRole("link", { name: "Infrastructure" }).click();
      const exports = page.getByRole("table", { name: "NBD exports" });
      await exports.waitFor({ timeout: LONG });
      assert.match(await exports.innerText(), new RegExp(`migration-vm-${info.vm.vm_id}-disk0`));
      await shot(page, "10-infrastructure");
      await page.getByRole("link", { name: "Settings" }).click();
      const cloudstack = page.getByRole("form", { name: "CloudStack settings", exact: true });
      await cloudstack.getByLabel("API URL").waitFor({ timeout: LONG });
      // Validation reports CloudStack's problems field by field (nothing is configured here).
      await cloudstack.getByRole("button", { name: "Validate" }).click();
      await until("validation result", async () => (await cloudstack.getByRole("alert").count()) > 0);
      await shot(page, "11-settings");
    });

    await t.test("no page errors and nothing fetched from outside the OMA", () => {
      assert.deepEqual(pageErrors, []);
      assert.deepEqual(external, []);
    });

    await t.test("every request of the page went over HTTPS", () => {
      // The plain-HTTP navigation of the HTTPS check is the only one, on purpose.
      assert.deepEqual(transport.insecure, [plainOrigin + "/"]);
      assert.ok(transport.requests > 0, "no https request seen");
    });

    await t.test("every API request and response matched the OMA's OpenAPI document", async () => {
      await watch.settle();
      console.log(`contract: ${watch.checked} exchanges checked, ${contract.seen.size} distinct operation/status pairs:\n  ` +
                  [...contract.seen].sort().join("\n  "));
      // What the flows above must have exercised. A count of exchanges would depend on
      // how often the page refetched while a pass ran, which is the machine's speed.
      const driven = [
        "GET /api/v1/vms 401", "GET /api/v1/vms 200", "GET /api/v1/events 200",
        "POST /api/v1/jobs 201", "GET /api/v1/jobs/{job_id} 200",
        "PUT /api/v1/vms/{vm_id}/schedule 200", "POST /api/v1/vms/{vm_id}/cutover 202",
        "GET /api/v1/exports 200", "GET /api/v1/settings/cloudstack 200",
        "POST /api/v1/settings/cloudstack/validate 200",
        ...(addedFromDiscovery ? ["GET /api/v1/discover 200", "POST /api/v1/vms 201"] : []),
      ];
      assert.deepEqual(driven.filter((pair) => !contract.seen.has(pair)), [], "flows whose exchanges were not seen");
      assert.deepEqual(watch.violations, []);
    });
  } finally {
    if (browser) await browser.close();
    const r = await lab.stop();
    if (r.code !== 0) console.error(lab.log.join(""));
    assert.equal(r.code, 0, "web-lab ended with protocol violations or an error");
  }
});

// Names and error texts come from vCenter and CloudStack, not from us: a VM name and a
// CloudStack error carrying HTML and script must show as the very characters they are,
// in every view that shows them, and never become elements or run. The lab: the fake
// VMA's VM named HOSTILE_NAME, the OMA's volumes in the CloudStack simulator, whose
// createVolume jobs fail with HOSTILE_ERROR (so a full pass fails with it).
const HOSTILE_NAME = `x<img src=x onerror="window.__pwned=1">&amp;"><svg onload=window.__pwned=1>`;  // no "/": not a legal VM name
const HOSTILE_ERROR = `<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">"><svg onload=window.__pwned=1>`;

// No element that the payloads could have made, anywhere in the page's body (the GUI
// itself draws no img, svg or script there), no event-handler attribute, nothing ran.
async function assertNothingInjected(page, where) {
  const found = await page.evaluate(() => ({
    elements: [...document.body.querySelectorAll("img, svg, script, iframe, object")].map((e) => e.outerHTML),
    handlers: [...document.querySelectorAll("[onerror], [onload]")].map((e) => e.outerHTML),
    pwned: window.__pwned,
  }));
  assert.deepEqual(found.elements, [], `${where}: elements injected`);
  assert.deepEqual(found.handlers, [], `${where}: event handlers injected`);
  assert.equal(found.pwned, undefined, `${where}: the payload ran`);
}

test("a VM name and a CloudStack error with HTML and script render as text", { timeout: 300_000 }, async (t) => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const lab = new Lab(["--vma", "fake", "--disk-mib", "4", "--vm-name", HOSTILE_NAME, "--cloudstack-sim",
                       "--cloudstack-error", HOSTILE_ERROR], ["--https"]);
  let browser;
  try {
    const info = await lab.info(0);
    assert.equal(info.vm.name, HOSTILE_NAME);
    browser = await launchPinned(info);
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    const transport = new TransportWatch(page);
    await signIn(page, info.gui_url, lab.token(info));
    assert.equal(await page.evaluate(() => location.protocol), "https:");

    await t.test("the VM list and the VM's detail show the name literally", async () => {
      const button = page.locator("tr[data-vm] button.row-link");
      await button.waitFor({ timeout: LONG });
      assert.equal(await button.innerText(), HOSTILE_NAME);
      assert.equal(await page.locator("tr[data-vm]").getAttribute("data-vm"), HOSTILE_NAME);
      await assertNothingInjected(page, "VM list");
      await selectVm(page, HOSTILE_NAME);
      const detail = page.getByRole("region", { name: HOSTILE_NAME, exact: true });
      assert.equal(await detail.locator("h2").first().innerText(), HOSTILE_NAME);
      await assertNothingInjected(page, "VM detail");
      await shot(page, "20-hostile-vm");
    });

    await t.test("a pass failing with CloudStack's error: the toast, the job and its error show both literally", async () => {
      await page.getByRole("button", { name: "Start full pass" }).click();
      const toast = page.locator(".toast");
      await toast.waitFor({ timeout: LONG });
      // The toast's message line, before its close button.
      assert.equal((await toast.innerText()).split("\n")[0], `Full pass started for ${HOSTILE_NAME}`);
      await assertNothingInjected(page, "toast");
      await page.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/, { timeout: LONG });
      await until("the pass failed", async () =>
        (await page.locator(".card-actions .badge").first().innerText()) === "failed");
      const detail = page.getByLabel("Job detail");
      assert.equal(await detail.locator(".card-head h2").first().innerText(), `full · ${HOSTILE_NAME}`);
      const error = detail.locator(".error-box p");
      const text = await error.innerText();
      assert.ok(text.includes(HOSTILE_ERROR), `the job's error lacks CloudStack's text verbatim: ${text}`);
      const log = await page.getByRole("list", { name: "Event log" }).innerText();
      assert.ok(log.includes(`of VM ${HOSTILE_NAME} (`), log);
      const jobs = await page.getByRole("list", { name: "Jobs" }).innerText();
      assert.ok(jobs.includes(HOSTILE_NAME), jobs);
      await assertNothingInjected(page, "job detail");
      await shot(page, "21-hostile-job-error");
    });

    await t.test("no page errors; every request over HTTPS, the live event stream too", () => {
      assert.deepEqual(pageErrors, []);
      assert.deepEqual(transport.insecure, []);
      transport.assertLiveOverHttps();
    });
  } finally {
    if (browser) await browser.close();
    const r = await lab.stop();
    if (r.code !== 0) console.error(lab.log.join(""));
    assert.equal(r.code, 0, "web-lab ended with protocol violations or an error");
  }
});
