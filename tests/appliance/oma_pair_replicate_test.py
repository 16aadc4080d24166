#!/usr/bin/env python3
"""A VMA pairs with the booted OMA appliance and replicates a lab VM into it (label appliance).

Boots a throwaway qcow2 overlay of the built OMA image (tests/appliance/image.sh) under
qemu (TCG) with user-mode networking that forwards free ports on 127.0.0.1 to the OMA's
API (8082), its sshd (22, the VMAs' control tunnel) and its NBD port. The VMA is this
build's `vma` on the host (two TCG guests do not fit in CI's time) against the vSphere lab
(mk-lab: vcsim with its CBT shim; `vma-lab run` reads the lab's flat disks), driven
through scripts/migration_lab.py as the migration tests drive a local OMA:
  * before the first boot the overlay gets the settings an operator gives an OMA that
    VMAs reach through NAT or port forwards (docs/install.md, "Settings before the first
    boot"): nbd-advertise-host 127.0.0.1, public-api-url and ssh-port the forwarded ones,
    nbd-advertise-port the forwarded NBD port (forwarded to the OMA's own 10809: the port
    changes on the way, as through NAT);
  * the admin token and the certificate fingerprint come from the console's first-boot
    announcement, which names the public-api-url; the API must serve that certificate;
  * a pairing bundle made through the API, `vma pair` with it, approval through the API,
    and the VMA's tunnel up as the OMA sees it; the bundle must name the forwarded ports;
  * a full pass and, after the guest's writes, an incremental pass of one lab VM, each
    checked disk by disk: the replica read back through the OMA's NBD export on the
    forwarded port (nbdcopy, TLS with the VMA's own PSK) has the source's sha256;
  * the timings (boot to healthy, pairing, each pass) are printed.
qemu and every lab process are stopped by PID. No secret is printed.

  oma_pair_replicate_test.py --image OMA.qcow2 --work-dir DIR --bin-dir BUILD/bin
                             [--disk-mib 64,32] [--qemu qemu-system-x86_64] [--timeout S]
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from appliance_vm import (BootedVm, arguments, fail, free_port, guest_append, insecure_context, oma_announcement,
                          served_fingerprint, wait_healthy)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
from migration_lab import LabError, MigrationLab, OmaApi  # noqa: E402


def distinct_free_ports(n):
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def main():
    ap = arguments(__doc__, "seconds for the boot to reach a healthy API")
    ap.add_argument("--bin-dir", required=True, help="this build's bin directory (vma, vma-lab, mk-lab)")
    ap.add_argument("--disk-mib", default="64,32", help="the lab VM's disks (MiB, comma-separated)")
    a = ap.parse_args()

    if os.path.isdir(a.work_dir):
        shutil.rmtree(a.work_dir)
    os.makedirs(a.work_dir)
    api_port, ssh_port, nbd_port = distinct_free_ports(3)
    # What VMAs that reach this OMA through forwards need it to advertise: bundles and
    # jobs then name 127.0.0.1 and the forwarded ports. The NBD server listens on its
    # default port, 10809, which the forward reaches from another port.
    settings = (f"\n# Set before the first boot (oma_pair_replicate_test.py): VMAs reach this OMA through\n"
                f"# qemu's user-mode forwards on the host's 127.0.0.1.\n"
                f'nbd-advertise-host = "127.0.0.1"\npublic-api-url = "https://127.0.0.1:{api_port}"\n'
                f"ssh-port = {ssh_port}\nnbd-advertise-port = {nbd_port}\n")
    nic = (f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{api_port}-:8082,"
           f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{nbd_port}-:10809")

    lab = None

    def replica_sha256(vm_id, disk, volume):
        # The replica as the OMA serves it: its NBD export, over the forwarded port, with
        # the TLS key this VMA was given at pairing (the OMA serves a VMA only its VMs).
        identity, psk_file = lab.nbd_psk()
        uri = (f"nbds://{identity}@127.0.0.1:{nbd_port}/{lab.export_name(vm_id, disk['unit'])}"
               f"?tls-psk-file={psk_file}")
        h = hashlib.sha256()
        with subprocess.Popen(["nbdcopy", "--", uri, "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
            while chunk := p.stdout.read(1 << 20):
                h.update(chunk)
            err = p.stderr.read().decode(errors="replace")
        if p.returncode != 0:
            raise LabError(f"nbdcopy could not read export {lab.export_name(vm_id, disk['unit'])} back from "
                           f"127.0.0.1:{nbd_port}: {err.strip()[-500:]}")
        return h.hexdigest()

    # The lab (the VMA's state and work directories, where its disk readers' Unix sockets
    # live) in a short temporary directory: a socket path must fit in 108 bytes. Kept
    # when the test fails, for its logs.
    lab_dir = tempfile.mkdtemp(prefix="mk-oma-pair-")
    print(f"lab and VMA: {lab_dir}", flush=True)
    lab = MigrationLab(lab_dir, vms=1, disk_mib=a.disk_mib, bin_dir=a.bin_dir, target_sha256=replica_sha256)
    vm_dir = os.path.join(a.work_dir, "oma")
    started = None
    try:
        def give_settings(overlay):
            t = time.monotonic()
            guest_append(overlay, "/etc/migratekit/oma.conf", settings)
            print(f"settings written into the overlay (libguestfs, TCG): {time.monotonic() - t:.0f} s", flush=True)

        # Settings go into the overlay first; the clock starts with qemu.
        with BootedVm(a.qemu, a.image, vm_dir, 1536, nic, before_boot=give_settings) as vm:
            started = time.monotonic()
            lab.start_lab(sshd=False)  # while the guest boots
            healthy = wait_healthy(vm, api_port, started, a.timeout)
            print(f"boot to healthy API under TCG: {healthy:.0f} s", flush=True)
            text, token, fingerprint = oma_announcement(vm)
            if f"API:                    https://127.0.0.1:{api_port}/api/v1" not in text:
                fail("the first-boot announcement does not name the API URL given as public-api-url", vm.console)
            if served_fingerprint(api_port) != fingerprint:
                fail("the API serves another certificate than the one whose fingerprint was announced", vm.console)
            lab.use_oma(OmaApi(f"https://127.0.0.1:{api_port}", token, context=insecure_context()))

            try:
                t = time.monotonic()
                lab.pair_vma()  # bundle through the API, `vma pair`, approval through the API
                with open(os.path.join(lab.vma_dir, "pairing.json")) as f:
                    paired = json.load(f)
                want = {"oma_api_url": f"https://127.0.0.1:{api_port}", "oma_api_fingerprint": fingerprint,
                        "ssh_host": "127.0.0.1", "ssh_port": ssh_port, "nbd_host": "127.0.0.1",
                        "nbd_port": nbd_port}
                for field, value in want.items():
                    if paired.get(field) != value:
                        fail(f"the VMA paired with {field} {paired.get(field)!r}, expected {value!r} (the "
                             "bundle does not carry the settings given before the first boot)", vm.console)
                lab.start_vma()  # returns once the OMA sees the VMA's tunnel up
                print(f"pairing (bundle, vma pair, approval, tunnel up): {time.monotonic() - t:.1f} s", flush=True)

                vm_ids = lab.add_vms()
                name = lab.vms[vm_ids[0]]["name"]
                for kind in ("full", "incremental"):
                    if kind == "incremental":
                        writes = lab.guest_writes(blocks_per_disk=40)
                        print(f"the guest wrote {writes} blocks of 64 KiB", flush=True)
                    t = time.monotonic()
                    lab.replicate(kind)
                    moved = sum(p["bytes_moved"] for p in lab.passes if p["type"] == kind)
                    print(f"{kind} pass of {name} ({a.disk_mib} MiB): {time.monotonic() - t:.1f} s, "
                          f"{moved / (1 << 20):.1f} MiB moved", flush=True)
                    if lab.failures:
                        fail("; ".join(lab.failures), vm.console)
            except LabError as e:
                fail(str(e), vm.console)
    finally:
        lab.stop()
    full = sum(p["bytes_moved"] for p in lab.passes if p["type"] == "full")
    incremental = sum(p["bytes_moved"] for p in lab.passes if p["type"] == "incremental")
    if not 0 < incremental < full:
        fail(f"the incremental pass moved {incremental} bytes, the full one {full}: expected only the changes",
             os.path.join(vm_dir, "console.log"))
    shutil.rmtree(lab_dir)
    print("appliance OMA: a host VMA paired through the forwarded ports; full and incremental passes of a lab VM "
          "read back through the OMA's NBD export equal their source by sha256")


if __name__ == "__main__":
    main()
