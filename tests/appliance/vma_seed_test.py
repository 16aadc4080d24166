#!/usr/bin/env python3
"""The VMA appliance pairs itself at its first boot from a bundle given with the VM (label appliance).

What vSphere does when an operator deploys the OVA and fills in its vApp options, under
qemu (TCG): the OVF environment (ovf-env.xml, properties as vSphere writes them,
oe:key before oe:value) on the ISO transport's CD-ROM, read by the image's own
firstboot/vma-seed, which runs migratekit-vma-pair (`vma pair` as the vma user).
`--seed nocloud` gives the bundle as a cloud-init NoCloud seed instead (a CD-ROM
labelled cidata whose user-data is the bundle; the vCenter, which NoCloud does not
carry, set in vma.conf before the first boot as an operator customises a template).
The OMA is this build's `oma` on the host: HTTPS on a loopback port chosen at run time
(its own self-signed certificate, which the bundle pins), a temporary data directory
and SQLite, advertised as 10.0.2.2, where qemu's user-mode network reaches the host's
loopback. Pairing needs the OMA's API only (the tunnel's sshd comes with approval).
Checked:
  * the console's first-boot announcement (seed.status) says where the bundle came from
    and that the VMA paired, and what is left (vma.conf's vCenter password);
  * the OMA lists one pending VMA: the appliance's name, the vCenter from the seed, and
    the SSH key the appliance made (read back from its disk);
  * vma.conf holds the vCenter as the SDK URL `vma run` needs and its user; the VMA's
    state holds pairing.json with the OMA's id for it; no copy of the bundle is left on
    the disk;
  * no secret of the bundle (pairing code, VMA API token, NBD key, the base64 property)
    shows on the serial console.
qemu and the OMA are stopped by PID.

  vma_seed_test.py --image VMA.qcow2 --work-dir DIR --bin-dir BUILD/bin [--seed ovf|nocloud]
                   [--qemu qemu-system-x86_64] [--timeout S]
"""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time

from appliance_vm import BootedVm, arguments, fail, free_port, guest_append, guest_files, request, served_fingerprint

# What the guest's user-mode network calls the host (qemu's slirp gateway: its
# connections come out of the host's loopback).
HOST_FROM_GUEST = "10.0.2.2"
VCENTER = "vc.example.org"
VCENTER_USER = "svc-migratekit@vsphere.local"


