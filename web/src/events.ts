// The OMA's live event stream (GET /api/v1/events, server-sent events) read with
// fetch() so the bearer token goes in the Authorization header. Reconnects with
// backoff; every (re)connection starts with "hello", after which pages fetch the
// current state again, so nothing is missed across a reconnect.
import type { Job, LogEvent, Step } from "./api";

export type LiveEvent =
  | { type: "hello"; data: { at: number } }
  | { type: "resync"; data: unknown }
  | { type: "heartbeat"; data: { at: number } }
  | { type: "job"; data: Job }
  | { type: "step"; data: Step & { job_id: string } }
  | { type: "log"; data: LogEvent & { job_id: string } };

export type LinkState = "connecting" | "live" | "down";
type Listener = (e: LiveEvent) => void;

export class LiveStream {
  private listeners = new Set<Listener>();
  private stateListeners = new Set<(s: LinkState) => void>();
  private abort: AbortController | null = null;
  private stopped = false;
  state: LinkState = "connecting";
  lastError = "";

  constructor(
    private token: string,
    private onUnauthorized: () => void,
  ) {}

  on(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  onState(l: (s: LinkState) => void): () => void {
    this.stateListeners.add(l);
    return () => this.stateListeners.delete(l);
  }

  start() {
    void this.run();
  }
  stop() {
    this.stopped = true;
    this.abort?.abort();
  }

  private setState(s: LinkState) {
    this.state = s;
    this.stateListeners.forEach((l) => l(s));
  }

  private async run() {
    let delay = 500;
    while (!this.stopped) {
      this.setState("connecting");
      try {
        await this.readOnce();
        delay = 500;
      } catch (e) {
        if (this.stopped) return;
        this.lastError = String(e);
      }
      if (this.stopped) return;
      this.setState("down");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  private async readOnce() {
    this.abort = new AbortController();
    const res = await fetch("/api/v1/events", {
      headers: { Authorization: `Bearer ${this.token}`, Accept: "text/event-stream" },
      signal: this.abort.signal,
    });
    if (res.status === 401) {
      this.stopped = true;
      this.onUnauthorized();
      return;
    }
    if (!res.ok || !res.body) throw new Error(`event stream: HTTP ${res.status}`);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let end: number;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        this.dispatch(block);
      }
    }
  }

  private dispatch(block: string) {
    let type = "message";
    let data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) type = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    let parsed: unknown = null;
    try {
      parsed = data ? JSON.parse(data) : null;
    } catch {
      return;
    }
    if (type === "hello") this.setState("live");
    const ev = { type, data: parsed } as LiveEvent;
    this.listeners.forEach((l) => l(ev));
  }
}
