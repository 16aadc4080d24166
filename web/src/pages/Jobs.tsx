// Jobs: the list of passes, cutovers and failovers with live progress, and one job in
// detail: totals, per-disk progress, a throughput graph, its steps and its event log.
import { useCallback, useEffect, useState } from "preact/hooks";
import { isActive, type Job, type JobDisk, type Vm } from "../api";
import { Badge, Bar, Card, Empty, ErrorBox } from "../components/Bits";
import { ThroughputChart } from "../components/ThroughputChart";
import { ago, bytes, duration, rate, seconds, short, time } from "../format";
import { useApp, useJobStore, useRefreshOnChange } from "../state";

export function JobsPage({ selected }: { selected?: string }) {
  const { api, navigate } = useApp();
  const store = useJobStore();
  const [names, setNames] = useState<Record<string, string>>({});
  const [error, setError] = useState("");

  const load = useCallback(() => {
    api.jobs().then((j) => {
      store.setAll(j);
      setError("");
    }, (e) => setError(e instanceof Error ? e.message : String(e)));
    api.vms().then((vms: Vm[]) => setNames(Object.fromEntries(vms.map((v) => [v.vm_id, v.name]))), () => {});
  }, [api, store]);
  useEffect(load, [load]);
  useRefreshOnChange(load);

  const jobs = [...store.jobs.values()].sort((a, b) => b.created_at - a.created_at);
  const current = selected ?? jobs[0]?.job_id;
  const active = jobs.filter(isActive).length;
  return (
    <div class="page">
      <header class="page-head">
        <div>
          <h1>Jobs</h1>
          <p class="sub">{jobs.length} jobs · {active} active</p>
        </div>
        <div class="actions"><button onClick={load}>Refresh</button></div>
      </header>
      {error && <ErrorBox title="Could not load the jobs" message={error} />}
      {jobs.length === 0 ? <Empty>No jobs yet. Start a pass from <a href="#/vms">Virtual machines</a>.</Empty> : (
        <div class="split">
          <ul class="job-list" aria-label="Jobs">
            {jobs.slice(0, 300).map((j) => (
              <li key={j.job_id}>
                <a href={`#/jobs/${j.job_id}`} class={j.job_id === current ? "active" : ""}
                  aria-current={j.job_id === current ? "true" : undefined} onClick={() => navigate(`#/jobs/${j.job_id}`)}>
                  <div class="job-line">
                    <strong>{names[j.vm_id] ?? short(j.vm_id)}</strong>
                    <Badge value={j.status} />
                  </div>
                  <div class="job-line dim">
                    <span>{j.kind.replace(/_/g, " ")} · {ago(j.created_at)}</span>
                    <span>{j.bytes_total > 0 ? `${Math.floor(j.percent)} %` : ""}</span>
                  </div>
                  {isActive(j) && <Bar done={j.bytes_done} total={j.bytes_total} label={`progress of ${j.kind} job`} />}
                </a>
              </li>
            ))}
          </ul>
          {current && <JobDetail id={current} vmName={names[store.jobs.get(current)?.vm_id ?? ""]} />}
        </div>
      )}
    </div>
  );
}

function nextStep(job: Job): string {
  if (job.status === "cancelled") return "Start a new pass when you are ready; the last committed change IDs are unchanged.";
  if (job.kind === "incremental" || job.kind === "full")
    return "Nothing was committed for this pass: the VM keeps its previous change IDs. Fix the cause above, then start the pass again from Virtual machines.";
  return "The OMA rolled back what this job had done. Fix the cause above, then start it again from Virtual machines.";
}

// The parts of a pass in the order they happen (the API's PhaseTime.phase words).
const PHASES: [string, string][] = [
  ["snapshot", "Snapshot"], ["change_query", "Change query"], ["reader_start", "Reader start"],
  ["planning", "Planning"], ["copying", "Copying"], ["flushing", "Flushing"],
  ["snapshot_removal", "Snapshot removal"], ["reporting", "Reporting"],
];

// Where each disk's pass spent its time, as the VMA measured it (reporting: the OMA).
function PhaseTable({ disks }: { disks: JobDisk[] }) {
  const shown = PHASES.filter(([p]) => disks.some((d) => (d.phases ?? []).some((x) => x.phase === p)));
  return (
    <Card title="Where the time went">
      <table class="grid compact" aria-label="Pass phases">
        <thead><tr><th>Disk</th>{shown.map(([p, label]) => <th key={p} class="num">{label}</th>)}</tr></thead>
        <tbody>
          {disks.map((d) => (
            <tr key={d.disk_key}>
              <td>{d.disk_key}</td>
              {shown.map(([p]) => {
                const t = (d.phases ?? []).find((x) => x.phase === p);
                return <td key={p} class="num" data-phase={p}>{t ? seconds(t.seconds) : "—"}</td>;
              })}
            </tr>
          ))}
        </tbody>
      </table>
      <p class="dim small">Snapshot and snapshot removal are the VM's, shared by its disks; reporting runs from the VMA's end of the pass to the OMA's record of it.</p>
    </Card>
  );
}

