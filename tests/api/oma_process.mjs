// Starts the real oma binary on loopback with a fresh data directory (ports chosen by
// the OMA, read from DATA/api.port), and stops it by its PID. No VMA: what the caller
// needs is the API (for a whole flow, see tests/web/web_lab.cpp).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class OmaProcess {
  constructor(binary) {
    this.dir = mkdtempSync(path.join(tmpdir(), "mk-api-test-"));
    this.log = [];
    this.proc = spawn(binary, ["--data-dir", path.join(this.dir, "data"), "--api-listen", "127.0.0.1", "--api-port", "0",
                               "--nbd-listen", "127.0.0.1", "--nbd-port", "0", "--gui-port", "-1",
                               "--vma-url", "http://127.0.0.1:9", "--strict-api-replies"], { stdio: ["ignore", "pipe", "pipe"] });
    for (const s of [this.proc.stdout, this.proc.stderr]) s.on("data", (d) => this.log.push(String(d)));
    this.exited = new Promise((r) => this.proc.on("exit", (code, sig) => r({ code, sig })));
  }

  // The API's base URL and the admin token, once the OMA listens.
  async ready(timeout = 60_000) {
    const portFile = path.join(this.dir, "data", "api.port");
    const end = Date.now() + timeout;
    while (Date.now() < end) {
      if (this.proc.exitCode !== null) throw new Error(`oma exited: ${this.log.join("")}`);
      if (existsSync(portFile) && readFileSync(portFile, "utf8").trim()) {
        const port = readFileSync(portFile, "utf8").trim();
        const token = readFileSync(path.join(this.dir, "data", "admin.token"), "utf8").trim();
        return { base: `http://127.0.0.1:${port}`, token };
      }
      await sleep(50);
    }
    throw new Error(`oma did not listen within ${timeout} ms: ${this.log.join("")}`);
  }

  async stop() {
    if (this.proc.exitCode === null) this.proc.kill("SIGTERM");
    const r = await this.exited;
    rmSync(this.dir, { recursive: true, force: true });
    return r;
  }
}
