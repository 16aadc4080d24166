// Virtual machines: every VM the OMA manages with its replication state, and the
// actions on one VM (passes, schedule, test failover, cutover), plus discovery.
import { useCallback, useEffect, useState } from "preact/hooks";
import { ApiError, type BootCheck, type BootCheckSummary, type DiscoveredVm, type GuestSummary, type Inspection, type Vm } from "../api";
import { Badge, Card, Empty, ErrorBox } from "../components/Bits";
import { Dialog } from "../components/Dialog";
import { ago, bytes, duration, short } from "../format";
import { useApp, useRefreshOnChange } from "../state";

function diskTotal(vm: Vm) {
  return vm.disks.reduce((a, d) => a + d.capacity_bytes, 0);
}

function explain(e: unknown, what: string): string {
  if (e instanceof ApiError && e.missingRoute) return `${what}: this OMA does not offer that action (its API has no such route).`;
  return `${what}: ${e instanceof Error ? e.message : String(e)}`;
}

export function VmsPage() {
  const { api } = useApp();
  const [vms, setVms] = useState<Vm[] | null>(null);
  const [error, setError] = useState("");
  const [selected, setSelected] = useState<string | null>(null);
  const [discover, setDiscover] = useState(false);

  const load = useCallback(() => {
    api.vms().then((v) => {
      setVms(v);
      setError("");
    }, (e) => setError(String(e instanceof Error ? e.message : e)));
  }, [api]);
  useEffect(load, [load]);
  useRefreshOnChange(load);
  // Ages and "next run" move on with the clock.
  useEffect(() => {
    const t = setInterval(load, 30000);
    return () => clearInterval(t);
  }, [load]);

  const vm = vms?.find((v) => v.vm_id === selected) ?? null;
  return (
    <div class="page">
      <header class="page-head">
        <div>
          <h1>Virtual machines</h1>
          <p class="sub">{vms ? `${vms.length} managed · ${vms.filter((v) => v.ready_for_cutover).length} ready for cutover` : "Loading…"}</p>
        </div>
        <div class="actions">
          <button onClick={load}>Refresh</button>
          <button class="primary" onClick={() => setDiscover(true)}>Discover VMs…</button>
        </div>
      </header>
      {error && <ErrorBox title="Could not load the VMs" message={error} />}
      {vms && vms.length === 0 && (
        <Empty>No VMs yet. Use <strong>Discover VMs…</strong> to add VMs from vCenter.</Empty>
      )}
      {vms && vms.length > 0 && (
        <div class="table-wrap">
          <table class="grid" aria-label="Managed VMs">
            <thead>
              <tr>
                <th>VM</th><th>Power</th><th>State</th><th title="The guest as last inspected on the replicas">Guest</th><th>Disks</th><th>Last pass</th>
                <th title="Age of the oldest disk's newest committed change ID">Change IDs</th>
                <th>Cutover</th><th title="Predicted downtime of a cutover started now">Downtime</th><th>Schedule</th>
              </tr>
            </thead>
            <tbody>
              {vms.map((v) => (
                <tr key={v.vm_id} class={v.vm_id === selected ? "selected" : ""} data-vm={v.name}>
                  <td>
                    <button class="row-link" aria-pressed={v.vm_id === selected} onClick={() => setSelected(v.vm_id === selected ? null : v.vm_id)}>
                      {v.name}
                    </button>
                    <div class="mono dim">{short(v.vm_id)}</div>
                  </td>
                  <td><Badge value={v.power_state} label={v.power_state.replace("powered", "").toLowerCase()} /></td>
                  <td><Badge value={v.status} /></td>
                  <td><GuestCell guest={v.guest} /></td>
                  <td class="num">{v.disks.length} · {bytes(diskTotal(v))}</td>
                  <td>
                    {v.last_pass ? (
                      <>
                        <div>{v.last_pass.kind} <Badge value={v.last_pass.status} /></div>
                        <div class="dim">{ago(v.last_pass.finished_at)} · {bytes(v.last_pass.bytes)} in {duration(v.last_pass.seconds)}</div>
                      </>
                    ) : <span class="dim">none yet</span>}
                  </td>
                  <td>{v.change_id_age_seconds == null ? <span class="dim">—</span> : duration(v.change_id_age_seconds)}</td>
                  <td>
                    {v.status === "cut_over" ? <Badge value="muted" label="done" /> : v.ready_for_cutover ? <Badge value="ok" label="ready" /> : (
                      <span title={v.cutover_blockers.join("\n")}><Badge value="pending" label="not ready" /></span>
                    )}
                  </td>
                  <td>{v.predicted_downtime_seconds == null ? <span class="dim">—</span> : `≈ ${duration(v.predicted_downtime_seconds)}`}</td>
                  <td>
                    {v.schedule ? (v.schedule.enabled ? `every ${v.schedule.interval_minutes} min` : <span class="dim">paused</span>) : <span class="dim">off</span>}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {vm && <VmDetail vm={vm} reload={load} />}
      {discover && <DiscoverDialog onClose={() => setDiscover(false)} onAdded={load} />}
    </div>
  );
}

type Confirm = "cutover" | "test" | "cleanup" | null;

/** The VM list's guest: the OS as inspected, and a badge when it cannot be converted. */
function GuestCell({ guest }: { guest: GuestSummary | null }) {
  if (!guest) return <span class="dim">not inspected</span>;
  return (
    <span data-testid="guest-cell">
      {guest.os || <span class="dim">no OS found</span>}
      {!guest.convertible && (
        <div title={guest.reason}><Badge value="failed" label="not convertible" /> <span class="small">{guest.reason}</span></div>
      )}
    </span>
  );
}

/** The VM's last inspection: what virt-inspector found on the replicas, and a button to run one. */
function GuestPanel({ vm, busy, run }: { vm: Vm; busy: boolean; run: () => void }) {
  const { api } = useApp();
  const [inspection, setInspection] = useState<Inspection | null>(null);
  const [error, setError] = useState("");
  const inspectedAt = vm.guest?.inspected_at ?? 0;
  useEffect(() => {
    setError("");
    setInspection(null);
    if (!vm.guest) return;
    api.inspection(vm.vm_id).then(setInspection, (e) => setError(explain(e, "The inspection could not be read")));
  }, [api, vm.vm_id, inspectedAt]);
  const i = inspection;
  return (
    <div class="guest-panel" aria-label="Guest">
      <h3>Guest</h3>
      {!vm.guest && <p class="dim">Not inspected yet. An inspection reads the replicas (never writes them) and says whether the guest can be converted for KVM.</p>}
      {error && <ErrorBox title="Inspection" message={error} />}
      {i && (
        <dl class="facts" data-testid="guest-panel">
          <dt>Convertible</dt>
          <dd>{i.convertible ? <Badge value="ok" label="yes" /> : <><Badge value="failed" label="not convertible" /> <span class="form-error">{i.reason}</span></>}</dd>
          <dt>Operating system</dt>
          <dd>{i.os_found ? `${i.product_name || `${i.distro} ${i.version}`} (${i.os_family}${i.osinfo ? `, ${i.osinfo}` : ""})` : <span class="dim">none found</span>}</dd>
          <dt>Root</dt>
          <dd>{i.root_device ? `${i.root_device} on disk ${i.boot_disk ?? "?"}${i.boot_disk_key ? ` (key ${i.boot_disk_key})` : ""}` : <span class="dim">—</span>}</dd>
          <dt>Firmware</dt>
          <dd>{i.firmware ?? "—"} on the disks · {i.vsphere_firmware ?? "unknown"} in vSphere{i.vsphere_secure_boot ? " (secure boot)" : ""}</dd>
          <dt>Inspected</dt>
          <dd>{new Date(i.inspected_at).toLocaleString()} in {duration(i.seconds)} · by {i.started_by.replace("_", " ")} · <a href={`#/jobs/${i.job_id}`}>job</a></dd>
        </dl>
      )}
      <div class="button-row">
        <button disabled={busy || !!vm.current_job_id || vm.status !== "replicated"}
          title={vm.status === "replicated" ? "" : "Needs a completed pass and no active job"}
          onClick={run}>Inspect guest</button>
      </div>
    </div>
  );
}

/** One line on a VM's last boot check: booted or not, when, and what it cost. */
function BootCheckLine({ check }: { check: BootCheckSummary | null }) {
  if (!check) return <span class="dim">none yet — run one before the cutover</span>;
  return (
    <span data-testid="boot-check-line">
      {check.booted ? <Badge value="ok" label="booted" /> : <Badge value="failed" label="did not boot" />}{" "}
      {ago(check.finished_at)} · conversion {duration(check.conversion_seconds)} · boot {duration(check.boot_seconds)}
      {check.started_by === "after_incremental" && <span class="dim"> · after a pass</span>}
      {!check.booted && <div class="form-error">{check.reason}</div>}
    </span>
  );
}

/** The last boot check's evidence: the VGA console's picture and the serial console's tail. */
function BootCheckEvidence({ vmId, jobId }: { vmId: string; jobId: string }) {
  const { api } = useApp();
  const [check, setCheck] = useState<BootCheck | null>(null);
  const [error, setError] = useState("");
  useEffect(() => {
    setError("");
    api.bootCheck(vmId).then(setCheck, (e) => setError(explain(e, "The boot check could not be read")));
  }, [api, vmId, jobId]);
  if (error) return <ErrorBox title="Boot check" message={error} />;
  if (!check) return <p class="dim">Loading the last boot check…</p>;
  return (
    <div class="boot-check" aria-label="Last boot check">
      <h3>Last boot check</h3>
      <p>
        {check.booted ? <Badge value="ok" label="booted" /> : <Badge value="failed" label="did not boot" />}{" "}
        {check.os || "unknown guest"} · inspection {duration(check.inspection_seconds)} · conversion{" "}
        {duration(check.conversion_seconds)} · boot {duration(check.boot_seconds)} ({check.accel || "?"}) ·{" "}
        {new Date(check.finished_at).toLocaleString()} · <a href={`#/jobs/${check.job_id}`}>job</a>
      </p>
      <p class="small">{check.reason}</p>
      <div class="detail-grid">
        <div>
          {check.screenshot_base64 && check.screenshot_format === "png" ? (
            <img class="screenshot" alt={`VGA console of the boot check of ${vmId}`}
              src={`data:image/png;base64,${check.screenshot_base64}`} />
          ) : <p class="dim">No picture of the console was taken.</p>}
        </div>
        <div>
          <pre class="console" aria-label="Serial console (last 4 KiB)">{check.console_tail || "(the guest printed nothing on its serial console)"}</pre>
        </div>
      </div>
    </div>
  );
}

function VmDetail({ vm, reload }: { vm: Vm; reload: () => void }) {
  const { api, navigate, notify } = useApp();
  const [busy, setBusy] = useState(false);
  const [confirm, setConfirm] = useState<Confirm>(null);
  const [interval, setIntervalMin] = useState(String(vm.schedule?.interval_minutes ?? 60));
  const [enabled, setEnabled] = useState(vm.schedule?.enabled ?? true);
  const [schedError, setSchedError] = useState("");
  const [timeout, setTimeoutS] = useState("300");

  useEffect(() => {
    setIntervalMin(String(vm.schedule?.interval_minutes ?? 60));
    setEnabled(vm.schedule?.enabled ?? true);
    setSchedError("");
  }, [vm.vm_id, vm.schedule?.updated_at]);

  const hasChangeIds = vm.disks.every((d) => d.change_id);
  const act = async (what: string, f: () => Promise<{ job_id: string }>) => {
    setBusy(true);
    try {
      const r = await f();
      notify(`${what} started for ${vm.name}`);
      reload();
      navigate(`#/jobs/${r.job_id}`);
    } catch (e) {
      notify(explain(e, `${what} of ${vm.name} did not start`), "error");
    } finally {
      setBusy(false);
      setConfirm(null);
    }
  };
  const saveSchedule = async (e: Event) => {
    e.preventDefault();
    const n = Number(interval);
    if (!Number.isInteger(n) || n < 1 || n > 10080) return setSchedError("Enter whole minutes from 1 to 10080 (one week).");
    try {
      await api.putSchedule(vm.vm_id, n, enabled);
      setSchedError("");
      notify(enabled ? `${vm.name}: incremental pass every ${n} min` : `${vm.name}: schedule paused`);
      reload();
    } catch (err) {
      setSchedError(err instanceof Error ? err.message : String(err));
    }
  };
  const removeSchedule = async () => {
    try {
      await api.deleteSchedule(vm.vm_id);
      notify(`${vm.name}: schedule removed`);
      reload();
    } catch (err) {
      setSchedError(err instanceof Error ? err.message : String(err));
    }
  };

  return (
    <Card title={`${vm.name}`} actions={
      vm.current_job_id && <a class="button" href={`#/jobs/${vm.current_job_id}`}>Open active job</a>
    }>
      <div class="detail-grid">
        <div>
          <dl class="facts">
            <dt>Instance UUID</dt><dd class="mono">{vm.vm_id}</dd>
            <dt>vCenter / datacenter</dt><dd>{vm.vcenter} / {vm.datacenter}</dd>
            <dt>CPU / memory</dt><dd>{vm.cpus} vCPU · {bytes(vm.memory_mb * 1024 * 1024)}</dd>
            <dt>Guest OS</dt><dd>{vm.guest_os}</dd>
            <dt>Predicted downtime</dt>
            <dd>{vm.predicted_downtime_seconds == null ? "needs a completed incremental pass" :
              `≈ ${duration(vm.predicted_downtime_seconds)} for the final pass (from ${vm.prediction_passes} recent incremental pass${vm.prediction_passes === 1 ? "" : "es"})${vm.predicted_conversion_seconds == null ? "" : ` and the guest conversion (≈ ${duration(vm.predicted_conversion_seconds)}, as in the last boot check)`}, plus guest shutdown and VM start`}</dd>
            <dt>Boot check</dt>
            <dd><BootCheckLine check={vm.boot_check} /></dd>
          </dl>
          <table class="grid compact" aria-label={`Disks of ${vm.name}`}>
            <thead><tr><th>Disk</th><th>Size</th><th>Export</th><th>Change ID</th></tr></thead>
            <tbody>
              {vm.disks.map((d) => (
                <tr key={d.key}>
                  <td>{d.label}<div class="dim small">key {d.key} · unit {d.unit}</div></td>
                  <td class="num">{bytes(d.capacity_bytes)}</td>
                  <td class="mono small">{d.export ?? <span class="dim">not yet</span>}</td>
                  <td>{d.change_id ? <Badge value="ok" label="committed" /> : <span class="dim">none</span>}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        <div class="action-panel">
          <h3>Replication</h3>
          <div class="button-row">
            <button class="primary" disabled={busy || !!vm.current_job_id} onClick={() => act("Full pass", () => api.startPass(vm.vm_id, "full"))}>Start full pass</button>
            <button disabled={busy || !!vm.current_job_id || !hasChangeIds}
              title={hasChangeIds ? "" : "Needs a completed full pass first"}
              onClick={() => act("Incremental pass", () => api.startPass(vm.vm_id, "incremental"))}>Start incremental pass</button>
          </div>
          <form class="schedule" onSubmit={saveSchedule} aria-label="Incremental schedule">
            <h3>Repeat incremental passes</h3>
            <div class="inline-form">
              <label for="interval">Every</label>
              <input id="interval" type="number" min={1} max={10080} value={interval}
                onInput={(e) => setIntervalMin((e.target as HTMLInputElement).value)} />
              <span>minutes</span>
              <label class="check"><input type="checkbox" checked={enabled}
                onChange={(e) => setEnabled((e.target as HTMLInputElement).checked)} /> enabled</label>
              <button type="submit">Save schedule</button>
              {vm.schedule && <button type="button" class="link-button" onClick={removeSchedule}>Remove</button>}
            </div>
            {schedError && <p class="form-error" role="alert">{schedError}</p>}
            {vm.schedule && (
              <p class="hint" data-testid="schedule-state">
                {vm.schedule.enabled ? `Every ${vm.schedule.interval_minutes} min; next ${vm.schedule.next_run_at ? new Date(vm.schedule.next_run_at).toLocaleTimeString() : "—"}` : "Paused"}
                {vm.schedule.last_result && <> · last: {vm.schedule.last_result}</>}
              </p>
            )}
          </form>
          <GuestPanel vm={vm} busy={busy} run={() => act("Inspection", () => api.startInspection(vm.vm_id))} />
          <h3>Boot check</h3>
          <p class="hint">Converts overlays of the replicas and boots them in a throwaway VM; the replicas are never written.</p>
          <div class="button-row">
            <button disabled={busy || !!vm.current_job_id || vm.status !== "replicated"}
              title={vm.status === "replicated" ? "" : "Needs a completed pass and no active job"}
              onClick={() => act("Boot check", () => api.startBootCheck(vm.vm_id))}>Run boot check</button>
          </div>
          <h3>Cutover</h3>
          {!vm.ready_for_cutover && (
            <ul class="blockers">{vm.cutover_blockers.map((b) => <li>{b}</li>)}</ul>
          )}
          <div class="button-row">
            <button disabled={busy || !vm.ready_for_cutover} onClick={() => setConfirm("test")}>Test failover…</button>
            <button disabled={busy} onClick={() => setConfirm("cleanup")}>Clean up test failover…</button>
            <button class="danger" disabled={busy || !vm.ready_for_cutover} onClick={() => setConfirm("cutover")}>Cut over…</button>
          </div>
        </div>
      </div>
      {vm.boot_check && <BootCheckEvidence vmId={vm.vm_id} jobId={vm.boot_check.job_id} />}
      {confirm === "cutover" && (
        <Dialog title={`Cut over ${vm.name}?`} onClose={() => setConfirm(null)} footer={<>
          <button onClick={() => setConfirm(null)}>Cancel</button>
          <button class="danger" disabled={busy} onClick={() => act("Cutover", () => api.cutover(vm.vm_id, Number(timeout) || 300))}>Cut over {vm.name}</button>
        </>}>
          <p>This moves <strong>{vm.name}</strong> to CloudStack for good. The OMA will:</p>
          <ol class="what-happens">
            <li><strong>Shut down the source VM</strong> in vCenter (guest shutdown; powered off if still running after the timeout below). Downtime starts here.</li>
            <li><strong>Run a final incremental pass</strong> to copy the last changes of its {vm.disks.length} disk{vm.disks.length === 1 ? "" : "s"} ({bytes(diskTotal(vm))}).</li>
            {vm.predicted_conversion_seconds != null && (
              <li><strong>Convert the guest for KVM</strong> (virt-v2v; ≈ {duration(vm.predicted_conversion_seconds)} in the last boot check).</li>
            )}
            <li><strong>Create the VM in CloudStack</strong> ({vm.cpus} vCPU, {bytes(vm.memory_mb * 1048576)}) with its volumes and start it.</li>
          </ol>
          <p>Last boot check: <BootCheckLine check={vm.boot_check} /></p>
          <p>Predicted downtime{vm.predicted_conversion_seconds == null ? " for the final pass" : " for the final pass and the conversion"}: <strong>{vm.predicted_downtime_seconds == null ? "unknown (no incremental pass yet)" : `≈ ${duration(vm.predicted_downtime_seconds)}`}</strong>. If a step fails the OMA rolls back and powers the source on again if it was on.</p>
          <label for="shutdown-timeout">Guest shutdown timeout (seconds)</label>
          <input id="shutdown-timeout" type="number" min={10} max={3600} value={timeout}
            onInput={(e) => setTimeoutS((e.target as HTMLInputElement).value)} />
        </Dialog>
      )}
      {confirm === "test" && (
        <Dialog title={`Test failover of ${vm.name}?`} onClose={() => setConfirm(null)} footer={<>
          <button onClick={() => setConfirm(null)}>Cancel</button>
          <button class="primary" disabled={busy} onClick={() => act("Test failover", () => api.testFailover(vm.vm_id))}>Start test failover</button>
        </>}>
          <p>The OMA will <strong>create a test VM in CloudStack</strong> from the data of the last completed pass and start it. The source VM keeps running and replication continues; nothing is shut down.</p>
          <p>Clean the test VM up afterwards with <em>Clean up test failover</em>.</p>
        </Dialog>
      )}
      {confirm === "cleanup" && (
        <Dialog title={`Clean up the test failover of ${vm.name}?`} onClose={() => setConfirm(null)} footer={<>
          <button onClick={() => setConfirm(null)}>Cancel</button>
          <button class="primary" disabled={busy} onClick={() => act("Test failover cleanup", () => api.testFailoverCleanup(vm.vm_id))}>Clean up</button>
        </>}>
          <p>The OMA will <strong>delete the test VM</strong> in CloudStack and give its volumes back to the OMA, so replication can continue. The source VM is not touched.</p>
        </Dialog>
      )}
    </Card>
  );
}

function DiscoverDialog({ onClose, onAdded }: { onClose: () => void; onAdded: () => void }) {
  const { api, notify } = useApp();
  const [found, setFound] = useState<{ vcenter: string; vms: DiscoveredVm[] } | null>(null);
  const [error, setError] = useState("");
  const [adding, setAdding] = useState<string | null>(null);
  const load = useCallback(() => {
    setError("");
    api.discover().then(setFound, (e) => setError(explain(e, "Discovery failed")));
  }, [api]);
  useEffect(load, [load]);
  const add = async (d: DiscoveredVm) => {
    if (!found) return;
    setAdding(d.vm_id);
    try {
      await api.addVm(d, found.vcenter);
      notify(`${d.name} added`);
      onAdded();
      load();
    } catch (e) {
      setError(explain(e, `Adding ${d.name} failed`));
    } finally {
      setAdding(null);
    }
  };
  return (
    <Dialog wide title="Discover VMs" onClose={onClose} footer={<><button onClick={load}>Discover again</button><button class="primary" onClick={onClose}>Close</button></>}>
      {error && <ErrorBox title="Discovery" message={error} />}
      {!found && !error && <p>Asking the VMA for the VMs in vCenter…</p>}
      {found && (
        <>
          <p class="sub">vCenter <strong>{found.vcenter}</strong>: {found.vms.length} VMs</p>
          <div class="table-wrap tall">
            <table class="grid compact" aria-label="Discovered VMs">
              <thead><tr><th>VM</th><th>Power</th><th>CPU / memory</th><th>Disks</th><th>Networks</th><th /></tr></thead>
              <tbody>
                {found.vms.map((d) => (
                  <tr key={d.vm_id}>
                    <td>
                      {d.name}<div class="mono dim">{short(d.vm_id)} · {d.datacenter}</div>
                      {d.blocked && (
                        <ul class="blockers" aria-label={`Blockers of ${d.name}`}>
                          {d.findings.map((f) => (
                            <li key={`${f.code}-${f.disk_key ?? "vm"}`} title={f.text}>
                              <strong>{f.disk_key ? `disk ${f.disk_key}: ` : ""}{f.problem}</strong> — {f.remedy}
                            </li>
                          ))}
                        </ul>
                      )}
                    </td>
                    <td><Badge value={d.power_state} label={d.power_state.replace("powered", "").toLowerCase()} /></td>
                    <td>{d.cpus} · {bytes(d.memory_mb * 1048576)}</td>
                    <td>{d.disks.length} · {bytes(d.disks.reduce((a, k) => a + k.capacity_bytes, 0))}</td>
                    <td>{d.nics.map((n) => n.network).join(", ") || "—"}</td>
                    <td>
                      {d.managed ? <Badge value="ok" label="managed" /> : d.blocked ? <Badge value="blocked" /> : (
                        <button disabled={adding !== null || d.disks.length === 0} onClick={() => add(d)} aria-label={`Add ${d.name}`}>
                          {adding === d.vm_id ? "Adding…" : "Add"}
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
    </Dialog>
  );
}
