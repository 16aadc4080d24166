// Contract test of the whole API flow: against web-lab (the real oma binary and a VMA
// copying real data), a client calls every kind of operation the OMA offers — tokens,
// discovery, adding a VM, full and incremental passes, progress, schedules, exports,
// volumes, settings, network mappings, VMAs, boot checks, inspections, cutover, and the errors on the way (401,
// 403, 404, 400, 409, 406) — and every request and response is checked against the
// OMA's own OpenAPI document (contract.mjs). One mismatch fails the test; so does an
// operation of the document that the flow never called.
//
// Environment (set by CTest): MK_WEB_LAB, MK_OMA, MK_WEB_DIST; MK_VMA and MK_LAB for the
// real VMA.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { Lab, until } from "../web/web_lab.mjs";
import { Contract } from "./contract.mjs";

// The OMA<->VMA protocol version of this tree (src/protocol/version.h is its one source).
const PROTOCOL_VERSION = Number(
  /kVersion = (\d+);/.exec(readFileSync(new URL("../../src/protocol/version.h", import.meta.url), "utf8"))[1]);

// Operations this flow cannot reach here, and why.
const UNREACHED = new Set([
  // A bundle needs the OMA's SSH host key file (/etc/ssh/...), which the lab has not.
  "POST /api/v1/vmas/pairing-bundles",
  // Paired VMAs: the lab's VMA is the default one, not paired (tests/tunnel pairs them).
  "POST /api/v1/vmas/{vma_id}/approve",
  "POST /api/v1/vmas/{vma_id}/revoke",
  "GET /api/v1/vmas/{vma_id}/health",
  "GET /api/v1/vmas/{vma_id}/discover",
  // Test failover needs CloudStack (tests/cloudstack); the lab's volumes are local.
  "POST /api/v1/vms/{vm_id}/test-failover",
  "POST /api/v1/vms/{vm_id}/test-failover/cleanup",
  // Only a CloudStack cutover whose rollback did not finish has one to finish (tests/cloudstack).
  "POST /api/v1/vms/{vm_id}/cutover/rollback",
  "PUT /api/v1/settings/cloudstack",
]);

