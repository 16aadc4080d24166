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
                    "lib/systemd/system/migratekit-oma-end-tunnel.socket",
                    "lib/systemd/system/migratekit-oma-end-tunnel@.service",
                    "lib/migratekit/nbdkit-written-filter.so", "libexec/migratekit/oma-end-tunnel-session"]
        expected += ["share/man/man1/%s.1" % m for m in ("migratekit", "oma", "vma", "vma-run", "vma-pair")]
        if os.path.exists(os.path.join(args.build_dir, "web/dist/index.html")):
            expected.append("share/migratekit/web/index.html")
        for f in expected:
            check(os.path.isfile(os.path.join(prefix, f)), "installed " + f)
        for b in ("bin/migratekit", "bin/oma", "bin/vma", "libexec/migratekit/oma-end-tunnel-session",
                  "lib/migratekit/migratekit-nbd-router"):
            check(os.access(os.path.join(prefix, b), os.X_OK), "%s is executable" % b)
        check(sorted(os.listdir(os.path.join(prefix, "libexec/migratekit"))) == ["oma-end-tunnel-session"],
              "libexec/migratekit holds the tunnel-session helper only")
        # The OMA's export-server filter and NBD router, where the installed oma looks for
        # them (BIN/../lib/migratekit); the filter loads into the installed nbdkit.
        check(sorted(os.listdir(os.path.join(prefix, "lib/migratekit"))) ==
              ["migratekit-nbd-router", "nbdkit-written-filter.so"],
              "lib/migratekit holds the written filter and the NBD router only")
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
        check_helper_units(prefix, tmp)
        check_sshd(os.path.join(prefix, "etc/ssh/sshd_config.d/migratekit-oma.conf"), tmp)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    return 0


def check_helper_units(prefix, tmp):
    """The tunnel-session helper's socket and service (docs/security.md, "Revocation"): the
    socket reaches root and oma only and starts one instance per connection; the instance
    runs the installed helper as root bounded to CAP_KILL and CAP_SYS_PTRACE; the OMA's
    unit pulls the socket in and oma.conf points the OMA at it."""
    units = os.path.join(prefix, "lib/systemd/system")
    socket = os.path.join(units, "migratekit-oma-end-tunnel.socket")
    template = os.path.join(units, "migratekit-oma-end-tunnel@.service")
    sock, svc = open(socket).read(), open(template).read()
    for line in ("ListenStream=/run/migratekit-oma-end-tunnel.sock", "SocketMode=0660", "SocketGroup=oma",
                 "Accept=yes"):
        check(line in sock.splitlines(), "the helper socket has " + line)
    for line in ("ExecStart=%s/libexec/migratekit/oma-end-tunnel-session --tunnel-user migratekit --client-user oma"
                 % prefix, "CapabilityBoundingSet=CAP_KILL CAP_SYS_PTRACE", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "StandardInput=socket", "StandardOutput=socket"):
        check(line in svc.splitlines(), "the helper service has " + line)
    check(not re.search(r"^(User|DynamicUser|AmbientCapabilities)=.+", svc, re.M), "the helper gains nothing else")
    oma = open(os.path.join(units, "migratekit-oma.service")).read()
    check("Wants=migratekit-oma-end-tunnel.socket" in oma.splitlines(), "migratekit-oma.service wants the socket")
    conf = open(os.path.join(prefix, "etc/migratekit/oma.conf")).read()
    check('tunnel-session-helper = "/run/migratekit-oma-end-tunnel.sock"' in conf.splitlines(),
          "oma.conf points the OMA at the helper's socket")
    # systemd-analyze verifies an instance, not a template: the socket starts instances
    # of the template, verified as one (its name is what systemd would give it).
    vdir = os.path.join(tmp, "units")
    os.makedirs(vdir, exist_ok=True)
    instance = os.path.join(vdir, "migratekit-oma-end-tunnel@0-1-1.service")
    shutil.copy(template, os.path.join(vdir, "migratekit-oma-end-tunnel@.service"))
    shutil.copy(template, instance)
    shutil.copy(socket, os.path.join(vdir, "migratekit-oma-end-tunnel.socket"))
    for path in (os.path.join(vdir, "migratekit-oma-end-tunnel.socket"), instance):
        r = run(["systemd-analyze", "verify", "--man=no", path])
        check(r.returncode == 0 and not r.stdout.strip(),
              os.path.basename(path) + ": systemd-analyze verify " + r.stdout.strip())
    r = run(["systemd-analyze", "security", "--offline=yes", instance])
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    score = float(m.group(1)) if m else 99
    print("exposure migratekit-oma-end-tunnel@.service %.1f" % score)
    check(score <= MAX_EXPOSURE, "migratekit-oma-end-tunnel@.service exposure %.1f <= %.1f" % (score, MAX_EXPOSURE))


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
