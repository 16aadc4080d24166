#!/usr/bin/env python3
"""package.vma_seed: the VMA appliance's first-boot pick-up of a pairing bundle given with
the VM (packaging/appliance/vma-seed), on seed directories as a NoCloud disk or the OVF
ISO transport's CD-ROM would show them. A real OMA (this build's `oma` on loopback)
issues the bundles and this build's `vma pair` enrols with them (in place of
migratekit-vma-pair, which needs the appliance's vma user and systemd):
  * NoCloud user-data holding the bundle: paired, the OMA lists the VMA, the status says
    so and warns that the seed keeps the VMA's keys;
  * OVF properties: the bundle (base64), the vCenter and its user written to vma.conf;
  * a vCenter value that could break vma.conf: refused, the bundle kept (0600) for the
    console, not paired;
  * user-data that is no bundle, a property that is no base64 bundle: ignored, not paired;
  * no seed: nothing happens, no status.

  vma_seed_test.py --source-dir SRC --bin-dir BUILD/bin
"""
import argparse
import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request

failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--bin-dir", required=True)
    a = ap.parse_args()
    seed = os.path.join(a.source_dir, "packaging", "appliance", "vma-seed")
    tmp = tempfile.mkdtemp(prefix="mk-vma-seed-")
    oma = None
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(tmp, "host_key")], check=True)
        data = os.path.join(tmp, "oma")
        with open(os.path.join(tmp, "oma.log"), "w") as log:
            oma = subprocess.Popen([os.path.join(a.bin_dir, "oma"), "--data-dir", data, "--api-listen", "127.0.0.1",
                                    "--api-port", "0", "--gui-port", "-1", "--nbd-listen", "127.0.0.1", "--nbd-port",
                                    "0", "--ssh-host-key-file", os.path.join(tmp, "host_key.pub")],
                                   stdout=log, stderr=subprocess.STDOUT)
        for _ in range(300):
            if os.path.exists(os.path.join(data, "api.port")) or oma.poll() is not None:
                break
            time.sleep(0.1)
        with open(os.path.join(data, "api.port")) as f:
            port = int(f.read())
        with open(os.path.join(data, "admin.token")) as f:
            token = f.read().strip()

        def api(method, path):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=b"{}" if method == "POST" else None,
                                         headers={"Authorization": "Bearer " + token,
                                                  "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())

        def vmas():
            return [v["name"] for v in api("GET", "/api/v1/vmas")["vmas"]]

        # migratekit-vma-pair's part, without the appliance's vma user and systemd: this
        # build's `vma pair` with the bundle vma-seed hands over, the vCenter from vma.conf.
        pair = os.path.join(tmp, "pair")
        with open(pair, "w") as f:
            f.write(f"""#!/bin/sh
set -eu
[ "$1" = --no-block ] && shift
vcenter=$(sed -n 's/^vcenter *= *"\\(.*\\)"/\\1/p' "$MK_VMA_CONF" | tail -n1 | sed 's|^https://||; s|/.*||')
exec {os.path.join(a.bin_dir, "vma")} pair --bundle "$1" --state-dir "$MK_APPLIANCE_STATE/vma" --name "$MK_TEST_NAME" \\
  --vcenter "$vcenter"
""")
        os.chmod(pair, 0o755)

        def run_seed(name, files, conf=""):
            case = os.path.join(tmp, name)
            os.makedirs(os.path.join(case, "seed"))
            for fname, content in files.items():
                with open(os.path.join(case, "seed", fname), "w") as f:
                    f.write(content)
            with open(os.path.join(case, "vma.conf"), "w") as f:
                f.write(conf)
            env = dict(os.environ, MK_VMA_CONF=os.path.join(case, "vma.conf"),
                       MK_APPLIANCE_STATE=os.path.join(case, "state"), MK_VMA_PAIR=pair, MK_TEST_NAME=name)
            r = subprocess.run([seed, "--seed-dir", os.path.join(case, "seed")], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            status_file = os.path.join(case, "state", "seed.status")
            status = open(status_file).read() if os.path.exists(status_file) else None
            with open(os.path.join(case, "vma.conf")) as f:
                conf_after = f.read()
            return r, status, conf_after, os.path.join(case, "state")

        def ovf_env(props):
            body = "".join(f'\n      <Property oe:key="{k}" oe:value="{v}"/>' for k, v in props.items())
            return ('<?xml version="1.0" encoding="UTF-8"?>\n<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"'
                    ' xmlns:oe="http://schemas.dmtf.org/ovf/environment/1" oe:id="migratekit-vma">\n'
                    f'   <PropertySection>{body}\n   </PropertySection>\n</Environment>\n')

        # NoCloud: user-data is the bundle as the OMA gives it.
        bundle = api("POST", "/api/v1/vmas/pairing-bundles")
        r, status, _, _ = run_seed("nocloud", {"user-data": json.dumps(bundle)}, 'vcenter = "vc.example"\n')
        check(r.returncode == 0, "nocloud: vma-seed exits 0: " + r.stdout[-800:])
        check("nocloud" in vmas(), f"nocloud: the OMA lists the VMA paired from user-data: {vmas()}")
        check(status is not None and "pairing bundle from cloud-init user-data" in status and "paired:" in status,
              f"nocloud: the status says where the bundle came from and that it paired: {status!r}")
        check(status is not None and "stays readable where it was given" in status,
              "nocloud: the status warns that the seed keeps the VMA's keys")

        # OVF properties: the bundle in base64, the vCenter and its user for vma.conf.
        bundle = api("POST", "/api/v1/vmas/pairing-bundles")
        encoded = base64.b64encode(json.dumps(bundle).encode()).decode()
        r, status, conf, _ = run_seed("ovf", {"ovf-env.xml": ovf_env({
            "migratekit.vcenter": "vc.example.org", "migratekit.vcenter-user": "svc-mk@vsphere.local",
            "migratekit.pairing-bundle": encoded})})
        check(r.returncode == 0, "ovf: vma-seed exits 0: " + r.stdout[-800:])
        check('vcenter = "https://vc.example.org/sdk"' in conf and 'vcenter-user = "svc-mk@vsphere.local"' in conf,
              f"ovf: vCenter (as the SDK URL `vma run` takes) and user written to vma.conf: {conf!r}")
        check("ovf" in vmas(), f"ovf: the OMA lists the VMA paired from OVF properties: {vmas()}")
        check(status is not None and "OVF properties (ovf-env.xml)" in status, f"ovf: status names the source: {status!r}")

        # A vCenter value that would break vma.conf: refused; without a vCenter the bundle
        # waits (owner only) for the console.
        bundle = api("POST", "/api/v1/vmas/pairing-bundles")
        encoded = base64.b64encode(json.dumps(bundle).encode()).decode()
        r, status, conf, state = run_seed("hostile", {"ovf-env.xml": ovf_env({
            "migratekit.vcenter": 'vc&quot; vddk-libdir = &quot;/tmp', "migratekit.pairing-bundle": encoded})})
        check(r.returncode == 0, "hostile: vma-seed exits 0: " + r.stdout[-800:])
        check("vddk-libdir" not in conf and "vcenter" not in conf, f"hostile: vma.conf untouched: {conf!r}")
        check("hostile" not in vmas(), "hostile: not paired without a vCenter")
        kept = os.path.join(state, "pairing-bundle.json")
        check(os.path.exists(kept) and stat.S_IMODE(os.stat(kept).st_mode) == 0o600,
              "hostile: the bundle is kept for the console, owner only")
        check(status is not None and "vcenter from OVF properties (ovf-env.xml) refused" in status
              and "migratekit-vma-pair " + kept in status, f"hostile: the status says what to do: {status!r}")

        # Not a bundle: ignored.
        r, status, _, _ = run_seed("cloudconfig", {"user-data": "#cloud-config\nhostname: x\n"}, 'vcenter = "vc"\n')
        check(r.returncode == 0 and "cloudconfig" not in vmas() and status is not None and "not a pairing bundle" in status,
              f"cloudconfig: user-data that is no bundle is ignored: {status!r}")
        r, status, _, _ = run_seed("badbase64", {"ovf-env.xml": ovf_env({"migratekit.pairing-bundle": "%%%not-base64"})},
                                   'vcenter = "vc"\n')
        check(r.returncode == 0 and status is not None and "is not a base64-encoded pairing bundle" in status,
              f"badbase64: a property that is no base64 bundle is ignored: {status!r}")

        # No seed at all.
        r, status, _, _ = run_seed("none", {}, 'vcenter = "vc"\n')
        check(r.returncode == 0 and status is None and "pair on the console" in r.stdout,
              f"none: nothing happens without a seed: {r.stdout.strip()!r}, status {status!r}")
    finally:
        if oma is not None:
            oma.terminate()
            oma.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} check(s) failed", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
