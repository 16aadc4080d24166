// Human-readable numbers for the operator: binary sizes, durations, ages.

export function bytes(n: number | null | undefined): string {
  if (n == null || !isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[i]}`;
}

export function rate(bps: number | null | undefined): string {
  if (bps == null || !isFinite(bps) || bps <= 0) return "—";
  return `${bytes(bps)}/s`;
}

export function duration(s: number | null | undefined): string {
  if (s == null || !isFinite(s) || s < 0) return "—";
  if (s < 1) return "< 1 s";
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

// A measured time, precise enough to compare the parts of a pass: "0.042 s", "3.21 s", "84.3 s".
export function seconds(s: number | null | undefined): string {
  if (s == null || !isFinite(s) || s < 0) return "—";
  return `${s.toFixed(s < 0.1 ? 3 : s < 10 ? 2 : 1)} s`;
}

export function ago(ms: number | null | undefined): string {
  if (!ms) return "—";
  const s = (Date.now() - ms) / 1000;
  if (s < 5) return "just now";
  return `${duration(s)} ago`;
}

export function time(ms: number | null | undefined): string {
  if (!ms) return "—";
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(
    d.getMinutes(),
  )}:${pad(d.getSeconds())}`;
}

export function percent(done: number, total: number): number {
  if (total <= 0) return 0;
  return Math.min(100, (100 * done) / total);
}

export const short = (id: string) => id.slice(0, 8);
