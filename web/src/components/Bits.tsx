// Small presentational pieces: status badges, progress bars, error boxes, empty states.
import type { ComponentChildren } from "preact";
import { percent } from "../format";

const TONE: Record<string, string> = {
  completed: "ok", replicated: "ok", ready: "ok", done: "ok", cut_over: "ok", poweredOn: "ok", up: "ok", ok: "ok", approved: "ok", live: "ok",
  failed: "bad", replication_failed: "bad", down: "bad", unreachable: "bad", revoked: "bad",
  cancelled: "muted", replication_cancelled: "muted", poweredOff: "muted", discovered: "muted",
  copying: "busy", preparing: "busy", exporting: "busy", committing: "busy", replicating: "busy", running: "busy",
  boot_checking: "busy", inspecting: "busy",
  cancelling: "warn", unknown: "bad", connecting: "warn", degraded: "warn", pending: "warn", suspended: "warn", blocked: "bad",
};

export function Badge({ value, label }: { value: string; label?: string }) {
  return <span class={`badge ${TONE[value] ?? "muted"}`}>{label ?? value.replace(/_/g, " ")}</span>;
}

export function Bar({ done, total, label }: { done: number; total: number; label?: string }) {
  const p = percent(done, total);
  return (
    <div class="bar" role="progressbar" aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(p)}
      aria-label={label ?? "progress"}>
      <div class="bar-fill" style={{ width: `${p}%` }} />
      <span class="bar-text">{p.toFixed(p >= 99.95 || p === 0 ? 0 : 1)} %</span>
    </div>
  );
}

export function ErrorBox({ title, message, next }: { title: string; message: string; next?: ComponentChildren }) {
  return (
    <div class="error-box" role="alert">
      <strong>{title}</strong>
      <p>{message}</p>
      {next && <div class="next">{next}</div>}
    </div>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <div class="empty">{children}</div>;
}

export function Card({ title, actions, children }: { title: string; actions?: ComponentChildren; children: ComponentChildren }) {
  return (
    <section class="card" aria-label={title}>
      <header class="card-head">
        <h2>{title}</h2>
        {actions && <div class="card-actions">{actions}</div>}
      </header>
      <div class="card-body">{children}</div>
    </section>
  );
}
