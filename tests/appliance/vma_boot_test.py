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
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET

from oma_boot_test import console_text, fail  # noqa: E402 (same directory)

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
    print(f"OVA: {names} (descriptor first, digests match, streamOptimized)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--ova", required=True)
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--timeout", type=int, default=1500, help="seconds for the first boot's announcement")
    a = ap.parse_args()

    if os.path.isdir(a.work_dir):
        shutil.rmtree(a.work_dir)
    os.makedirs(a.work_dir)
    check_ova(a.ova, a.work_dir)

    overlay = os.path.join(a.work_dir, "run.qcow2")
    serial = os.path.join(a.work_dir, "console.log")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", os.path.abspath(a.image),
                    overlay], check=True)
    cmd = [a.qemu, "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1", "-nodefaults",
           "-display", "none", "-monitor", "none", "-no-reboot", "-serial", f"file:{serial}", "-vga", "std",
           "-drive", f"file={overlay},if=virtio,format=qcow2", "-nic", "user,model=virtio-net-pci"]
    started = time.monotonic()
    qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=open(os.path.join(a.work_dir, "qemu.log"), "wb"),
                            stderr=subprocess.STDOUT)
    try:
        while "MK-APPLIANCE-READY vma" not in console_text(serial):
            if qemu.poll() is not None:
                fail(f"qemu exited with status {qemu.returncode} before the announcement", serial)
            if time.monotonic() - started > a.timeout:
                fail(f"no first-boot announcement within {a.timeout} s", serial)
            time.sleep(3)
        print(f"VMA announced after {time.monotonic() - started:.0f} s under TCG")
        # The login prompt follows the announcement (multi-user.target reached).
        deadline = time.monotonic() + 300
        while "migratekit-vma login:" not in console_text(serial) and time.monotonic() < deadline:
            time.sleep(2)
        text = console_text(serial)
        if "migratekit-vma login:" not in text:
            fail("no login prompt on the serial console", serial)
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
    finally:
        qemu.terminate()
        try:
            qemu.wait(timeout=30)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()
        os.unlink(overlay)


if __name__ == "__main__":
    main()
