#!/usr/bin/env python3
"""End-to-end tests of a whole migration: lab (vcsim + CBT shim + sshd), OMA, paired VMA
behind its SSH tunnel, all real processes (scripts/migration_lab.py), driven through the
OMA's API. Every disk is compared with its source by sha256 after every pass.

    flow_test.py demo            scripts/demo --synthetic --once --summary: the README's main
                                 command on generated disks (the fast variant; make test)
    flow_test.py demo-guest      scripts/demo --once --summary as `make demo` runs it: the lab's
                                 VMware-like guest, not booting unconverted, boot-checked
                                 through the OMA, converted at cutover, booted after it
                                 (label guest: real virt-v2v and qemu)
    flow_test.py faults          two VMs x two disks at once; ssh killed mid-copy; the VMA
                                 killed mid-copy and restarted; the OMA killed mid-copy and
                                 restarted; the export server's PID unchanged throughout
    flow_test.py nbd-over-ssh    NBD inside the SSH connection; ssh killed mid-copy

Exit status 0 when every check held; the failures are printed. CTest runs each (label
"migration").
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from migration_lab import LabError, MigrationLab, free_port, say, wait_for  # noqa: E402


class Check:
    def __init__(self):
        self.failures = []

    def that(self, ok, what):
        say(("   ok: " if ok else "   FAILED: ") + what)
        if not ok:
            self.failures.append(what)


def fault_at(fraction, action, fired):
    """An on_progress callback that runs `action` once the pass is `fraction` done."""
    def on_progress(done):
        if not fired and fraction <= done < 1.0:
            fired.append(action())
    return on_progress


def demo(work, check):
    summary_file = os.path.join(work, "summary.json")
    env = dict(os.environ, DEMO_DISK_MIB="256,128", TMPDIR=work)
    # The documented ports (README): those free now must be the demo's; the GUI's is held
    # here (or by someone else already), so the demo must take another one and say so.
    documented = {"api": 8082, "nbd": 10809, "gui": 3001, "tunnel": 9081}
    free_before = {role: free_port(port) == port for role, port in documented.items()}
    holder = socket.socket()
    if free_before["gui"]:
        holder.bind(("127.0.0.1", documented["gui"]))
        holder.listen()
    try:
        rc = subprocess.run([os.path.join(ROOT, "scripts", "demo"), "--synthetic", "--once", "--summary",
                             summary_file], env=env).returncode
    finally:
        holder.close()
    check.that(rc == 0, f"scripts/demo --once exits 0 (got {rc})")
    with open(summary_file) as f:
        s = json.load(f)
    types = sorted({p["type"] for p in s.get("passes", [])})
    check.that(types == ["final", "full", "incremental"], f"passes of every type, got {types}")
    check.that(len(s.get("passes", [])) == 6, "two disks x three passes in the summary")
    check.that(all(p["source_sha256"] == p["target_sha256"] for p in s["passes"]), "every disk identical after every pass")
    check.that(all(p["bytes_moved"] > 0 for p in s["passes"]), "every pass moved bytes")
    full = sum(p["bytes_moved"] for p in s["passes"] if p["type"] == "full")
    incr = sum(p["bytes_moved"] for p in s["passes"] if p["type"] == "incremental")
    check.that(incr < full / 4, f"the incremental moved less than a quarter of the full ({incr} vs {full})")
    check.that(isinstance(s.get("cutover_downtime_seconds"), (int, float)) and s["cutover_downtime_seconds"] > 0,
               f"cutover downtime reported ({s.get('cutover_downtime_seconds')})")
    # The source is powered off for the final pass: it reads the VM's own disks and takes
    # no snapshot (the lab's vCenter counts CreateSnapshot calls); its disks are compared
    # by sha256 above like every pass's.
    check.that(s.get("cutover_snapshots_created") == 0,
               f"the cutover's final pass took no snapshot (snapshots created: {s.get('cutover_snapshots_created')})")
    ports = s.get("ports", {})
    check.that(ports.get("gui") not in (None, documented["gui"]), f"the GUI port held by the test was avoided ({ports})")
    for role in ("api", "nbd", "tunnel"):
        if free_before[role]:
            check.that(ports.get(role) == documented[role], f"the documented {role} port {documented[role]} used ({ports})")
    leftovers = [n for n in os.listdir(work) if n.startswith("mk-demo.")]
    check.that(not leftovers, f"the demo removed its directory ({leftovers})")


def demo_guest(work, check):
    summary_file = os.path.join(work, "summary.json")
    rc = subprocess.run([os.path.join(ROOT, "scripts", "demo"), "--once", "--summary", summary_file],
                        env=dict(os.environ, TMPDIR=work,  # libguestfs's appliance built once, not per run
                                 LIBGUESTFS_CACHEDIR=os.environ.get("LIBGUESTFS_CACHEDIR", "/var/tmp"))).returncode
    check.that(rc == 0, f"scripts/demo --once exits 0 (got {rc})")
    with open(summary_file) as f:
        s = json.load(f)
    vms = s.get("vms", [])
    check.that(len(vms) == 1, f"one VM in the summary ({len(vms)})")
    vm = vms[0] if vms else {}
    checks = vm.get("boot_check", {})
    for when in ("before_cutover", "after_cutover"):
        b = checks.get(when, {})
        check.that(sorted(k for k in ("booted", "seconds", "conversion_seconds", "console_tail") if k in b)
                   == ["booted", "console_tail", "conversion_seconds", "seconds"], f"{when}: every field ({sorted(b)})")
        check.that(b.get("booted") is True, f"{when}: booted ({b.get('reason')})")
        check.that(isinstance(b.get("seconds"), (int, float)) and b["seconds"] > 0, f"{when}: boot seconds ({b.get('seconds')})")
        check.that(isinstance(b.get("conversion_seconds"), (int, float)) and b["conversion_seconds"] > 0,
                   f"{when}: conversion seconds ({b.get('conversion_seconds')})")
        tail = b.get("console_tail", "")
        check.that(0 < len(tail.encode()) <= 4096, f"{when}: a console tail of at most 4 KiB ({len(tail.encode())} bytes)")
        # The lab guest's marker once its default target is reached (tests/lab/guest).
        check.that("MK-GUEST-BOOTED" in tail, f"{when}: the guest's marker on its console")
    unconverted = checks.get("unconverted", {})
    check.that(unconverted.get("booted") is False,
               f"the VMware-like guest did not boot on virtio unconverted ({unconverted.get('reason')})")
    check.that("does not exist" in unconverted.get("console_tail", ""),
               "unconverted: its initramfs did not find the root disk (console)")
    check.that(isinstance(vm.get("predicted_downtime_seconds"), (int, float)) and
               vm.get("predicted_conversion_seconds") == checks.get("before_cutover", {}).get("conversion_seconds"),
               f"the prediction includes the boot check's conversion ({vm.get('predicted_downtime_seconds')}, "
               f"{vm.get('predicted_conversion_seconds')})")
    final = [p for p in s.get("passes", []) if p["type"] == "final"]
    check.that(bool(final) and all(p.get("converted") for p in final), "the final disks are marked converted")
    check.that(all(p["source_sha256"] == p["target_sha256"] for p in s.get("passes", []) if p["type"] != "final"),
               "every disk identical to its source after the full and incremental passes")
    check.that(not s.get("failures"), f"no failures ({s.get('failures')})")
    leftovers = [n for n in os.listdir(work) if n.startswith("mk-demo.")]
    check.that(not leftovers, f"the demo removed its directory ({leftovers})")


def faults(work, check):
    lab = MigrationLab(work, vms=2, disk_mib="256,128", read_rate_limit="4M", quiet=False)
    try:
        lab.start()
        export_pid = lab.export_server_pid()
        lab.add_vms()

        say("== full pass of two VMs at once; the VMA's ssh is killed at 30 %")
        fired = []
        jobs = lab.replicate("full", on_progress=fault_at(0.3, lambda: (lab.kill_ssh(), time.time()), fired))
        check.that(bool(fired), "ssh was killed while the pass was copying")
        if fired:
            killed_pid, killed_at = fired[0]
            # The VMA's own account of its tunnel (through the tunnel): up, since a change
            # of state at or after the kill (unix seconds).
            def vma_tunnel_up():
                h = lab.tunnel_up()
                t = ((h or {}).get("vma") or {}).get("tunnel") or {}
                return t if t.get("state") == "up" else None
            tunnel = wait_for("the tunnel back up", vma_tunnel_up, 60)
            ssh_now = lab.vma_ssh_pid()
            check.that(ssh_now is not None and ssh_now != killed_pid,
                       f"the VMA opened a new ssh session (killed pid {killed_pid}, now {ssh_now})")
            check.that(tunnel["since"] >= int(killed_at),
                       f"the VMA's tunnel came up again after the kill (up since {tunnel['since']}, killed at "
                       f"{int(killed_at)})")
        check.that(sorted(j["status"] for j in jobs.values()) == ["completed"] * len(lab.vm_ids),
                   f"both passes completed: {[j['status'] for j in jobs.values()]}")
        full = [e for e in lab.passes if e["type"] == "full"]
        disks = sum(len(vm["disks"]) for vm in lab.vms.values())
        check.that(len(full) == disks and all(e["source_sha256"] == e["target_sha256"] for e in full),
                   f"every disk ({len(full)} of {disks} compared) equals its source by sha256 after the full pass")

        say("== incremental pass; the VMA is killed at 30 % and restarted: it resumes the pass")
        lab.guest_writes(blocks_per_disk=600)
        fired = []
        jobs = lab.replicate("incremental", on_progress=fault_at(0.3, lab.restart_vma, fired))
        check.that(bool(fired), "the VMA was killed while the pass was copying")
        for job in jobs.values():
            events = [e["message"] for e in job.get("events", [])]
            check.that(any("the VMA restarted during the copy" in m for m in events),
                       f"job {job['job_id']} records the VMA's restart: {events}")

        say("== incremental pass; the OMA is killed at 30 % and restarted")
        lab.guest_writes(blocks_per_disk=600, seed=9)
        fired = []
        lab.replicate("incremental", on_progress=fault_at(0.3, lab.restart_oma, fired))
        check.that(bool(fired), "the OMA was killed while the pass was copying")
        check.that(lab.export_server_pid() == export_pid,
                   f"the export server's PID is unchanged from start to end ({export_pid})")
        check.that(not lab.failures, "every disk identical to its source after every pass: "
                   + ("; ".join(lab.failures) or "yes"))
    finally:
        lab.stop()


def nbd_over_ssh(work, check):
    lab = MigrationLab(work, vms=1, disk_mib="256,128", read_rate_limit="4M", nbd_over_ssh=True)
    try:
        lab.start()
        lab.add_vms()
        say("== full pass with NBD inside the SSH connection; ssh killed at 30 %")
        fired = []
        lab.replicate("full", on_progress=fault_at(0.3, lab.kill_ssh, fired))
        check.that(bool(fired), "ssh was killed while the pass was copying")
        lab.guest_writes()
        lab.replicate("incremental")
        check.that(not lab.failures, "every disk identical after every pass: " + ("; ".join(lab.failures) or "yes"))
    finally:
        lab.stop()


def main():
    scenarios = {"demo": demo, "demo-guest": demo_guest, "faults": faults, "nbd-over-ssh": nbd_over_ssh}
    if len(sys.argv) != 2 or sys.argv[1] not in scenarios:
        sys.exit(f"usage: flow_test.py {'|'.join(scenarios)}")
    # Short: the VMA's reader sockets live below it, and a Unix socket path has 108 bytes.
    work = tempfile.mkdtemp(prefix="mkf.", dir="/tmp")
    check = Check()
    try:
        scenarios[sys.argv[1]](work, check)
    except LabError as e:
        check.failures.append(str(e))
        say(f"   FAILED: {e}")
    finally:
        if check.failures:
            for name in sorted(os.listdir(work)):
                if name.endswith(".log"):
                    with open(os.path.join(work, name), errors="replace") as f:
                        say(f"--- {name} (last 30 lines) ---\n" + "".join(f.readlines()[-30:]))
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if check.failures else 0)


if __name__ == "__main__":
    main()
