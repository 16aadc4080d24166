// Infrastructure: the OMA itself, the VMA and its tunnel, NBD exports and volumes.
import { useCallback, useEffect, useState } from "preact/hooks";
import { Dialog } from "../components/Dialog";
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
  const [vmas, setVmas] = useState<PairedVma[] | null>(null);
  const [errors, setErrors] = useState<string[]>([]);

  const load = useCallback(() => {
    const errs: string[] = [];
    const fail = (what: string) => (e: unknown) => {
      errs.push(`${what}: ${e instanceof ApiError && e.missingRoute ? "not offered by this OMA" : e instanceof Error ? e.message : String(e)}`);
      setErrors([...errs]);
    };
    setErrors([]);
    api.health().then(setHealth, fail("OMA health"));
    // The default VMA (the OMA's --vma-url), and the paired ones when this OMA pairs VMAs.
    api.vmaHealth().then(setVma, fail("VMA health"));
    api.get<{ vmas: PairedVma[] }>("/api/v1/vmas").then((r) => setVmas(r.vmas), (e) => {
      setVmas(null);
      if (!(e instanceof ApiError && e.missingRoute)) fail("VMAs")(e);
    });
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
        <Card title="Default VMA">
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
      {vmas && <VmasCard vmas={vmas} reload={load} />}
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

// One of a VMA's SSH tunnels, as its health lists them: one per OMA node (node_id "" for
// a single OMA).
interface NodeTunnel {
  node_id: string;
  ssh_host: string;
  ssh_port: number;
  tunnel: { state: string; since: number; error: string | null };
}

function NodeTunnels({ tunnels }: { tunnels: NodeTunnel[] }) {
  if (tunnels.length < 2 && (tunnels.length === 0 || tunnels[0].node_id === "")) return null;
  return (
    <div class="small">
      Tunnels to the OMA nodes:{" "}
      {tunnels.map((t) => (
        <span key={t.node_id}>
          <Badge value={t.tunnel.state} label={`${t.node_id} ${t.tunnel.state}`} />{" "}
          {t.tunnel.error != null && <span class="form-error">{t.tunnel.error} </span>}
        </span>
      ))}
    </div>
  );
}

interface PairedVma {
  vma_id: string;
  name: string;
  vcenter: string;
  state: string;
  tunnel_port?: number;
  tunnel_state?: string;
}

function VmasCard({ vmas, reload }: { vmas: PairedVma[]; reload: () => void }) {
  const { api, isAdmin, notify } = useApp();
  const [health, setHealth] = useState<Record<string, Health | string>>({});
  const [revoking, setRevoking] = useState<PairedVma | null>(null);
  useEffect(() => {
    for (const v of vmas) {
      api.get<Health>(`/api/v1/vmas/${v.vma_id}/health`).then(
        (h) => setHealth((o) => ({ ...o, [v.vma_id]: h })),
        (e) => setHealth((o) => ({ ...o, [v.vma_id]: e instanceof Error ? e.message : String(e) })),
      );
    }
  }, [vmas]);
  const act = async (v: PairedVma, action: "approve" | "revoke") => {
    try {
      await api.post(`/api/v1/vmas/${v.vma_id}/${action}`);
      notify(`VMA ${v.name} ${action === "approve" ? "approved" : "revoked"}`);
      reload();
    } catch (e) {
      notify(`${action} of VMA ${v.name} failed: ${e instanceof Error ? e.message : String(e)}`, "error");
    } finally {
      setRevoking(null);
    }
  };
  return (
    <Card title={`Paired VMAs and their tunnels (${vmas.length})`}>
      {vmas.length === 0 && <p class="dim">No VMA is paired yet: issue a pairing bundle (POST /api/v1/vmas/pairing-bundles) and run <code>vma pair</code> next to vCenter.</p>}
      {vmas.map((v) => {
        const h = health[v.vma_id];
        const inner = typeof h === "object" ? ((h.vma ?? null) as Health | null) : null;
        const vc = (inner?.vcenter ?? null) as Health | null;
        return (
          <div class="vma" key={v.vma_id}>
            <div class="vma-head">
              <strong>{v.name}</strong> <span class="dim">{v.vcenter}</span>
              <Badge value={v.state} />
              <Badge value={v.tunnel_state ?? "down"} label={`tunnel ${v.tunnel_state ?? "down"}`} />
              {isAdmin && v.state === "pending" && <button onClick={() => act(v, "approve")}>Approve</button>}
              {isAdmin && v.state !== "revoked" && <button class="danger" onClick={() => setRevoking(v)}>Revoke…</button>}
            </div>
            {typeof h === "string" && <p class="form-error small">{h}</p>}
            {typeof h === "object" && (
              <div class="small">
                {inner && <>VMA <Badge value={str(inner.status)} /> · vCenter <Badge value={vc?.reachable ? "ok" : "down"} label={vc?.reachable ? "reachable" : "unreachable"} /> </>}
                {h.error != null && <span class="form-error">{str(h.error)}</span>}
              </div>
            )}
            {inner && <NodeTunnels tunnels={(inner.tunnels ?? []) as NodeTunnel[]} />}
          </div>
        );
      })}
      {revoking && (
        <Dialog title={`Revoke VMA ${revoking.name}?`} onClose={() => setRevoking(null)} footer={<>
          <button onClick={() => setRevoking(null)}>Cancel</button>
          <button class="danger" onClick={() => act(revoking, "revoke")}>Revoke {revoking.name}</button>
        </>}>
          <p>The OMA removes this VMA's SSH key and ends its tunnel now. Jobs of its VMs fail until a VMA is paired again.</p>
        </Dialog>
      )}
    </Card>
  );
}
