// The GUI's shell: login with an API token, then a sidebar and the page chosen by the
// URL's hash (#/vms, #/jobs, #/jobs/ID, #/infrastructure, #/settings).
import { render } from "preact";
import { useCallback, useEffect, useMemo, useState } from "preact/hooks";
import { Api, ApiError, savedToken } from "./api";
import { LiveStream } from "./events";
import { Ctx, JobStore, useLinkState, type AppContext } from "./state";
import { Login } from "./pages/Login";
import { VmsPage } from "./pages/Vms";
import { JobsPage } from "./pages/Jobs";
import { InfrastructurePage } from "./pages/Infrastructure";
import { SettingsPage } from "./pages/Settings";
import "./styles.css";

interface Session {
  token: string;
  isAdmin: boolean;
}

function useHash(): string {
  const [h, setH] = useState(location.hash || "#/vms");
  useEffect(() => {
    const f = () => setH(location.hash || "#/vms");
    addEventListener("hashchange", f);
    return () => removeEventListener("hashchange", f);
  }, []);
  return h;
}

async function checkToken(token: string): Promise<Session> {
  const api = new Api(token);
  await api.vms(); // 401 for a wrong, unknown or revoked token
  let isAdmin = true;
  try {
    await api.settings();
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) isAdmin = false;
    else throw e;
  }
  return { token, isAdmin };
}

function App() {
  const [session, setSession] = useState<Session | null>(null);
  const [restoring, setRestoring] = useState(true);
  const [notice, setNotice] = useState<string>("");

  useEffect(() => {
    const t = savedToken();
    if (!t) return setRestoring(false);
    checkToken(t)
      .then(setSession)
      .catch(() => Api.forget())
      .finally(() => setRestoring(false));
  }, []);

  const logout = useCallback((why = "") => {
    Api.forget();
    setSession(null);
    setNotice(why);
  }, []);

  if (restoring) return <div class="splash">Connecting to the OMA…</div>;
  if (!session) {
    return (
      <Login
        notice={notice}
        onLogin={async (token) => {
          const s = await checkToken(token);
          Api.remember(token);
          setNotice("");
          setSession(s);
        }}
      />
    );
  }
  return <Shell session={session} onLogout={logout} />;
}

function Shell({ session, onLogout }: { session: Session; onLogout: (why?: string) => void }) {
  const hash = useHash();
  const [toast, setToast] = useState<{ message: string; kind: "ok" | "error" } | null>(null);
  const ctx = useMemo<AppContext>(() => {
    const api = new Api(session.token);
    const live = new LiveStream(session.token, () =>
      onLogout("The OMA no longer accepts this token (revoked?). Sign in again."),
    );
    const jobs = new JobStore();
    live.on((e) => {
      if (e.type === "job") jobs.merge(e.data);
      else if (e.type === "step") jobs.step(e.data);
      else if (e.type === "log") jobs.log(e.data);
    });
    return {
      api,
      live,
      jobs,
      isAdmin: session.isAdmin,
      navigate: (h) => (location.hash = h),
      notify: (message, kind = "ok") => setToast({ message, kind }),
    };
  }, [session.token]);

  useEffect(() => {
    ctx.live.start();
    return () => ctx.live.stop();
  }, [ctx]);
  useEffect(() => {
    if (!toast) return;
    const t = setTimeout(() => setToast(null), toast.kind === "error" ? 10000 : 4000);
    return () => clearTimeout(t);
  }, [toast]);

  const [, page, arg] = hash.split("/");
  const nav = [
    ["vms", "Virtual machines"],
    ["jobs", "Jobs"],
    ["infrastructure", "Infrastructure"],
    ["settings", "Settings"],
  ];
  return (
    <Ctx.Provider value={ctx}>
      <a class="skip" href="#main" onClick={(e) => {
        e.preventDefault();
        document.getElementById("main")?.focus();
      }}>Skip to content</a>
      <div class="layout">
        <aside class="sidebar">
          <div class="brand">
            <span class="logo" aria-hidden="true">MK</span>
            <div>
              <div class="brand-name">MigrateKit</div>
              <div class="brand-sub">OSSEA Migration Appliance</div>
            </div>
          </div>
          <nav aria-label="Main">
            {nav.map(([id, label]) => (
              <a href={`#/${id}`} class={page === id ? "active" : ""} aria-current={page === id ? "page" : undefined}>
                {label}
              </a>
            ))}
          </nav>
          <div class="sidebar-foot">
            <LinkIndicator />
            <div class="role">{session.isAdmin ? "admin token" : "operator token"}</div>
            <button class="link-button" onClick={() => onLogout()}>Sign out</button>
          </div>
        </aside>
        <main id="main" tabIndex={-1}>
          {page === "jobs" ? (
            <JobsPage selected={arg} />
          ) : page === "infrastructure" ? (
            <InfrastructurePage />
          ) : page === "settings" ? (
            <SettingsPage />
          ) : (
            <VmsPage />
          )}
        </main>
      </div>
      {toast && (
        <div class={`toast ${toast.kind}`} role={toast.kind === "error" ? "alert" : "status"}>
          {toast.message}
          <button class="link-button" aria-label="Dismiss" onClick={() => setToast(null)}>×</button>
        </div>
      )}
    </Ctx.Provider>
  );
}

function LinkIndicator() {
  const s = useLinkState();
  const text = s === "live" ? "Live updates" : s === "connecting" ? "Connecting…" : "Reconnecting…";
  return (
    <div class={`link-state ${s}`} role="status" aria-live="polite" data-testid="link-state">
      <span class="dot" aria-hidden="true" />
      {text}
    </div>
  );
}

render(<App />, document.getElementById("app")!);
