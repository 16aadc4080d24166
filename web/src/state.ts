// Client-side state shared by the pages: the jobs seen (from REST and the live stream),
// each job's throughput history (samples taken from the stream while the page is
// open), and hooks that re-render on change.
import { createContext } from "preact";
import { useContext, useEffect, useState } from "preact/hooks";
import type { Api, Job, LogEvent, Step } from "./api";
import type { LinkState, LiveStream } from "./events";

export interface Sample {
  t: number; // seconds since the epoch
  total: number; // bytes/s
  disks: Record<string, number>;
  percent: number;
}

export class JobStore {
  jobs = new Map<string, Job>();
  history = new Map<string, Sample[]>();
  steps = new Map<string, Map<number, Step>>();
  logs = new Map<string, Map<number, LogEvent>>();
  private subs = new Set<() => void>();
  private pending = false;

  subscribe(f: () => void): () => void {
    this.subs.add(f);
    return () => this.subs.delete(f);
  }
  // Coalesces bursts of events into one render.
  changed() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.subs.forEach((f) => f());
    });
  }

  setAll(jobs: Job[]) {
    for (const j of jobs) this.merge(j, false);
    this.changed();
  }

  merge(j: Job, sample = true) {
    const old = this.jobs.get(j.job_id);
    // A REST answer read before the stream's newer event can arrive after it: keep the newer.
    if (old && j.updated_at < old.updated_at) return;
    const merged: Job = { ...old, ...j };
    if (!j.disks && old?.disks) merged.disks = old.disks;
    this.jobs.set(j.job_id, merged);
    if (j.steps) this.steps.set(j.job_id, new Map(j.steps.map((s) => [s.seq, s])));
    if (j.events) this.logs.set(j.job_id, new Map(j.events.map((e) => [e.seq, e])));
    if (sample && j.disks) {
      const h = this.history.get(j.job_id) ?? [];
      const disks: Record<string, number> = {};
      for (const d of j.disks) disks[d.disk_key] = d.throughput_bps;
      h.push({ t: Date.now() / 1000, total: j.throughput_bps, disks, percent: j.percent });
      if (h.length > 3600) h.splice(0, h.length - 3600);
      this.history.set(j.job_id, h);
    }
    this.changed();
  }

  step(s: Step & { job_id: string }) {
    const m = this.steps.get(s.job_id) ?? new Map<number, Step>();
    m.set(s.seq, s);
    this.steps.set(s.job_id, m);
    this.changed();
  }

  log(e: LogEvent & { job_id: string }) {
    const m = this.logs.get(e.job_id) ?? new Map<number, LogEvent>();
    m.set(e.seq, e);
    this.logs.set(e.job_id, m);
    this.changed();
  }
}

export interface AppContext {
  api: Api;
  live: LiveStream;
  jobs: JobStore;
  isAdmin: boolean;
  navigate: (hash: string) => void;
  notify: (message: string, kind?: "ok" | "error") => void;
}

export const Ctx = createContext<AppContext>(null as unknown as AppContext);
export const useApp = () => useContext(Ctx);

/** Re-renders whenever the job store changes. */
export function useJobStore(): JobStore {
  const { jobs } = useApp();
  const [, setTick] = useState(0);
  useEffect(() => jobs.subscribe(() => setTick((t) => t + 1)), [jobs]);
  return jobs;
}

export function useLinkState(): LinkState {
  const { live } = useApp();
  const [s, setS] = useState<LinkState>(live.state);
  useEffect(() => live.onState(setS), [live]);
  return s;
}

/** Calls `f` on (re)connection and whenever a job changes state (not on every progress tick). */
export function useRefreshOnChange(f: () => void) {
  const { live } = useApp();
  useEffect(() => {
    const seen = new Map<string, string>();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const soon = () => {
      clearTimeout(timer);
      timer = setTimeout(f, 300);
    };
    const off = live.on((e) => {
      if (e.type === "hello" || e.type === "resync") soon();
      if (e.type === "job") {
        const key = `${e.data.status}|${e.data.finished_at ?? ""}`;
        if (seen.get(e.data.job_id) !== key) {
          seen.set(e.data.job_id, key);
          soon();
        }
      }
    });
    return () => {
      off();
      clearTimeout(timer);
    };
  }, [live, f]);
}
