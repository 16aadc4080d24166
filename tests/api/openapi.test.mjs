// The OpenAPI document of the real oma binary passes `swagger-cli validate` and
// `spectral lint` with the spectral:oas ruleset without a single error, warning, hint
// or note, and describes every operation completely (operationId, tag, description, a
// schema for every response). The document is saved to $MK_ARTIFACTS/openapi.json.
//
// Environment (set by CTest): MK_OMA, MK_ARTIFACTS.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { OmaProcess } from "./oma_process.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const bin = (name) => path.join(here, "node_modules", ".bin", name);
const run = promisify(execFile);
const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this test through CTest (ctest -L api)`);
  return v;
};

async function fetchDocument() {
  const oma = new OmaProcess(env("MK_OMA"));
  try {
    const { base, token } = await oma.ready();
    const r = await fetch(`${base}/api/v1/openapi.json`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(r.status, 200);
    return await r.json();
  } finally {
    await oma.stop();
  }
}

test("the OMA's OpenAPI document is complete, valid and lint-free", async () => {
  const doc = await fetchDocument();
  const dir = env("MK_ARTIFACTS");
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "openapi.json");
  writeFileSync(file, JSON.stringify(doc, null, 2));

  let operations = 0, requests = 0, responses = 0;
  for (const [p, methods] of Object.entries(doc.paths)) {
    for (const [m, op] of Object.entries(methods)) {
      const where = `${m.toUpperCase()} ${p}`;
      operations++;
      assert.ok(op.operationId, `${where}: no operationId`);
      assert.equal(op.tags?.length, 1, `${where}: one tag`);
      assert.ok(op.description, `${where}: no description`);
      if (op.requestBody) requests++;
      assert.ok(Object.keys(op.responses).some((s) => s.startsWith("2")), `${where}: no success response`);
      for (const [status, r] of Object.entries(op.responses)) {
        responses++;
        for (const [media, c] of Object.entries(r.content ?? {})) assert.ok(c.schema, `${where} ${status} ${media}: no schema`);
        assert.ok(r.content, `${where} ${status}: no content`);
      }
    }
  }
  console.log(`${operations} operations, ${requests} request schemas, ${responses} responses with a schema, ` +
              `${Object.keys(doc.components.schemas).length} component schemas`);

  const swagger = await run(bin("swagger-cli"), ["validate", file]).catch((e) => e);
  assert.equal(swagger.code ?? 0, 0, `swagger-cli validate: ${swagger.stdout}${swagger.stderr}`);
  console.log(`swagger-cli: ${swagger.stdout.trim()}`);

  // spectral exits non-zero on errors only: count every result, whatever its severity.
  const spectral = await run(bin("spectral"), ["lint", "--ruleset", path.join(here, ".spectral.yaml"), "--format", "json",
                                               "--quiet", file], { maxBuffer: 64 << 20 }).catch((e) => e);
  let results;
  try {
    results = JSON.parse(spectral.stdout);
  } catch {
    assert.fail(`spectral did not answer JSON (exit ${spectral.code}): ${spectral.stdout}${spectral.stderr}`);
  }
  const severity = ["error", "warning", "information", "hint"];
  const shown = results.map((r) => `${severity[r.severity]} ${r.code} at ${r.path.join(".")}: ${r.message}`);
  console.log(`spectral (spectral:oas): ${results.length} results`);
  assert.deepEqual(shown, [], "spectral found problems");
});