def start_oma(bin_dir, work):
    """This build's OMA: API over HTTPS on a loopback port, advertised as the guest's
    10.0.2.2. Returns (Popen, API port, admin token)."""
    key = os.path.join(work, "ssh_host_ed25519_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    data = os.path.join(work, "oma")
    api_port = free_port()
    log_path = os.path.join(work, "oma.log")
    with open(log_path, "wb") as log:
        oma = subprocess.Popen([os.path.join(bin_dir, "oma"), "--data-dir", data, "--api-listen", "127.0.0.1",
                                "--api-port", str(api_port), "--https", "on", "--gui-port", "-1",
                                "--nbd-listen", "127.0.0.1", "--nbd-port", str(free_port()),
                                "--nbd-advertise-host", HOST_FROM_GUEST, "--tunnel-port-base", str(free_port()),
                                "--ssh-host-key-file", key + ".pub"],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(data, "api.port")):
        if oma.poll() is not None or time.monotonic() > deadline:
            with open(log_path, errors="replace") as f:
                sys.exit(f"FAIL: the OMA did not start (exit {oma.poll()}):\n{f.read()[-3000:]}")
        time.sleep(0.2)
    with open(os.path.join(data, "admin.token")) as f:
        token = f.read().strip()
    return oma, api_port, token


def api(port, token, method, path):
    status, body = request(port, method, path, token, {} if method == "POST" else None)
    if status not in (200, 201):
        sys.exit(f"FAIL: OMA {method} {path}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)


def ovf_environment(properties):
    """ovf-env.xml as vSphere's ISO transport writes it."""
    props = "".join(f'\n         <Property oe:key="{k}" oe:value="{v}"/>' for k, v in properties.items())
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Environment\n     xmlns="http://schemas.dmtf.org/ovf/environment/1"\n'
            '     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"\n'
            '     xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"\n'
            '     xmlns:ve="http://www.vmware.com/schema/ovfenv"\n'
            '     oe:id=""\n     ve:vCenterId="vm-1042">\n'
            '   <PlatformSection>\n      <Kind>VMware ESXi</Kind>\n      <Version>8.0.2</Version>\n'
            '      <Vendor>VMware, Inc.</Vendor>\n      <Locale>en</Locale>\n   </PlatformSection>\n'
            f'   <PropertySection>{props}\n   </PropertySection>\n'
            '   <ve:EthernetAdapterSection>\n'
            '      <ve:Adapter ve:mac="00:50:56:aa:bb:cc" ve:network="VM Network" ve:unitNumber="7"/>\n'
            '   </ve:EthernetAdapterSection>\n</Environment>\n')


def make_iso(work, label, files):
    """An ISO 9660 image (Rock Ridge, Joliet) labelled `label` holding `files` {name: text}."""
    tree = os.path.join(work, "iso-tree")
    os.makedirs(tree)
    for name, text in files.items():
        with open(os.path.join(tree, name), "w") as f:
            f.write(text)
    iso = os.path.join(work, "seed.iso")
    out = subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-J", "-r", "-V", label, "-o", iso, tree],
                         capture_output=True, text=True)
    shutil.rmtree(tree)  # it holds the bundle
    if out.returncode != 0:
        sys.exit(f"FAIL: xorriso could not make the seed ISO (scripts/install-deps appliance): {out.stderr[-1000:]}")
    return iso


