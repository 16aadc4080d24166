// Typed client for the OMA's public REST API (/api/v1, bearer token). The GUI uses
// nothing else: every action here is one a script could take with the same token.

export interface Disk {
  key: string;
  unit: number;
  label: string;
  capacity_bytes: number;
  volume_id: string | null;
  export: string | null;
  change_id: string | null;
}

export interface LastPass {
  job_id: string;
  kind: string;
  status: string;
  finished_at: number;
  bytes: number;
  seconds: number;
}

export interface Schedule {
  vm_id: string;
  interval_minutes: number;
  enabled: boolean;
  next_run_at: number | null;
  last_run_at: number | null;
  last_job_id: string | null;
  last_result: string | null;
  updated_at: number;
}

/** A VM's last boot check in short (the VM list). */
export interface BootCheckSummary {
  job_id: string;
  started_by: "api" | "after_incremental";
  booted: boolean;
  reason: string;
  conversion_seconds: number;
  boot_seconds: number;
  finished_at: number;
}

/** A VM's last boot check with its evidence and the picture of its console. */
export interface BootCheck extends BootCheckSummary {
  vm_id: string;
  inspection_seconds: number;
  accel: string;
  converted: boolean;
  timed_out: boolean;
  evidence: { journal_written: boolean; target_reached: boolean; target: string; detail: string } | null;
  os: string;
  console_tail: string;
  screenshot_format: "png" | "ppm" | null;
  screenshot_base64: string | null;
  started_at: number;
}

/** A VM's guest as last inspected, in short (the VM list and detail). */
export interface GuestSummary {
  os: string;
  convertible: boolean;
  reason: string;
  inspected_at: number;
}

/** A VM's last guest inspection (virt-inspector on its replicas, read-only). */
export interface Inspection {
  vm_id: string;
  job_id: string;
  started_by: "api" | "after_pass" | "boot_check" | "cutover" | "test_failover";
  os_found: boolean;
  os_family: string;
  distro: string;
  version: string;
  product_name: string;
  osinfo: string;
  root_device: string;
  boot_disk: number | null;
  boot_disk_key: string | null;
  firmware: "bios" | "uefi" | null;
  vsphere_firmware: "bios" | "efi" | null;
  vsphere_secure_boot: boolean;
  convertible: boolean;
  reason: string;
  seconds: number;
  inspected_at: number;
}

export interface Vm {
  vm_id: string;
  name: string;
  vcenter: string;
  datacenter: string;
  cpus: number;
  memory_mb: number;
  guest_os: string;
  power_state: string;
  status: string;
  current_job_id: string | null;
  created_at: number;
  disks: Disk[];
  last_pass: LastPass | null;
  change_id_age_seconds: number | null;
  ready_for_cutover: boolean;
  cutover_blockers: string[];
  predicted_downtime_seconds: number | null;
  prediction_passes: number;
  predicted_conversion_seconds: number | null;
  boot_check: BootCheckSummary | null;
  guest: GuestSummary | null;
  schedule: Schedule | null;
}

// How long one part of a disk's pass took (snapshot ... reporting), in pass order.
export interface PhaseTime {
  phase: string;
  seconds: number;
}

export interface JobDisk {
  disk_key: string;
  unit: number;
  export: string;
  status: string;
  phase: string;
  bytes_done: number;
  bytes_total: number;
  throughput_bps: number;
  eta_seconds: number;
  error: string | null;
  committed: boolean;
  phases?: PhaseTime[];
}

export interface Step {
  job_id?: string;
  seq: number;
  name: string;
  status: string;
  message: string | null;
  started_at: number;
  finished_at: number | null;
}

export interface LogEvent {
  job_id?: string;
  seq: number;
  at: number;
  level: string;
  message: string;
}

export interface Job {
  job_id: string;
  vm_id: string;
  kind: string;
  status: string;
  phase: string;
  bytes_done: number;
  bytes_total: number;
  percent: number;
  throughput_bps: number;
  eta_seconds: number;
  error: string | null;
  cancel_requested: boolean;
  created_at: number;
  updated_at: number;
  finished_at: number | null;
  disks?: JobDisk[];
  steps?: Step[];
  events?: LogEvent[];
}

export interface DiscoveredVm {
  vm_id: string;
  name: string;
  datacenter: string;
  power_state: string;
  cpus: number;
  memory_mb: number;
  guest_os: string;
  disks: { disk_key: string; unit: number; label: string; capacity_bytes: number }[];
  nics: { key: string; mac: string; network: string }[];
  managed: boolean;
  findings: PreflightFinding[];
  blocked: boolean;
}

// What would refuse a replication pass of a VM (the VMA's preflight).
export interface PreflightFinding {
  code: string;
  disk_key: string | null;
  problem: string;
  remedy: string;
  text: string;
}

export interface ExportInfo {
  name: string;
  volume_id: string;
  device_path: string;
  size_bytes: number;
  backend: string;
  created_at: number;
  verified_at: number | null;
}

