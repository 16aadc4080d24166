#!/usr/bin/env python3
"""package.install_tree: installs this build into a temporary prefix (`cmake --install
--prefix`) and checks what an operator gets: the commands, man pages, docs, the GUI (when
built), configuration files, the systemd units (systemd-analyze verify; security
exposure at most 3.0 each) and the sshd drop-in (sshd -T: the tunnel user's settings,
and nobody else's)."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

MAX_EXPOSURE = 3.0
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def run(argv, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mk-install-") as tmp:
        prefix = os.path.join(tmp, "usr")
        r = run(["cmake", "--install", args.build_dir, "--prefix", prefix])
        check(r.returncode == 0, "cmake --install --prefix " + prefix + "\n" + r.stdout[-2000:])
        expected = ["bin/migratekit", "bin/oma", "bin/vma", "lib/migratekit/migratekit-nbd-router",
                    "share/doc/migratekit/README.md", "share/doc/migratekit/security.md",
                    "etc/migratekit/oma.conf", "etc/migratekit/vma.conf",
                    "etc/ssh/sshd_config.d/migratekit-oma.conf",
                    "lib/systemd/system/migratekit-oma.service", "lib/systemd/system/migratekit-vma.service",
                    "lib/migratekit/nbdkit-written-filter.so"]
        expected += ["share/man/man1/%s.1" % m for m in ("migratekit", "oma", "vma", "vma-run", "vma-pair")]
        if os.path.exists(os.path.join(args.build_dir, "web/dist/index.html")):
            expected.append("share/migratekit/web/index.html")
        for f in expected:
            check(os.path.isfile(os.path.join(prefix, f)), "installed " + f)
        for b in ("migratekit", "oma", "vma"):
            check(os.access(os.path.join(prefix, "bin", b), os.X_OK), "bin/%s is executable" % b)
        # The OMA's export-server filter and NBD router, where the installed oma looks for
        # them (BIN/../lib/migratekit); the filter loads into the installed nbdkit.
        check(sorted(os.listdir(os.path.join(prefix, "lib/migratekit"))) ==
              ["migratekit-nbd-router", "nbdkit-written-filter.so"],
              "lib/migratekit holds the written filter and the NBD router only")
        check(os.access(os.path.join(prefix, "lib/migratekit/migratekit-nbd-router"), os.X_OK),
              "lib/migratekit/migratekit-nbd-router is executable")
        r = run(["nbdkit", "--filter=" + os.path.join(prefix, "lib/migratekit/nbdkit-written-filter.so"), "null",
                 "--dump-plugin"])
        check(r.returncode == 0, "nbdkit loads the installed written filter: " + r.stdout[-500:])
        # Man pages come from the commands' own --help: every option is in them.
        man = open(os.path.join(prefix, "share/man/man1/oma.1")).read()
        for opt in ("data\\-dir", "check\\-config", "config"):
            check("\\-\\-" + opt in man, "oma.1 documents --" + opt.replace("\\", ""))
        check("\\-\\-max\\-vms" in open(os.path.join(prefix, "share/man/man1/vma-run.1")).read(),
              "vma-run.1 documents --max-vms")
        # The lab build of the VMA (vma-lab: --lab-flat-datastore) is never installed, and
        # the product's man page does not offer its lab path.
        check(sorted(os.listdir(os.path.join(prefix, "bin"))) == ["migratekit", "oma", "vma"],
              "bin/ holds migratekit, oma and vma only: " + " ".join(sorted(os.listdir(os.path.join(prefix, "bin")))))
        check("flat" not in open(os.path.join(prefix, "share/man/man1/vma-run.1")).read(),
              "vma-run.1 does not offer the lab path --lab-flat-datastore")
        # The installed configuration files are valid as shipped.
        r = run([os.path.join(prefix, "bin/oma"), "--check-config", "--config",
                 os.path.join(prefix, "etc/migratekit/oma.conf")])
        check(r.returncode == 0, "oma --check-config accepts the shipped oma.conf: " + r.stdout.strip())
        r = run([os.path.join(prefix, "bin/vma"), "run", "--check-config", "--config",
                 os.path.join(prefix, "etc/migratekit/vma.conf"), "--vcenter", "https://vc/sdk",
                 "--vcenter-user", "u", "--vcenter-password-file", "/p"])
        check(r.returncode == 0, "vma run --check-config accepts the shipped vma.conf: " + r.stdout.strip())
        for unit in ("migratekit-oma.service", "migratekit-vma.service"):
            path = os.path.join(prefix, "lib/systemd/system", unit)
            text = open(path).read()
            check("ExecStart=%s/bin/" % prefix in text, unit + " runs the installed binary")
            r = run(["systemd-analyze", "verify", "--man=no", path])
            check(r.returncode == 0 and not r.stdout.strip(), unit + ": systemd-analyze verify " + r.stdout.strip())
            r = run(["systemd-analyze", "security", "--offline=yes", path])
            m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
            score = float(m.group(1)) if m else 99
            print("exposure %s %.1f" % (unit, score))
            check(score <= MAX_EXPOSURE, "%s exposure %.1f <= %.1f" % (unit, score, MAX_EXPOSURE))
        check_sshd(os.path.join(prefix, "etc/ssh/sshd_config.d/migratekit-oma.conf"), tmp)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    return 0


def check_sshd(dropin, tmp):
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    key = os.path.join(tmp, "hostkey")
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
    cfg = os.path.join(tmp, "sshd_config")
    with open(cfg, "w") as f:  # the drop-in first, as Debian's sshd_config includes it
        f.write("HostKey %s\nInclude %s\nPasswordAuthentication yes\n" % (key, dropin))

    def effective(user):
        r = run([sshd, "-T", "-f", cfg, "-C", "user=%s,host=h,addr=127.0.0.1" % user])
        check(r.returncode == 0, "sshd -T for " + user + " " + r.stdout[-500:])
        return dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)

    t = effective("migratekit")
    check(t.get("authorizedkeyscommand") == "/usr/bin/cat /var/lib/migratekit/oma/vma_authorized_keys",
          "the tunnel user's keys are the OMA-managed file")
    check(t.get("authorizedkeyscommanduser") == "oma", "read as the oma user")
    for k, v in (("passwordauthentication", "no"), ("permittty", "no"), ("x11forwarding", "no"),
                 ("allowagentforwarding", "no"), ("permittunnel", "no"), ("forcecommand", "/bin/false"),
                 ("permitlisten", "127.0.0.1:*"), ("permitopen", "127.0.0.1:*")):
        check(t.get(k) == v, "tunnel user %s %s (got %s)" % (k, v, t.get(k)))
    o = effective("alice")
    check(o.get("authorizedkeyscommand") == "none" and o.get("passwordauthentication") == "yes"
          and o.get("permittty") == "yes", "other users keep the main sshd_config's settings")


if __name__ == "__main__":
    sys.exit(main())