def main():
    ap = arguments(__doc__, "seconds for the first boot's announcement")
    ap.add_argument("--bin-dir", required=True, help="this build's bin directory (oma)")
    ap.add_argument("--seed", choices=("ovf", "nocloud"), default="ovf")
    a = ap.parse_args()

    if os.path.isdir(a.work_dir):
        shutil.rmtree(a.work_dir)
    host_dir = os.path.join(a.work_dir, "host")
    os.makedirs(host_dir)
    oma = None
    try:
        oma, port, token = start_oma(a.bin_dir, host_dir)
        bundle = api(port, token, "POST", "/api/v1/vmas/pairing-bundles")
        want_url = f"https://{HOST_FROM_GUEST}:{port}"
        if bundle.get("oma_api_url") != want_url or bundle.get("oma_api_fingerprint") != served_fingerprint(port):
            sys.exit(f"FAIL: the bundle names {bundle.get('oma_api_url')} (expected {want_url}) or pins another "
                     "certificate than the OMA serves")
        encoded = base64.b64encode(json.dumps(bundle).encode()).decode()
        secrets = {"the pairing code": bundle["pairing_code"], "the VMA API token": bundle["vma_api_token"],
                   "the NBD key": bundle.get("nbd_psk_key"), "the base64 bundle": encoded[:64]}
        if a.seed == "ovf":
            iso = make_iso(a.work_dir, "OVF ENV", {"ovf-env.xml": ovf_environment({
                "migratekit.pairing-bundle": encoded, "migratekit.vcenter": VCENTER,
                "migratekit.vcenter-user": VCENTER_USER})})
            source = r"OVF properties \(ovf-env\.xml\) on /dev/sr\d"
        else:
            iso = make_iso(a.work_dir, "cidata", {"user-data": json.dumps(bundle),
                                                  "meta-data": "instance-id: mk-vma-seed-test\n"})
            source = r"cloud-init user-data on /dev/\S+"

        def customise(overlay):
            # NoCloud carries no vCenter: an operator sets it in the template.
            guest_append(overlay, "/etc/migratekit/vma.conf",
                         f'\nvcenter = "https://{VCENTER}/sdk"\nvcenter-user = "{VCENTER_USER}"\n')

        cdrom = ["-drive", f"file={iso},if=ide,index=2,media=cdrom,readonly=on,format=raw"]
        with BootedVm(a.qemu, a.image, os.path.join(a.work_dir, "vma"), 1024, extra_args=cdrom,
                      before_boot=customise if a.seed == "nocloud" else None) as vm:
            started = time.monotonic()
            text = vm.wait_for("MK-APPLIANCE-READY vma", a.timeout, "first-boot announcement")
            print(f"VMA booted and announced its pairing after {time.monotonic() - started:.0f} s under TCG",
                  flush=True)
            text = vm.wait_for("migratekit-vma login:", 300, "login prompt")
            vm.power_off(300)
            text = vm.text()
            for what, value in secrets.items():
                if value and value in text:
                    fail(f"{what} from the bundle shows on the serial console", vm.console)
            if not re.search(r"pairing bundle from " + source, text):
                fail(f"the announcement does not say that the bundle came from {source}", vm.console)
            if "paired: the OMA's operator approves this VMA" not in text:
                fail("the announcement does not say that the VMA paired", vm.console)
            if "complete /etc/migratekit/vma.conf" not in text:
                fail("the announcement does not say what is left (vma.conf's vCenter password)", vm.console)
            if "detach the seed disk or clear the VM's migratekit.pairing-bundle property" not in text:
                fail("the announcement does not warn that the seed keeps the VMA's keys", vm.console)
            if "FAILED" in text:
                fail("a unit failed during the first boot", vm.console)

            vmas = api(port, token, "GET", "/api/v1/vmas")["vmas"]
            if len(vmas) != 1 or vmas[0]["state"] != "pending" or vmas[0]["name"] != "migratekit-vma" \
                    or vmas[0]["vcenter"] != VCENTER:
                fail(f"expected the OMA to list one pending VMA migratekit-vma for {VCENTER}: {vmas}", vm.console)

            state = "/var/lib/migratekit/vma"
            files, dirs = guest_files(vm.overlay, ["/etc/migratekit/vma.conf", f"{state}/pairing.json",
                                                   f"{state}/id_ed25519.pub"],
                                      [state, "/var/lib/migratekit/appliance"])
            conf = files["/etc/migratekit/vma.conf"] or ""
            for line in (f'vcenter = "https://{VCENTER}/sdk"', f'vcenter-user = "{VCENTER_USER}"'):
                if not re.search("^" + re.escape(line) + "$", conf, re.M):
                    fail(f"vma.conf lacks {line!r}:\n{conf}", vm.console)
            paired = json.loads(files[f"{state}/pairing.json"] or "{}")
            if paired.get("vma_id") != vmas[0]["vma_id"] or paired.get("oma_api_url") != want_url:
                fail(f"the appliance's pairing.json ({paired}) does not name the OMA's VMA {vmas[0]['vma_id']} at "
                     f"{want_url}", vm.console)
            if (files[f"{state}/id_ed25519.pub"] or "").split()[:2] != vmas[0]["ssh_public_key"].split()[:2]:
                fail("the OMA holds another SSH key for the VMA than the appliance made", vm.console)
            left = [f"{d}/{n}" for d, names in dirs.items() for n in names or []
                    if "bundle" in n or n.startswith("seed.") and n != "seed.status"]
            if left:
                fail(f"copies of the bundle are left on the appliance's disk: {left}", vm.console)
    finally:
        if oma is not None:
            oma.terminate()
            oma.wait(timeout=60)
    shutil.rmtree(a.work_dir)
    print(f"appliance VMA: paired itself at its first boot from a {a.seed} seed with the OMA at {want_url}; "
          f"vma.conf completed, no secret on the console")


if __name__ == "__main__":
    main()
