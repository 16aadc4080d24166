// Settings: CloudStack (with CloudStack's own validation of them), vCenter credentials,
// the VMA address and the network mappings, all stored by the OMA. Secrets are sealed
// at rest and never shown again: an empty secret field keeps the stored one.
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useState } from "preact/hooks";
import { ApiError, type Problem, type Setting } from "../api";
import { Card, ErrorBox } from "../components/Bits";
import { useApp } from "../state";

const message = (e: unknown) =>
  e instanceof ApiError && e.missingRoute ? "This OMA does not offer this (its API has no such route)." :
  e instanceof ApiError && e.field ? `${e.message}` : e instanceof Error ? e.message : String(e);

interface FieldDef {
  name: string;
  label: string;
  secret?: boolean;
  placeholder?: string;
  optional?: boolean;
}

function Field({ f, value, error, isSet, onInput }: {
  f: FieldDef; value: string; error?: string; isSet?: boolean; onInput: (v: string) => void;
}) {
  const id = `f-${f.name.replace(/\W/g, "-")}`;
  const common = {
    id, value, autoComplete: "off", "aria-invalid": error ? ("true" as const) : undefined,
    onInput: (e: Event) => onInput((e.target as HTMLInputElement).value),
  };
  return (
    <div class="field">
      <label for={id}>{f.label}{f.optional && <span class="dim"> (optional)</span>}</label>
      {f.secret ? <input type="password" placeholder={isSet ? "stored — type to replace" : "not set"} {...common} />
        : <input type="text" placeholder={f.placeholder} {...common} />}
      {error && <p class="form-error small" role="alert">{error}</p>}
    </div>
  );
}

const CLOUDSTACK: FieldDef[] = [
  { name: "api_url", label: "API URL", placeholder: "https://cloudstack.example:8443/client/api" },
  { name: "api_key", label: "API key", secret: true },
  { name: "secret_key", label: "Secret key", secret: true },
  { name: "zone_id", label: "Zone ID" },
  { name: "disk_offering_id", label: "Disk offering ID (custom size)" },
  { name: "service_offering_id", label: "Service offering ID" },
  { name: "template_id", label: "Template ID" },
  { name: "test_network_id", label: "Test failover network ID", optional: true },
  { name: "oma_mac", label: "This OMA's MAC address", placeholder: "02:00:00:00:0a:01" },
];

type Validation = { ok: boolean; problems: Problem[] } | string | null;

function CloudStackCard() {
  const { api, notify } = useApp();
  const [values, setValues] = useState<Record<string, string>>({});
  const [stored, setStored] = useState<Record<string, unknown> | null>(null);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [result, setResult] = useState<Validation>(null);
  const [loadError, setLoadError] = useState("");

  const load = useCallback(() => {
    api.get<Record<string, unknown>>("/api/v1/settings/cloudstack").then((s) => {
      setStored(s);
      setValues(Object.fromEntries(CLOUDSTACK.filter((f) => !f.secret).map((f) => [f.name, String(s[f.name] ?? "")])));
    }, (e) => setLoadError(message(e)));
  }, [api]);
  useEffect(load, [load]);

  // Only what the operator typed: empty secrets and untouched optional ids are left out.
  const body = () =>
    Object.fromEntries(
      CLOUDSTACK.filter((f) => (values[f.name] ?? "") !== "" || (!f.secret && !f.optional)).map((f) => [f.name, values[f.name] ?? ""]),
    );
  const save = async (e: Event) => {
    e.preventDefault();
    try {
      await api.put("/api/v1/settings/cloudstack", body());
      setErrors({});
      notify("CloudStack settings saved");
      setValues((v) => ({ ...v, api_key: "", secret_key: "" }));
      load();
    } catch (err) {
      if (err instanceof ApiError && err.field) setErrors({ [err.field]: err.message });
      else setErrors({ _: message(err) });
    }
  };
  const validate = async () => {
    setResult(null);
    try {
      // Only what was typed: the OMA checks it merged over what it has stored.
      const typed = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== ""));
      setResult(await api.post<{ ok: boolean; problems: Problem[] }>("/api/v1/settings/cloudstack/validate", typed));
      setErrors({});
    } catch (err) {
      if (err instanceof ApiError && err.field) setErrors({ [err.field]: err.message });
      setResult(message(err));
    }
  };
  if (loadError) return <Card title="CloudStack"><ErrorBox title="CloudStack settings" message={loadError} /></Card>;
  return (
    <Card title="CloudStack" actions={stored && <span class="dim">{stored.configured ? "configured" : "not configured"}</span>}>
      <form onSubmit={save} aria-label="CloudStack settings">
        {CLOUDSTACK.map((f) => (
          <Field f={f} value={values[f.name] ?? ""} error={errors[f.name]}
            isSet={Boolean(stored?.[`${f.name}_set`])} onInput={(v) => setValues({ ...values, [f.name]: v })} />
        ))}
        {errors._ && <p class="form-error" role="alert">{errors._}</p>}
        <div class="button-row">
          <button class="primary" type="submit">Save CloudStack</button>
          <button type="button" onClick={validate}>Validate</button>
        </div>
        <ValidationResult result={result} />
      </form>
    </Card>
  );
}