class Client {
  constructor(base, token, contract) {
    Object.assign(this, { base, token, contract, violations: [], calls: 0 });
  }
  async call(method, path, { body, token = this.token, headers = {} } = {}) {
    const h = { ...headers };
    if (token) h.Authorization = token.startsWith("Pairing ") ? token : `Bearer ${token}`;
    if (body !== undefined) h["Content-Type"] = "application/json";
    const r = await fetch(this.base + path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const contentType = r.headers.get("content-type") ?? "";
    const text = contentType.startsWith("text/event-stream") ? undefined : await r.text();
    const json = contentType.startsWith("application/json") ? JSON.parse(text) : undefined;
    this.calls++;
    this.violations.push(...this.contract.check({ method, url: this.base + path, requestBody: body, status: r.status,
                                                  contentType, body: json }));
    if (r.status === 500) this.violations.push(`${method} ${path} -> 500: ${json?.error}`);
    return { status: r.status, body: json, text };
  }
  get(p, o) { return this.call("GET", p, o); }
  post(p, body, o = {}) { return this.call("POST", p, { ...o, body }); }
  put(p, body, o = {}) { return this.call("PUT", p, { ...o, body }); }
  del(p, o) { return this.call("DELETE", p, o); }
}

async function waitForJob(api, id) {
  return until(`job ${id} ended`, async () => {
    const j = (await api.get(`/api/v1/jobs/${id}/progress`)).body;
    return ["completed", "failed", "cancelled"].includes(j.status) ? j : null;
  });
}

test("every exchange of the API flow matches the OMA's OpenAPI document", { timeout: 900_000 }, async () => {
  const lab = new Lab();
  try {
    const info = await lab.info(0);
    const token = lab.token(info);
    const docReply = await fetch(`${info.api_url}/api/v1/openapi.json`, { headers: { Authorization: `Bearer ${token}` } });
    const contract = await Contract.load(await docReply.json());
    const api = new Client(info.api_url, token, contract);
    const unknown = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3bffff";

    // The system routes, and who may call what.
    assert.equal((await api.get("/health", { token: "" })).status, 200);
    assert.equal((await api.get("/metrics")).status, 200);
    assert.equal((await api.get("/api/v1/openapi.json")).status, 200);
    assert.equal((await api.get("/api/v1/vms", { token: "" })).status, 401);
    const created = await api.post("/api/v1/tokens", { name: "flow operator", role: "operator" });
    assert.equal(created.status, 201);
    const operator = new Client(info.api_url, created.body.token, contract);
    assert.equal((await operator.get("/api/v1/tokens")).status, 403);
    assert.equal((await api.get("/api/v1/tokens")).status, 200);
    assert.equal((await api.post("/api/v1/tokens", { name: "x", role: "root" })).status, 400);
    assert.equal((await api.del(`/api/v1/tokens/${created.body.token_id}`)).status, 200);
    assert.equal((await api.del(`/api/v1/tokens/${created.body.token_id}`)).status, 404);
    assert.equal((await operator.get("/api/v1/vms")).status, 401);  // revoked

    // Discovery through the default VMA; the VM is added as the GUI adds it.
    const found = await until("discovery", async () => {
      const r = await api.get("/api/v1/discover");
      return r.status === 200 && r.body.vms.some((v) => v.vm_id === info.vm.vm_id) ? r.body : null;
    });
    assert.equal((await api.get("/api/v1/vma/health")).status, 200);
    if (!info.vm_added) {
      const d = found.vms.find((v) => v.vm_id === info.vm.vm_id);
      const add = await api.post("/api/v1/vms", {
        vm_id: d.vm_id, name: d.name, vcenter: found.vcenter, datacenter: d.datacenter, cpus: d.cpus,
        memory_mb: d.memory_mb, guest_os: d.guest_os || "other", power_state: d.power_state,
        disks: d.disks.map((k) => ({ key: k.disk_key, unit: k.unit, label: k.label, capacity_bytes: k.capacity_bytes })),
        nics: d.nics.map((n) => ({ key: n.key, mac: n.mac, network: n.network })),
      });
      assert.equal(add.status, 201, JSON.stringify(add.body));
    }
    const vm = info.vm.vm_id;
    assert.equal((await api.post("/api/v1/vms", { vm_id: vm })).status, 400);
    assert.equal((await api.get("/api/v1/vms")).status, 200);
    assert.equal((await api.get(`/api/v1/vms/${vm}`)).status, 200);
    assert.equal((await api.get(`/api/v1/vms/${vm}/disks`)).status, 200);
    assert.equal((await api.get(`/api/v1/vms/${unknown}`)).status, 404);
    assert.equal((await api.get(`/api/v1/vms/${unknown}/disks`)).status, 404);
    const pre = await api.get(`/api/v1/vms/${vm}/preflight`);
    assert.equal(pre.status, 200, JSON.stringify(pre.body));
    assert.deepEqual(pre.body.findings, [], "the lab VM has nothing that refuses a pass");
    assert.equal((await api.get(`/api/v1/vms/${unknown}/preflight`)).status, 404);
    assert.equal((await api.get("/api/v1/vms/not-a-uuid")).status, 400);

    // Boot checks (issue 12): none before a replica exists; one that runs is tests/guest's.
    const noReplica = await api.post(`/api/v1/vms/${vm}/boot-check`);
    assert.equal(noReplica.status, 409, JSON.stringify(noReplica.body));
    assert.match(noReplica.body.error, /has no replica of disk .* run a full replication first/);
    assert.equal((await api.get(`/api/v1/vms/${vm}/boot-check`)).status, 404);
    assert.equal((await api.post(`/api/v1/vms/${unknown}/boot-check`)).status, 404);
    assert.equal((await api.get(`/api/v1/vms/${unknown}/boot-check`)).status, 404);
    assert.equal((await api.get(`/api/v1/vms/${vm}`)).body.boot_check, null);
    // Inspections likewise (one that runs: tests/oma InspectionApi, tests/guest).
    const noReplicaToInspect = await api.post(`/api/v1/vms/${vm}/inspection`);
    assert.equal(noReplicaToInspect.status, 409, JSON.stringify(noReplicaToInspect.body));
    assert.match(noReplicaToInspect.body.error, /has no replica of disk .* run a full replication first/);
    const notInspected = await api.get(`/api/v1/vms/${vm}/inspection`);
    assert.equal(notInspected.status, 404);
    assert.match(notInspected.body.error, /has not been inspected yet/);
    assert.equal((await api.get(`/api/v1/vms/${unknown}/inspection`)).status, 404);
    assert.equal((await api.get(`/api/v1/vms/${vm}`)).body.guest, null);

    // A full pass, watched, then an incremental one; a cancel after the end is refused.
    const full = await api.post("/api/v1/jobs", { vm_id: vm, kind: "full" });
    assert.equal(full.status, 201);
    assert.equal((await api.post("/api/v1/jobs", { vm_id: vm, kind: "full" })).status, 409);  // one at a time
    assert.equal((await api.get(`/api/v1/jobs/${full.body.job_id}`)).status, 200);
    assert.equal((await waitForJob(api, full.body.job_id)).status, "completed");
    assert.equal((await api.post(`/api/v1/jobs/${full.body.job_id}/cancel`)).status, 409);
    assert.equal((await api.get(`/api/v1/jobs/${unknown}`)).status, 404);
    assert.equal((await api.get(`/api/v1/jobs/${unknown}/progress`)).status, 404);
    assert.equal((await api.get(`/api/v1/jobs?vm_id=${vm}&status=completed`)).status, 200);
    assert.equal((await api.get("/api/v1/jobs?status=bogus")).status, 400);
    const incr = await api.post("/api/v1/jobs", { vm_id: vm, kind: "incremental" });
    assert.equal(incr.status, 201);
    assert.equal((await waitForJob(api, incr.body.job_id)).status, "completed");
    assert.equal((await api.get(`/api/v1/jobs/${incr.body.job_id}`)).status, 200);

    // Schedules.
    assert.equal((await api.get(`/api/v1/vms/${vm}/schedule`)).status, 404);
    assert.equal((await api.put(`/api/v1/vms/${vm}/schedule`, { interval_minutes: 600, enabled: true })).status, 200);
    assert.equal((await api.get(`/api/v1/vms/${vm}/schedule`)).status, 200);
    assert.equal((await api.get("/api/v1/vms")).status, 200);  // with its schedule
    assert.equal((await api.del(`/api/v1/vms/${vm}/schedule`)).status, 200);
    assert.equal((await api.del(`/api/v1/vms/${vm}/schedule`)).status, 404);

    // Exports, volumes, settings, network mappings, VMAs, events.
    assert.equal((await api.get("/api/v1/exports")).status, 200);
    assert.equal((await api.get("/api/v1/volumes")).status, 200);
    assert.equal((await api.put("/api/v1/settings/vcenter.host", { value: "vcenter.example.local" })).status, 200);
    assert.equal((await api.put("/api/v1/settings/vcenter.password", { value: "s3cret" })).status, 200);
    assert.equal((await api.put("/api/v1/settings/nope", { value: "x" })).status, 400);
    assert.equal((await api.put("/api/v1/settings/boot_check.after_incremental", { value: "false" })).status, 200);
    assert.equal((await api.put("/api/v1/settings/boot_check.after_incremental", { value: "maybe" })).status, 400);
    assert.equal((await api.get("/api/v1/settings")).status, 200);
    assert.equal((await api.get("/api/v1/settings/cloudstack")).status, 200);
    assert.equal((await api.post("/api/v1/settings/cloudstack/validate", {})).status, 200);
    const mappings = { mappings: [{ source_network: "VM Network", target_network_id: "net-1", keep_mac: true }] };
    assert.equal((await api.put("/api/v1/network-mappings", mappings)).status, 200);
    assert.equal((await api.get("/api/v1/network-mappings")).status, 200);
    assert.equal((await api.get("/api/v1/vmas")).status, 200);
    const enrolment = { protocol_version: PROTOCOL_VERSION, name: "x", vcenter: "y",
                        ssh_public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f" };
    assert.equal((await api.post("/api/v1/vmas/enroll", enrolment, { token: "" })).status, 401);
    assert.equal((await api.post("/api/v1/vmas/enroll", enrolment, { token: "Pairing mkp_wrong" })).status, 403);
    // A VMA of another protocol version is refused before its code is looked at.
    assert.equal((await api.post("/api/v1/vmas/enroll", { ...enrolment, protocol_version: PROTOCOL_VERSION + 1 },
                                 { token: "Pairing mkp_wrong" })).status, 409);
    assert.equal((await api.get("/api/v1/events")).status, 406);

    // Cutover; afterwards no more replication.
    const cut = await api.post(`/api/v1/vms/${vm}/cutover`, { shutdown_timeout_seconds: 60 });
    assert.equal(cut.status, 202, JSON.stringify(cut.body));
    assert.equal((await waitForJob(api, cut.body.job_id)).status, "completed");
    assert.equal((await api.get(`/api/v1/vms/${vm}`)).body.status, "cut_over");
    assert.equal((await api.post("/api/v1/jobs", { vm_id: vm, kind: "incremental" })).status, 409);
    assert.equal((await api.post(`/api/v1/vms/${unknown}/cutover`, {})).status, 404);

    // Nodes (issue 18): the lab is one OMA without a node id, so there are none; a VM
    // placed there waits in the queue.
    assert.equal((await api.get("/api/v1/nodes")).status, 200);
    for (const verb of ["drain", "activate"]) {
      assert.equal((await api.post(`/api/v1/nodes/oma-x/${verb}`)).status, 404);
    }
    assert.equal((await api.get(`/api/v1/vms/${unknown}/placement`)).status, 404);
    assert.equal((await api.post(`/api/v1/vms/${unknown}/move`, { node_id: "oma-x" })).status, 404);
    const placed = await api.post(`/api/v1/vms/${vm}/placement`);
    assert.equal(placed.status, 200, JSON.stringify(placed.body));

    // Every operation of the document was called (but those the lab cannot reach).
    const called = new Set([...contract.seen].map((s) => s.split(" ").slice(0, 2).join(" ")));
    const documented = Object.entries(contract.doc.paths).flatMap(([p, ms]) => Object.keys(ms).map((m) => `${m.toUpperCase()} ${p}`));
    const missed = documented.filter((o) => !called.has(o) && !UNREACHED.has(o));
    console.log(`contract: ${api.calls + operator.calls} exchanges, ${called.size} of ${documented.length} operations, ` +
                `${contract.seen.size} operation/status pairs`);
    assert.deepEqual(missed, [], "operations the flow did not call");
    assert.deepEqual([...api.violations, ...operator.violations], []);
  } finally {
    const r = await lab.stop();
    if (r.code !== 0) console.error(lab.log.join(""));
  }
});
