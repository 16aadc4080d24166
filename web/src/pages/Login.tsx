// Sign in with an OMA API token (admin.token in the OMA's data directory, or one made
// with POST /api/v1/tokens). The token stays in this tab's session storage only.
import { useState } from "preact/hooks";
import { ApiError } from "../api";

export function Login({ onLogin, notice }: { onLogin: (token: string) => Promise<void>; notice: string }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState(notice);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!token.trim()) return setError("Enter an API token.");
    setBusy(true);
    setError("");
    try {
      await onLogin(token.trim());
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 401
          ? "The OMA refused this token: it is wrong, unknown or revoked. Use the token from admin.token in the OMA's data directory, or ask an administrator for one."
          : err instanceof Error ? err.message : String(err),
      );
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="login-page">
      <form class="login" onSubmit={submit} aria-labelledby="login-title">
        <div class="brand">
          <span class="logo" aria-hidden="true">MK</span>
          <div>
            <div class="brand-name">MigrateKit</div>
            <div class="brand-sub">OSSEA Migration Appliance</div>
          </div>
        </div>
        <h1 id="login-title">Sign in</h1>
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autoComplete="off" spellcheck={false} autoFocus
          value={token} onInput={(e) => setToken((e.target as HTMLInputElement).value)}
          aria-invalid={error ? "true" : undefined} aria-describedby={error ? "login-error" : "token-help"} />
        <p id="token-help" class="hint">
          The first admin token is in <code>admin.token</code> in the OMA's data directory.
        </p>
        {error && <p id="login-error" class="form-error" role="alert">{error}</p>}
        <button class="primary" type="submit" disabled={busy}>{busy ? "Checking…" : "Sign in"}</button>
      </form>
    </div>
  );
}