function ValidationResult({ result }: { result: Validation }) {
  if (result === null) return null;
  if (typeof result === "string") return <p class="form-error" role="alert">{result}</p>;
  if (result.ok) return <p class="ok-text" role="status">Validation passed: CloudStack accepted these settings.</p>;
  return (
    <div role="alert">
      <p class="form-error">CloudStack did not accept these settings:</p>
      <ul class="problems">{result.problems.map((x) => <li><strong>{x.field}</strong>: {x.message}</li>)}</ul>
    </div>
  );
}

const SIMPLE: { title: string; fields: FieldDef[] }[] = [
  {
    title: "vCenter",
    fields: [
      { name: "vcenter.host", label: "Host", placeholder: "vcenter.example" },
      { name: "vcenter.username", label: "User name" },
      { name: "vcenter.password", label: "Password", secret: true },
    ],
  },
  { title: "VMA", fields: [{ name: "vma.url", label: "VMA API URL (through the tunnel)", placeholder: "http://127.0.0.1:9081" }] },
];

function SimpleCard({ title, fields, stored, reload }: {
  title: string; fields: FieldDef[]; stored: Record<string, Setting>; reload: () => void;
}) {
  const { api, notify } = useApp();
  const [values, setValues] = useState<Record<string, string>>({});
  const [errors, setErrors] = useState<Record<string, string>>({});
  useEffect(() => {
    setValues(Object.fromEntries(fields.filter((f) => !f.secret).map((f) => [f.name, stored[f.name]?.value ?? ""])));
  }, [stored]);
  const save = async (e: Event) => {
    e.preventDefault();
    const errs: Record<string, string> = {};
    let saved = 0;
    for (const f of fields) {
      const v = values[f.name] ?? "";
      if ((f.secret && v === "") || (!f.secret && v === (stored[f.name]?.value ?? ""))) continue;
      try {
        await api.putSetting(f.name, v);
        saved++;
      } catch (err) {
        errs[f.name] = message(err);
      }
    }
    setErrors(errs);
    if (!Object.keys(errs).length) notify(saved ? `${title}: ${saved} setting${saved === 1 ? "" : "s"} saved` : `${title}: nothing changed`);
    setValues((old) => ({ ...old, ...Object.fromEntries(fields.filter((f) => f.secret).map((f) => [f.name, ""])) }));
    reload();
  };
  return (
    <Card title={title}>
      <form onSubmit={save} aria-label={`${title} settings`}>
        {fields.map((f) => <Field f={f} value={values[f.name] ?? ""} error={errors[f.name]} isSet={!!stored[f.name]}
          onInput={(v) => setValues({ ...values, [f.name]: v })} />)}
        <div class="button-row"><button class="primary" type="submit">Save {title}</button></div>
      </form>
    </Card>
  );
}

/** boot_check.after_incremental: a boot check after each completed incremental pass (off when unset). */
function BootCheckCard({ stored, reload }: { stored: Record<string, Setting>; reload: () => void }) {
  const { api, notify } = useApp();
  const on = stored["boot_check.after_incremental"]?.value === "true";
  const [error, setError] = useState("");
  const toggle = async (value: boolean) => {
    try {
      await api.putSetting("boot_check.after_incremental", value ? "true" : "false");
      setError("");
      notify(value ? "Boot checks run after each incremental pass" : "Boot checks run only when started");
      reload();
    } catch (err) {
      setError(message(err));
    }
  };
  return (
    <Card title="Boot checks">
      <label class="check"><input type="checkbox" checked={on}
        onChange={(e) => toggle((e.target as HTMLInputElement).checked)} /> Run a boot check after each completed incremental pass</label>
      <p class="hint">Each converts overlays of the VM's replicas and boots them in a throwaway VM (minutes of CPU; the VM takes no pass meanwhile).</p>
      {error && <p class="form-error" role="alert">{error}</p>}
    </Card>
  );
}

