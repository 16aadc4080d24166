#!/usr/bin/env python3
"""The VMA appliance: its OVA's layout and its first boot under qemu (TCG) (label appliance).

  * the OVA is a tar whose first member is the OVF descriptor (well-formed XML naming
    the disk file), then the manifest, whose SHA-256 digests match, and a
    streamOptimized VMDK;
  * booted (a throwaway overlay of the qcow2, no network needed), the console shows the
    first-boot announcement: unpaired, how to pair, a one-time root password; and the
    announcement comes once the system is up, without the VMA service (it stays
    disabled until paired: its unit never starts, so "Started ... (VMA)" must not show).
qemu is stopped by its PID.

  vma_boot_test.py --image VMA.qcow2 --ova VMA.ova --work-dir DIR [--timeout S]
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET

from appliance_vm import BootedVm, arguments, fail

OVF_NS = "{http://schemas.dmtf.org/ovf/envelope/1}"


def check_ova(path, work_dir):
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        if not names or not names[0].endswith(".ovf"):
            sys.exit(f"FAIL: {path}: the first member is {names[:1]}, expected the .ovf descriptor")
        root = ET.fromstring(tar.extractfile(members[0]).read())
        files = [f.get(OVF_NS + "href") for f in root.iter(OVF_NS + "File")]
        if len(files) != 1 or files[0] not in names:
            sys.exit(f"FAIL: {path}: the descriptor names {files}, the archive holds {names}")
        # The first boot's pairing as vApp options, with a transport that gives them to the
        # guest (what vma-seed reads).
        keys = {p.get(OVF_NS + "key") for p in root.iter(OVF_NS + "Property")}
        wanted = {"migratekit.pairing-bundle", "migratekit.vcenter", "migratekit.vcenter-user"}
        if not wanted <= keys:
            sys.exit(f"FAIL: {path}: the descriptor's vApp properties are {sorted(keys)}, expected {sorted(wanted)}")
        hardware = next(root.iter(OVF_NS + "VirtualHardwareSection"))
        if "iso" not in (hardware.get(OVF_NS + "transport") or "").split():
            sys.exit(f"FAIL: {path}: no OVF environment transport (ovf:transport) for the vApp properties")
        manifest = [m for m in names if m.endswith(".mf")]
        if len(manifest) != 1:
            sys.exit(f"FAIL: {path}: expected one manifest, found {manifest}")
        digests = dict(re.findall(r"SHA256\((.+)\)= ([0-9a-f]{64})", tar.extractfile(manifest[0]).read().decode()))
        for name in (names[0], files[0]):
            got = hashlib.sha256()
            f = tar.extractfile(name)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                got.update(chunk)
            if digests.get(name) != got.hexdigest():
                sys.exit(f"FAIL: {path}: the manifest's digest of {name} does not match")
        disk = os.path.join(work_dir, "disk.vmdk")
        with open(disk, "wb") as out:
            shutil.copyfileobj(tar.extractfile(files[0]), out)
    info = subprocess.run(["qemu-img", "info", disk], check=True, capture_output=True, text=True).stdout
    os.unlink(disk)
    if "streamOptimized" not in info:
        sys.exit(f"FAIL: {path}: the disk is not a streamOptimized VMDK:\n{info}")
    print(f"OVA: {names} (descriptor first, digests match, streamOptimized, vApp pairing options)")


def main():
    ap = arguments(__doc__, "seconds for the first boot's announcement")
    ap.add_argument("--ova", required=True)
    a = ap.parse_args()

    os.makedirs(a.work_dir, exist_ok=True)
    check_ova(a.ova, a.work_dir)
    started = time.monotonic()
    with BootedVm(a.qemu, a.image, a.work_dir, 1024) as vm:
        serial = vm.console
        vm.wait_for("MK-APPLIANCE-READY vma", a.timeout, "first-boot announcement")
        print(f"VMA announced after {time.monotonic() - started:.0f} s under TCG")
        # The login prompt follows the announcement (multi-user.target reached).
        text = vm.wait_for("migratekit-vma login:", 300, "login prompt")
        for needed in ("This VMA is not paired yet", "migratekit-vma-pair BUNDLE-FILE"):
            if needed not in text:
                fail(f"the announcement lacks {needed!r}", serial)
        if not re.search(r"MK-ROOT-PASSWORD: \S{16}\r?\n", text):
            fail("the announcement lacks the one-time root password", serial)
        if re.search(r"Started .*migratekit-vma\.service|Started .*\(VMA\)", text):
            fail("the VMA service started before it was paired", serial)
        if "FAILED" in text:
            fail("a unit failed during the first boot", serial)
        print("appliance VMA: unpaired first boot announced, service not started")


if __name__ == "__main__":
    main()