function JobDetail({ id, vmName }: { id: string; vmName?: string }) {
  const { api, notify } = useApp();
  const store = useJobStore();
  const [error, setError] = useState("");
  const load = useCallback(() => {
    api.job(id).then((j) => {
      store.merge(j, false);
      setError("");
    }, (e) => setError(e instanceof Error ? e.message : String(e)));
  }, [api, id, store]);
  useEffect(load, [load]);
  useRefreshOnChange(load);

  const job = store.jobs.get(id);
  if (error && !job) return <ErrorBox title="Could not load the job" message={error} />;
  if (!job) return <div class="detail">Loading…</div>;
  const steps = [...(store.steps.get(id)?.values() ?? [])].sort((a, b) => a.seq - b.seq);
  const logs = [...(store.logs.get(id)?.values() ?? [])].sort((a, b) => b.seq - a.seq);
  const samples = store.history.get(id) ?? [];
  const disks = job.disks ?? [];
  const running = isActive(job);
  const cancel = async () => {
    try {
      await api.cancelJob(id);
      notify("Cancellation requested");
    } catch (e) {
      notify(e instanceof Error ? e.message : String(e), "error");
    }
  };
  return (
    <div class="detail" aria-label="Job detail">
      <Card title={`${job.kind.replace(/_/g, " ")} · ${vmName ?? short(job.vm_id)}`} actions={<>
        <Badge value={job.status} />
        {running && <button class="danger" disabled={job.cancel_requested} onClick={cancel}>{job.cancel_requested ? "Cancelling…" : "Cancel job"}</button>}
      </>}>
        <div class="kpis">
          <div class="kpi"><span>Progress</span><strong data-testid="job-percent">{job.bytes_total > 0 ? `${job.percent.toFixed(job.percent >= 99.95 ? 0 : 1)} %` : "—"}</strong></div>
          <div class="kpi"><span>Copied of {bytes(job.bytes_total)}</span><strong>{bytes(job.bytes_done)}</strong></div>
          <div class="kpi"><span>Throughput</span><strong>{running ? rate(job.throughput_bps) : "—"}</strong></div>
          <div class="kpi"><span>{running ? "ETA" : "Took"}</span><strong>{running ? duration(job.eta_seconds) : duration(((job.finished_at ?? job.updated_at) - job.created_at) / 1000)}</strong></div>
        </div>
        <p class="phase-line"><span class="dim">Phase:</span> <strong data-testid="job-phase">{job.phase}</strong></p>
        <Bar done={job.bytes_done} total={job.bytes_total} label="job progress" />
        {job.status === "failed" && (
          <ErrorBox title="This job failed" message={job.error ?? "no reason recorded"} next={<><strong>What to do next: </strong>{nextStep(job)}</>} />
        )}
        <p class="dim small mono">job {job.job_id} · started {time(job.created_at)}{job.finished_at ? ` · ended ${time(job.finished_at)}` : ""}</p>
      </Card>
      {disks.length > 0 && (
        <Card title="Disks">
          <table class="grid compact" aria-label="Disk progress">
            <thead><tr><th>Disk</th><th>Phase</th><th class="w-bar">Progress</th><th>Copied</th><th>Throughput</th><th>ETA</th></tr></thead>
            <tbody>
              {disks.map((d) => (
                <tr key={d.disk_key}>
                  <td>{d.disk_key} <span class="dim">unit {d.unit}</span><div class="mono dim small" title={d.export}>…{d.export.slice(-14)}</div></td>
                  <td><Badge value={d.status} label={d.phase || d.status} />{d.error && <div class="form-error small">{d.error}</div>}</td>
                  <td class="w-bar"><Bar done={d.bytes_done} total={d.bytes_total} label={`disk ${d.disk_key}`} /></td>
                  <td class="num">{bytes(d.bytes_done)} / {bytes(d.bytes_total)}</td>
                  <td>{d.status === "copying" ? rate(d.throughput_bps) : "—"}</td>
                  <td>{d.status === "copying" ? duration(d.eta_seconds) : "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <ThroughputChart samples={samples} diskKeys={disks.map((d) => d.disk_key)} />
        </Card>
      )}
      {disks.some((d) => (d.phases ?? []).length > 0) && <PhaseTable disks={disks} />}
      <div class="two-col">
        <Card title="Steps">
          {steps.length === 0 ? <p class="dim">No steps yet.</p> : (
            <ol class="steps" aria-label="Job steps">
              {steps.map((s) => (
                <li key={s.seq} class={`step ${s.status}`}>
                  <span class="step-dot" aria-hidden="true" />
                  <div>
                    <div class="step-name">{s.name} <Badge value={s.status} /></div>
                    <div class="dim small">{time(s.started_at)}{s.finished_at ? ` · ${duration((s.finished_at - s.started_at) / 1000)}` : ""}</div>
                    {s.message && <div class="small">{s.message}</div>}
                  </div>
                </li>
              ))}
            </ol>
          )}
        </Card>
        <Card title="Event log">
          <ul class="log" aria-label="Event log">
            {logs.map((e) => (
              <li key={e.seq} class={`lvl-${e.level}`}>
                <span class="mono dim">{time(e.at).slice(11)}</span>
                <span class={`lvl lvl-${e.level}`}>{e.level}</span>
                <span>{e.message}</span>
              </li>
            ))}
          </ul>
        </Card>
      </div>
    </div>
  );
}