/** inspection.after_pass: inspect each VM after its full passes when guests are converted (off when unset). */
function InspectionCard({ stored, reload }: { stored: Record<string, Setting>; reload: () => void }) {
  const { api, notify } = useApp();
  const on = stored["inspection.after_pass"]?.value === "true";
  const [error, setError] = useState("");
  const toggle = async (value: boolean) => {
    try {
      await api.putSetting("inspection.after_pass", value ? "true" : "false");
      setError("");
      notify(value ? "VMs are inspected after their full passes" : "VMs are inspected only when asked");
      reload();
    } catch (err) {
      setError(message(err));
    }
  };
  return (
    <Card title="Guest inspection">
      <label class="check"><input type="checkbox" checked={on}
        onChange={(e) => toggle((e.target as HTMLInputElement).checked)} /> Inspect each VM after its full pass (when the OMA converts guests)</label>
      <p class="hint">virt-inspector reads the replicas (about 20 s; the VM takes no pass meanwhile) and shows whether the guest can be converted, long before the cutover.</p>
      {error && <p class="form-error" role="alert">{error}</p>}
    </Card>
  );
}

interface Mapping {
  source_network: string;
  target_network_id: string;
  keep_mac: boolean;
}

function MappingsCard() {
  const { api, notify } = useApp();
  const [rows, setRows] = useState<Mapping[] | null>(null);
  const [error, setError] = useState("");
  const load = useCallback(() => {
    api.get<{ mappings: Mapping[] }>("/api/v1/network-mappings").then((r) => setRows(r.mappings), (e) => setError(message(e)));
  }, [api]);
  useEffect(load, [load]);
  const set = (i: number, m: Partial<Mapping>) => setRows(rows!.map((r, k) => (k === i ? { ...r, ...m } : r)));
  const save = async (e: Event) => {
    e.preventDefault();
    try {
      await api.put("/api/v1/network-mappings", { mappings: rows });
      setError("");
      notify("Network mappings saved");
      load();
    } catch (err) {
      setError(message(err));
    }
  };
  return (
    <Card title="Network mappings">
      {rows === null && !error && <p class="dim">Loading…</p>}
      {rows !== null && (
        <form onSubmit={save} aria-label="Network mappings">
          <table class="grid compact">
            <thead><tr><th>VMware network</th><th>CloudStack network ID</th><th>Keep MAC</th><th /></tr></thead>
            <tbody>
              {rows.length === 0 && <tr><td colSpan={4} class="dim">No mappings: every NIC needs one before a cutover.</td></tr>}
              {rows.map((r, i) => (
                <tr>
                  <td><input type="text" aria-label={`VMware network ${i + 1}`} value={r.source_network}
                    onInput={(e) => set(i, { source_network: (e.target as HTMLInputElement).value })} /></td>
                  <td><input type="text" aria-label={`CloudStack network ${i + 1}`} value={r.target_network_id}
                    onInput={(e) => set(i, { target_network_id: (e.target as HTMLInputElement).value })} /></td>
                  <td><input type="checkbox" aria-label={`Keep MAC ${i + 1}`} checked={r.keep_mac}
                    onChange={(e) => set(i, { keep_mac: (e.target as HTMLInputElement).checked })} /></td>
                  <td><button type="button" class="link-button" onClick={() => setRows(rows.filter((_, k) => k !== i))}>Remove</button></td>
                </tr>
              ))}
            </tbody>
          </table>
          <div class="button-row">
            <button type="button" onClick={() => setRows([...rows, { source_network: "", target_network_id: "", keep_mac: true }])}>Add mapping</button>
            <button class="primary" type="submit">Save mappings</button>
          </div>
        </form>
      )}
      {error && <p class="form-error" role="alert">{error}</p>}
    </Card>
  );
}

function Page({ children }: { children: ComponentChildren }) {
  return (
    <div class="page">
      <header class="page-head"><div><h1>Settings</h1><p class="sub">Stored on the OMA; secrets are sealed and never shown again</p></div></header>
      {children}
    </div>
  );
}

export function SettingsPage() {
  const { api, isAdmin } = useApp();
  const [stored, setStored] = useState<Record<string, Setting>>({});
  const [error, setError] = useState("");
  const load = useCallback(() => {
    if (!isAdmin) return;
    api.settings().then((s) => setStored(Object.fromEntries(s.map((x) => [x.name, x]))), (e) => setError(message(e)));
  }, [api, isAdmin]);
  useEffect(load, [load]);

  if (!isAdmin) {
    return (
      <Page>
        <ErrorBox title="Credentials need an admin token" message="You signed in with an operator token: CloudStack and vCenter settings are hidden. Sign in with an admin token to change them." />
        <MappingsCard />
      </Page>
    );
  }
  return (
    <Page>
      {error && <ErrorBox title="Could not load the settings" message={error} />}
      <div class="settings-grid">
        <CloudStackCard />
        <div class="stack">
          {SIMPLE.map((g) => <SimpleCard title={g.title} fields={g.fields} stored={stored} reload={load} />)}
          <BootCheckCard stored={stored} reload={load} />
          <InspectionCard stored={stored} reload={load} />
          <MappingsCard />
        </div>
      </div>
    </Page>
  );
}
