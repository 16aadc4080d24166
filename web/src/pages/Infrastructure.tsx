// Infrastructure: the OMA itself, the VMA and its tunnel, NBD exports and volumes.
import { useCallback, useEffect, useState } from "preact/hooks";
import { ApiError, isActive, type ExportInfo, type Volume } from "../api";
import { Badge, Card, Empty, ErrorBox } from "../components/Bits";
import { ago, bytes, short, time } from "../format";
import { useApp, useJobStore, useRefreshOnChange } from "../state";

type Health = Record<string, unknown>;
const str = (v: unknown) => (v == null ? "—" : String(v));

export function InfrastructurePage() {
  const { api } = useApp();
  const store = useJobStore();
  const [health, setHealth] = useState<Health | null>(null);
  const [vma, setVma] = useState<Health | null>(null);
  const [exports, setExports] = useState<{ exports: ExportInfo[]; server_pid: number } | null>(null);
  const [volumes, setVolumes] = useState<Volume[] | null>(null);
  const [errors, setErrors] = useState<string[]>([]);

  const load = useCallback(() => {
    const errs: string[] = [];
    const fail = (what: string) => (e: unknown) => {
      errs.push(`${what}: ${e instanceof ApiError && e.missingRoute ? "not offered by this OMA" : e instanceof Error ? e.message : String(e)}`);
      setErrors([...errs]);
    };
    setErrors([]);
    api.health().then(setHealth, fail("OMA health"));
    api.vmaHealth().then(setVma, fail("VMA health"));
    api.exports().then(setExports, fail("NBD exports"));
    api.volumes().then(setVolumes, fail("Volumes"));
    api.jobs().then((j) => store.setAll(j), () => {});
  }, [api, store]);
  useEffect(load, [load]);
  useRefreshOnChange(load);

  // An export is in use while a job of its VM is active (the VMA writes into it then).
  const busyVms = new Set([...store.jobs.values()].filter(isActive).map((j) => j.vm_id));
  const vmOf = (name: string) => name.match(/^migration-vm-([0-9a-f-]{36})-disk\d+$/)?.[1] ?? "";
  const tunnel = (vma?.tunnel ?? null) as Health | null;
  const vcenter = (vma?.vcenter ?? null) as Health | null;

  return (
    <div class="page">
      <header class="page-head">
        <div><h1>Infrastructure</h1><p class="sub">OMA, VMA and tunnel, NBD exports and target volumes</p></div>
        <div class="actions"><button onClick={load}>Refresh</button></div>
      </header>
      {errors.map((e) => <ErrorBox title="Could not load" message={e} />)}
      <div class="two-col">
        <Card title="OMA">
          {health ? (
            <dl class="facts">
              <dt>Status</dt><dd><Badge value={str(health.status)} /></dd>
              <dt>Database</dt><dd>{str(health.database)}</dd>
              <dt>Export server</dt><dd>{str(health.export_server)} (pid {str(health.export_server_pid)}, NBD port {str(health.nbd_port)})</dd>
            </dl>
          ) : <p class="dim">Loading…</p>}
        </Card>
        <Card title="VMA and tunnel">
          {vma ? (
            <dl class="facts">
              <dt>VMA</dt><dd><Badge value={str(vma.status)} /> <span class="dim">{str(vma.vma)}</span></dd>
              {vma.error != null && <><dt>Problem</dt><dd class="form-error">{str(vma.error)} — check that the VMA runs and its SSH tunnel is up.</dd></>}
              {vcenter && <><dt>vCenter</dt><dd><Badge value={vcenter.reachable ? "ok" : "down"} label={vcenter.reachable ? "reachable" : "unreachable"} /> {vcenter.error != null && <span class="form-error">{str(vcenter.error)}</span>}</dd></>}
              {tunnel && <><dt>Tunnel</dt><dd><Badge value={str(tunnel.state)} /> {tunnel.since ? <span class="dim">since {time(Number(tunnel.since) * 1000)}</span> : null} {tunnel.error != null && <span class="form-error">{str(tunnel.error)}</span>}</dd></>}
              {vma.vma_instance != null && <><dt>Instance</dt><dd class="mono">{str(vma.vma_instance)}</dd></>}
            </dl>
          ) : <p class="dim">Loading…</p>}
        </Card>
      </div>
      <Card title={`NBD exports${exports ? ` (${exports.exports.length})` : ""}`} actions={exports && <span class="dim">server pid {exports.server_pid}</span>}>
        {exports && exports.exports.length === 0 && <Empty>No exports yet: the first pass of a VM creates one per disk.</Empty>}
        {exports && exports.exports.length > 0 && (
          <table class="grid compact" aria-label="NBD exports">
            <thead><tr><th>Export</th><th>Device</th><th>Size</th><th>In use</th><th>Verified</th></tr></thead>
            <tbody>
              {exports.exports.map((e) => (
                <tr key={e.name}>
                  <td class="mono small">{e.name}</td>
                  <td class="mono small">{e.device_path}</td>
                  <td class="num">{bytes(e.size_bytes)}</td>
                  <td>{busyVms.has(vmOf(e.name)) ? <Badge value="copying" label="in use" /> : <span class="dim">idle</span>}</td>
                  <td>{e.verified_at ? ago(e.verified_at) : <span class="dim">never</span>}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Card>
      <Card title={`Volumes${volumes ? ` (${volumes.length})` : ""}`}>
        {volumes && volumes.length === 0 && <Empty>No volumes yet.</Empty>}
        {volumes && volumes.length > 0 && (
          <table class="grid compact" aria-label="Volumes">
            <thead><tr><th>Volume</th><th>VM</th><th>Disk</th><th>Backend</th><th>Size</th><th>Status</th><th>Device</th></tr></thead>
            <tbody>
              {volumes.map((v) => (
                <tr key={v.volume_id}>
                  <td class="mono small">{short(v.volume_id)}</td>
                  <td class="mono small">{short(v.vm_id)}</td>
                  <td>{v.disk_key}</td>
                  <td>{v.backend}</td>
                  <td class="num">{bytes(v.size_bytes)}</td>
                  <td><Badge value={v.status === "available" || v.status === "attached" ? "ok" : v.status} label={v.status} /></td>
                  <td class="mono small">{v.device_path}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Card>
    </div>
  );
}
