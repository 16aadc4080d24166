// web-lab (tests/web/web_lab.cpp) as the browser and flow tests drive it: the real oma
// binary and a VMA copying real data, started and stopped by PID; and a patient poll.
//
// Environment (set by CTest): MK_WEB_LAB, MK_OMA, MK_WEB_DIST; MK_VMA and MK_LAB for the
// real VMA against the vSphere lab (else the fake VMA).
import { spawn } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this test through CTest`);
  return v;
};

export const LONG = 180_000; // a bound that only stops a hung test; nothing asserts a duration
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function until(what, f, timeout = LONG) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      last = await f();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`gave up waiting for ${what} (last: ${last})`);
}

// The lab: web-lab's JSON describes it; SIGUSR1 restarts the OMA; SIGTERM ends it.
export class Lab {
  // `args`: web-lab's options instead of the default VMA (e.g. a fake VMA and the
  // CloudStack simulator: see the top of web_lab.cpp); `extra`: options added to either
  // (e.g. --https).
  constructor(args = null, extra = []) {
    this.dir = mkdtempSync(path.join(tmpdir(), "mk-web-test-"));
    this.out = path.join(this.dir, "lab.json");
    this.log = [];
    // The real VMA against the vSphere lab when the build has them; else the fake VMA.
    const vma = args ?? (process.env.MK_VMA && process.env.MK_LAB
      ? ["--vma", "real", "--vma-bin", process.env.MK_VMA, "--mk-lab", process.env.MK_LAB, "--disk-mib", "32,16"]
      : ["--vma", "fake"]);
    this.proc = spawn(env("MK_WEB_LAB"), ["--out", this.out, "--oma", env("MK_OMA"), "--gui-dir", env("MK_WEB_DIST"), ...vma, ...extra], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    for (const s of [this.proc.stdout, this.proc.stderr]) s.on("data", (d) => this.log.push(String(d)));
    this.exited = new Promise((r) => this.proc.on("exit", (code, sig) => r({ code, sig })));
  }
  async info(generation = 0) {
    return until(`web-lab generation ${generation}`, () => {
      if (this.proc.exitCode !== null) throw new Error(`web-lab exited: ${this.log.join("")}`);
      if (!existsSync(this.out)) return null;
      const j = JSON.parse(readFileSync(this.out, "utf8"));
      return j.generation >= generation ? j : null;
    });
  }
  token(info) {
    return readFileSync(info.token_file, "utf8").trim();
  }
  restartOma() {
    process.kill(this.proc.pid, "SIGUSR1");
  }
  async stop() {
    if (this.proc.exitCode === null) this.proc.kill("SIGTERM");
    const r = await this.exited;
    rmSync(this.dir, { recursive: true, force: true });
    return r;
  }
}


// --- HTTPS (web-lab --https) ---------------------------------------------------------

// The OMA's certificate (PEM) of a lab started with --https.
export function labCertificate(info) {
  if (!info.https) throw new Error("this lab serves plain HTTP: start it with --https");
  return readFileSync(info.https.cert_file, "utf8");
}

// Chromium's pin for a certificate: base64 of the SHA-256 of its SubjectPublicKeyInfo
// (DER), what --ignore-certificate-errors-spki-list takes.
export function spkiPin(certPem) {
  const spki = new X509Certificate(certPem).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

// GET `url` over HTTPS trusting exactly the lab's certificate: it is the only CA, and its
// SHA-256 fingerprint must be the one web-lab read from the OMA's data directory.
// Returns {status, headers, text}.
export function pinnedGet(info, url, headers = {}) {
  const cert = labCertificate(info);
  const want = info.https.fingerprint;
  return new Promise((resolve, reject) => {
    const req = https.get(url, {
      headers,
      ca: cert,
      checkServerIdentity: (host, peer) =>
        peer.fingerprint256 === want ? undefined : new Error(`certificate ${peer.fingerprint256} is not the OMA's ${want}`),
    }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, text }));
    });
    req.on("error", reject);
    req.setTimeout(30_000, () => req.destroy(new Error(`GET ${url}: no answer in 30 s`)));
  });
}

// A plain-HTTP GET of `url` (an http:// URL): what a client that forgot https:// gets.
// Resolves {status, text}, or {error} when the connection ended without an answer.
export function plainGet(url) {
  return new Promise((resolve) => {
    const req = http.get(url, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode, text }));
    });
    req.on("error", (e) => resolve({ error: String(e) }));
    req.setTimeout(30_000, () => req.destroy(new Error(`GET ${url}: no answer in 30 s`)));
  });
}
