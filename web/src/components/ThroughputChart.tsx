// Throughput over time for one job (total and per disk), drawn with uPlot from the
// samples the live stream delivered while this page was open.
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { Sample } from "../state";

const COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#db2777", "#0891b2"];
const MiB = 1024 * 1024;

export function ThroughputChart({ samples, diskKeys }: { samples: Sample[]; diskKeys: string[] }) {
  const el = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const keysSig = diskKeys.join(",");

  useEffect(() => {
    if (!el.current) return;
    const opts: uPlot.Options = {
      width: el.current.clientWidth || 600,
      height: 180,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.15)] } },
      axes: [
        {
          stroke: "#475569",
          grid: { stroke: "#e2e8f0" },
          space: 80,
          values: (_u, ticks) => ticks.map((t) => new Date(t * 1000).toTimeString().slice(0, 8)),
        },
        { stroke: "#475569", grid: { stroke: "#e2e8f0" }, label: "MiB/s", size: 56 },
      ],
      series: [
        {},
        { label: "total", stroke: "#0f172a", width: 2, fill: "rgba(37,99,235,0.08)" },
        ...diskKeys.map((k, i) => ({ label: `disk ${k}`, stroke: COLORS[i % COLORS.length], width: 1 })),
      ],
    };
    plot.current = new uPlot(opts, [[], [], ...diskKeys.map(() => [])], el.current);
    const ro = new ResizeObserver(() => {
      if (el.current && plot.current) plot.current.setSize({ width: el.current.clientWidth, height: 180 });
    });
    ro.observe(el.current);
    return () => {
      ro.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [keysSig]);

  useEffect(() => {
    if (!plot.current || samples.length < 2) return; // one point makes no time axis
    const xs = samples.map((s) => s.t);
    const total = samples.map((s) => s.total / MiB);
    const disks = diskKeys.map((k) => samples.map((s) => (s.disks[k] ?? 0) / MiB));
    plot.current.setData([xs, total, ...disks] as uPlot.AlignedData);
  }, [samples, samples.length, keysSig]);

  return (
    <div class="chart" aria-label="throughput over time">
      <div ref={el} style={{ visibility: samples.length < 2 ? "hidden" : "visible", height: samples.length < 2 ? 0 : undefined, overflow: "hidden" }} />
      {samples.length < 2 && <p class="hint">The graph fills in as progress arrives from the OMA.</p>}
    </div>
  );
}