export interface Volume {
  volume_id: string;
  vm_id: string;
  disk_key: string;
  backend: string;
  size_bytes: number;
  device_path: string;
  status: string;
  created_at: number;
}

export interface Setting {
  name: string;
  secret: boolean;
  value: string | null;
}

export interface Problem {
  field: string;
  message: string;
}

export const ACTIVE = new Set(["preparing", "exporting", "copying", "committing", "running", "pending", "cancelling",
  "unknown"]);
export const isActive = (j: Job) => !j.finished_at && ACTIVE.has(j.status);

/** An answer other than 2xx: the OMA's message (it says what to do) and the field. */
export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public field?: string,
  ) {
    super(message);
  }
  /** The route does not exist on this OMA (an older or partial installation). */
  get missingRoute(): boolean {
    return this.status === 404 && this.message.startsWith("no such route");
  }
}

const TOKEN_KEY = "oma.token";

export function savedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export class Api {
  constructor(public token: string) {}

  static remember(token: string) {
    sessionStorage.setItem(TOKEN_KEY, token);
  }
  static forget() {
    sessionStorage.removeItem(TOKEN_KEY);
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res: Response;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, `The OMA did not answer (${String(e)}): check that it is running and reachable.`);
    }
    const text = await res.text();
    let data: unknown = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const d = (data ?? {}) as { error?: string; field?: string };
      throw new ApiError(res.status, d.error ?? `HTTP ${res.status} from ${method} ${path}`, d.field);
    }
    return data as T;
  }

  get = <T>(path: string) => this.call<T>("GET", path);
  post = <T>(path: string, body?: unknown) => this.call<T>("POST", path, body);
  put = <T>(path: string, body?: unknown) => this.call<T>("PUT", path, body);
  del = <T>(path: string) => this.call<T>("DELETE", path);

  vms = async () => (await this.get<{ vms: Vm[] }>("/api/v1/vms")).vms;
  jobs = async (vmId?: string) =>
    (await this.get<{ jobs: Job[] }>(`/api/v1/jobs${vmId ? `?vm_id=${encodeURIComponent(vmId)}` : ""}`)).jobs;
  job = (id: string) => this.get<Job>(`/api/v1/jobs/${encodeURIComponent(id)}`);
  startPass = (vmId: string, kind: "full" | "incremental") =>
    this.post<Job>("/api/v1/jobs", { vm_id: vmId, kind });
  cancelJob = (id: string) => this.post<Job>(`/api/v1/jobs/${encodeURIComponent(id)}/cancel`);
  discover = () => this.get<{ vcenter: string; vms: DiscoveredVm[] }>("/api/v1/discover");
  addVm = (d: DiscoveredVm, vcenter: string) =>
    this.post<Vm>("/api/v1/vms", {
      vm_id: d.vm_id,
      name: d.name,
      vcenter,
      datacenter: d.datacenter,
      cpus: d.cpus,
      memory_mb: d.memory_mb,
      guest_os: d.guest_os || "other",
      power_state: d.power_state,
      disks: d.disks.map((k) => ({
        key: k.disk_key,
        unit: k.unit,
        label: k.label,
        capacity_bytes: k.capacity_bytes,
      })),
    });
  putSchedule = (vmId: string, interval_minutes: number, enabled: boolean) =>
    this.put<Schedule>(`/api/v1/vms/${vmId}/schedule`, { interval_minutes, enabled });
  deleteSchedule = (vmId: string) => this.del<unknown>(`/api/v1/vms/${vmId}/schedule`);
  cutover = (vmId: string, shutdown_timeout_seconds: number) =>
    this.post<{ job_id: string }>(`/api/v1/vms/${vmId}/cutover`, { shutdown_timeout_seconds });
  testFailover = (vmId: string) => this.post<{ job_id: string }>(`/api/v1/vms/${vmId}/test-failover`);
  testFailoverCleanup = (vmId: string) =>
    this.post<{ job_id: string }>(`/api/v1/vms/${vmId}/test-failover/cleanup`);
  startBootCheck = (vmId: string) => this.post<{ job_id: string }>(`/api/v1/vms/${vmId}/boot-check`);
  bootCheck = (vmId: string) => this.get<BootCheck>(`/api/v1/vms/${vmId}/boot-check`);
  startInspection = (vmId: string) => this.post<{ job_id: string }>(`/api/v1/vms/${vmId}/inspection`);
  inspection = (vmId: string) => this.get<Inspection>(`/api/v1/vms/${vmId}/inspection`);
  exports = () => this.get<{ exports: ExportInfo[]; server_pid: number }>("/api/v1/exports");
  volumes = async () => (await this.get<{ volumes: Volume[] }>("/api/v1/volumes")).volumes;
  health = () => this.get<Record<string, unknown>>("/health");
  vmaHealth = () => this.get<Record<string, unknown>>("/api/v1/vma/health");
  settings = async () => (await this.get<{ settings: Setting[] }>("/api/v1/settings")).settings;
  putSetting = (name: string, value: string) =>
    this.put<unknown>(`/api/v1/settings/${encodeURIComponent(name)}`, { value });
}
