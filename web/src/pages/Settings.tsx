// Settings (admin token): CloudStack and vCenter credentials and the VMA address, stored
// by the OMA (secrets encrypted, never shown again), with CloudStack's validation.
import { useCallback, useEffect, useState } from "preact/hooks";
import { ApiError, type Problem, type Setting } from "../api";
import { Card, ErrorBox } from "../components/Bits";
import { useApp } from "../state";

interface FieldDef {
  name: string;
  label: string;
  secret?: boolean;
  placeholder?: string;
}

const GROUPS: { title: string; fields: FieldDef[]; validate?: string }[] = [
  {
    title: "CloudStack",
    validate: "/api/v1/settings/cloudstack/validate",
    fields: [
      { name: "cloudstack.url", label: "API URL", placeholder: "https://cloudstack.example:8443/client/api" },
      { name: "cloudstack.api_key", label: "API key", secret: true },
      { name: "cloudstack.secret_key", label: "Secret key", secret: true },
      { name: "cloudstack.zone_id", label: "Zone ID" },
    ],
  },
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

export function SettingsPage() {
  const { api, isAdmin, notify } = useApp();
  const [stored, setStored] = useState<Record<string, Setting>>({});
  const [values, setValues] = useState<Record<string, string>>({});
  const [error, setError] = useState("");
  const [fieldErrors, setFieldErrors] = useState<Record<string, string>>({});
  const [problems, setProblems] = useState<Record<string, Problem[] | string>>({});

  const load = useCallback(() => {
    if (!isAdmin) return;
    api.settings().then((s) => {
      setStored(Object.fromEntries(s.map((x) => [x.name, x])));
      setValues(Object.fromEntries(s.filter((x) => !x.secret).map((x) => [x.name, x.value ?? ""])));
      setError("");
    }, (e) => setError(e instanceof Error ? e.message : String(e)));
  }, [api, isAdmin]);
  useEffect(load, [load]);

  if (!isAdmin) {
    return (
      <div class="page">
        <header class="page-head"><div><h1>Settings</h1></div></header>
        <ErrorBox title="Settings need an admin token" message="You signed in with an operator token. Sign out and sign in with an admin token to see or change settings." />
      </div>
    );
  }

  const save = async (group: (typeof GROUPS)[number], e: Event) => {
    e.preventDefault();
    const errs: Record<string, string> = {};
    let saved = 0;
    for (const f of group.fields) {
      const v = values[f.name];
      if (v === undefined || (f.secret && v === "") || (!f.secret && v === (stored[f.name]?.value ?? ""))) continue;
      try {
        await api.putSetting(f.name, v);
        saved++;
      } catch (err) {
        errs[f.name] = err instanceof Error ? err.message : String(err);
      }
    }
    setFieldErrors(errs);
    if (Object.keys(errs).length === 0) notify(saved ? `${group.title}: ${saved} setting${saved === 1 ? "" : "s"} saved` : `${group.title}: nothing changed`);
    setValues((old) => {
      const n = { ...old };
      for (const f of group.fields) if (f.secret) n[f.name] = "";
      return n;
    });
    load();
  };

  const validate = async (group: (typeof GROUPS)[number]) => {
    if (!group.validate) return;
    try {
      const r = await api.post<{ ok: boolean; problems: Problem[] }>(group.validate);
      setProblems((p) => ({ ...p, [group.title]: r.problems ?? [] }));
    } catch (e) {
      setProblems((p) => ({ ...p, [group.title]: e instanceof ApiError && e.missingRoute ? "This OMA cannot validate these settings (no validation route)." : e instanceof Error ? e.message : String(e) }));
    }
  };

  return (
    <div class="page">
      <header class="page-head"><div><h1>Settings</h1><p class="sub">Stored on the OMA; secrets are encrypted and never shown again</p></div></header>
      {error && <ErrorBox title="Could not load the settings" message={error} />}
      <div class="settings-grid">
        {GROUPS.map((g) => {
          const p = problems[g.title];
          return (
            <Card title={g.title}>
              <form onSubmit={(e) => save(g, e)} aria-label={`${g.title} settings`}>
                {g.fields.map((f) => (
                  <div class="field">
                    <label for={f.name}>{f.label}</label>
                    {f.secret ? (
                      <input id={f.name} type="password" autoComplete="off"
                        placeholder={stored[f.name] ? "stored — type to replace" : "not set"}
                        value={values[f.name] ?? ""} aria-invalid={fieldErrors[f.name] ? "true" : undefined}
                        onInput={(e) => setValues({ ...values, [f.name]: (e.target as HTMLInputElement).value })} />
                    ) : (
                      <input id={f.name} type="text" autoComplete="off" placeholder={f.placeholder}
                        value={values[f.name] ?? ""} aria-invalid={fieldErrors[f.name] ? "true" : undefined}
                        onInput={(e) => setValues({ ...values, [f.name]: (e.target as HTMLInputElement).value })} />
                    )}
                    {fieldErrors[f.name] && <p class="form-error small" role="alert">{fieldErrors[f.name]}</p>}
                  </div>
                ))}
                <div class="button-row">
                  <button class="primary" type="submit">Save {g.title}</button>
                  {g.validate && <button type="button" onClick={() => validate(g)}>Validate</button>}
                </div>
                {p !== undefined && (typeof p === "string" ? <p class="form-error" role="alert">{p}</p> :
                  p.length === 0 ? <p class="ok-text" role="status">Validation passed: CloudStack accepted these settings.</p> : (
                    <ul class="problems" role="alert">{p.map((x) => <li><strong>{x.field}</strong>: {x.message}</li>)}</ul>
                  ))}
              </form>
            </Card>
          );
        })}
      </div>
    </div>
  );
}
