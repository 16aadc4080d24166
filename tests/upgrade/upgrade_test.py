#!/usr/bin/env python3
"""The packages of an older commit upgraded to this tree's while a migration goes on
(label upgrade; `make test-upgrade`; docs/install.md, "Upgrades").

In a clean Debian 12 root made by the test (tests/upgrade/base_root.sh: debootstrap,
cached), as an operator would:
  1. the previous release's packages (tests/upgrade/previous_packages.sh: built from an
     older commit of this repository) are installed with dpkg; their OMA is started as
     its unit starts it (user oma, /etc/migratekit/oma.conf, state in
     /var/lib/migratekit/oma), the root's /proc and /dev from the host, its network the
     host's loopback;
  2. the lab (mk-lab: vcsim, CBT shim, sshd) and the previous release's lab VMA
     (vma-lab) pair with it through its API and replicate one VM: a full pass, every
     disk compared by sha256 with its source; then the guest writes and an incremental
     pass begins, slowed by the VMA's read rate limit;
  3. in the middle of that pass the OMA is stopped and this tree's packages are
     installed over the old ones (`dpkg -i`: an upgrade, the version grows with every
     commit); the new OMA starts on the same state: the schema is migrated (the log
     names each migration, the database records them all), the full pass is still
     listed as completed; the pass begun before the upgrade completes after it when the
     OMA<->VMA protocol is the same in both trees, and otherwise ends failed with the
     protocol mismatch that tells the operator to upgrade the VMA;
  4. the VMA is upgraded to this tree's; the next incremental pass moves less than the
     disks (the committed change IDs were kept) and the replicas equal their sources;
  5. an OMA refuses a database newer than it knows: this tree's OMA against a database
     stamped one version ahead, and, when the schemas differ, the previous release
     installed again (a downgrade) against the migrated database; each exits with the
     message, and the database is left as it was;
  6. this tree's migratekit-oma removed (dpkg -r): its state stays; purged (dpkg -P): gone.
Each step's time is printed. Processes are stopped by PID; the root's mounts live in a
private mount namespace of this test (unshare), so they end with it. The work directory
(root, OMA log) is kept when the test fails.

  upgrade_test.py --source-dir SRC --build-dir BUILD --previous DIR --work-dir DIR --root-cache DIR
"""
import argparse
import glob
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
from migration_lab import LabError, MigrationLab, OmaApi, Process, free_port, tail, wait_for  # noqa: E402

STATE = "/var/lib/migratekit/oma"
timings = []


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def step(name, started):
    took = time.monotonic() - started
    timings.append((name, took))
    print(f"== {name}: {took:.1f} s", flush=True)


def run(argv, what, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        fail(f"{what}: exit {r.returncode}: {r.stdout[-3000:]}")
    return r.stdout


class Root:
    """The test's Debian root: a copy of the cached one, with /proc and /dev mounted."""

    def __init__(self, path):
        self.path = path

    def host(self, p):
        return os.path.join(self.path, p.lstrip("/"))

    def chroot(self, *argv):
        return ["chroot", self.path, *argv]

    def dpkg(self, what, *args):
        return run(self.chroot("env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive",
                               "dpkg", *args), what)

    def dpkg_install(self, debs, what):
        for d in debs:
            shutil.copy(d, self.host("/tmp"))
        out = self.dpkg(what, "-i", *["/tmp/" + os.path.basename(d) for d in debs])
        for d in debs:
            os.unlink(self.host("/tmp/" + os.path.basename(d)))
        return out

    def version(self, package):
        return run(self.chroot("dpkg-query", "-W", "-f", "${Version}", package), "dpkg-query " + package).strip()


def schema(db_path):
    """(highest version, rows) of schema_migrations, read while no OMA runs."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    finally:
        con.close()
    return (rows[-1][0] if rows else 0), rows


def protocol_version(tree):
    """The OMA<->VMA protocol version a source tree speaks (src/protocol/version.h)."""
    with open(os.path.join(tree, "src", "protocol", "version.h")) as f:
        m = re.search(r"constexpr int kVersion = (\d+);", f.read())
    if not m:
        fail(f"no kVersion in {tree}/src/protocol/version.h")
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--previous", required=True, help="previous_packages.sh's OUT_DIR/base (deb/, bin/)")
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--root-cache", required=True, help="where base_root.sh keeps the clean root")
    ap.add_argument("--disk-mib", default="64,32")
    ap.add_argument("--read-rate", default="1M",
                    help="the previous VMA's read rate limit per disk in the pass the upgrade interrupts")
    a = ap.parse_args()
    if os.geteuid() != 0:
        fail("needs root (debootstrap, chroot, mounts)")
    # The root's mounts belong to a mount namespace of our own: they end with the test,
    # however it ends.
    if os.environ.get("MK_UPGRADE_NAMESPACE") != "1":
        os.environ["MK_UPGRADE_NAMESPACE"] = "1"
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable, *sys.argv])

    t_all = time.monotonic()
    old_protocol = protocol_version(os.path.join(os.path.realpath(a.previous), "src"))
    new_protocol = protocol_version(a.source_dir)
    print(f"OMA<->VMA protocol: previous release {old_protocol}, this tree {new_protocol}", flush=True)
    src, build = os.path.abspath(a.source_dir), os.path.abspath(a.build_dir)
    previous = os.path.realpath(a.previous)
    old_debs = sorted(glob.glob(os.path.join(previous, "deb", "*.deb")))
    if len(old_debs) != 3:
        fail(f"expected the previous release's three .debs in {previous}/deb (previous_packages.sh)")
    a.work_dir = os.path.abspath(a.work_dir)
    if os.path.isdir(a.work_dir):
        shutil.rmtree(a.work_dir)
    os.makedirs(a.work_dir)

    t = time.monotonic()
    new_deb_dir = os.path.join(a.work_dir, "deb")
    run([os.path.join(src, "scripts", "make-deb"), "--build-dir", build, "--out-dir", new_deb_dir], "make-deb (this tree)")
    new_debs = sorted(glob.glob(os.path.join(new_deb_dir, "*.deb")))
    step("this tree's packages (make-deb)", t)

    def pick(debs, name):
        return [d for d in debs if os.path.basename(d).startswith(name + "_")]

    t = time.monotonic()
    base = run([os.path.join(src, "tests", "upgrade", "base_root.sh"), a.root_cache, *old_debs, *new_debs],
               "the clean root (base_root.sh)").strip().splitlines()[-1]
    root = Root(os.path.join(a.work_dir, "root"))
    run(["cp", "-a", "--one-file-system", base, root.path], "copying the clean root")
    run(["mount", "-t", "proc", "proc", root.host("/proc")], "mounting /proc in the root")
    run(["mount", "--rbind", "/dev", root.host("/dev")], "binding /dev into the root")
    step("clean root (debootstrap cached) copied", t)

    t = time.monotonic()
    old_oma_debs = pick(old_debs, "migratekit") + pick(old_debs, "migratekit-oma")
    root.dpkg_install(old_oma_debs, "installing the previous release's migratekit and migratekit-oma")
    old_version = root.version("migratekit-oma")
    print(f"installed the previous release: migratekit-oma {old_version}", flush=True)
    step("previous release installed (dpkg -i)", t)

    # The lab VMA: the previous release's vma and vma-lab first, then this tree's; the lab
    # itself (mk-lab) is this tree's. Through links in one bin directory, as MigrationLab
    # takes its tools from one.
    bin_dir = os.path.join(a.work_dir, "bin")
    os.makedirs(bin_dir)

    def vma_from(directory):
        for tool in ("vma", "vma-lab"):
            link = os.path.join(bin_dir, tool)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(os.path.join(directory, tool), link)

    os.symlink(os.path.join(build, "bin", "mk-lab"), os.path.join(bin_dir, "mk-lab"))
    vma_from(os.path.join(previous, "bin"))

    def replica_sha256(vm_id, disk, volume):
        # The local backend's volume is a file in the root's state directory.
        return MigrationLab.volume_sha256(dict(volume, device_path=root.host(volume["device_path"])), disk["flat_file"])

    lab_dir = tempfile.mkdtemp(prefix="mk-upgrade-")  # short: the VMA's Unix sockets live there
    print(f"lab and VMA: {lab_dir}", flush=True)
    lab = MigrationLab(lab_dir, vms=1, disk_mib=a.disk_mib, bin_dir=bin_dir, target_sha256=replica_sha256,
                       fill="dense")
    # The lab's sshd (the VMAs' tunnels end there, as root on this machine) reads the keys
    # the OMA in the root approves: its authorized_keys file, made now for the oma user.
    keys = STATE + "/vma_authorized_keys"
    run(root.chroot("install", "-o", "oma", "-g", "oma", "-m", "0600", "/dev/null", keys), "making " + keys)
    os.makedirs(os.path.join(lab_dir, "oma"), mode=0o700)
    os.symlink(root.host(keys), os.path.join(lab_dir, "oma", "vma_authorized_keys"))

    api_port, gui_port, nbd_port, tunnel_base = (free_port() for _ in range(4))
    oma_log = os.path.join(a.work_dir, "oma.log")
    oma = None

    def oma_argv():
        # As migratekit-oma.service runs it (user oma, the shipped oma.conf), with the
        # ports of this test and the lab's sshd for the tunnels.
        return ["chroot", "--userspec=oma:oma", root.path, "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=" + STATE, "/usr/bin/oma", "--config", "/etc/migratekit/oma.conf",
                "--api-listen", "127.0.0.1", "--api-port", str(api_port), "--gui-listen", "127.0.0.1",
                "--gui-port", str(gui_port), "--nbd-listen", "127.0.0.1", "--nbd-port", str(nbd_port),
                "--nbd-advertise-host", "127.0.0.1", "--tunnel-port-base", str(tunnel_base),
                "--vma-url", f"http://127.0.0.1:{tunnel_base}", "--ssh-host", "127.0.0.1",
                "--ssh-port", str(lab.lab["sshd"]["port"]), "--ssh-user", "root",
                "--ssh-host-key-file", "/etc/migratekit/lab-ssh-host-key.pub"]

    def healthy():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/health", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def start_oma(what):
        nonlocal oma
        with open(oma_log, "a") as f:
            f.write(f"\n===== {what} =====\n")
        oma = Process("oma", oma_argv(), oma_log).start()
        wait_for(f"{what}: /health", healthy, 120, oma.proc, oma_log, interval=0.2)
        with open(root.host(STATE + "/admin.token")) as f:
            lab.use_oma(OmaApi(f"http://127.0.0.1:{api_port}", f.read().strip()))

    def refused(what, expect):
        """Starts the installed OMA, which must exit (not serve) with `expect` in its log."""
        with open(oma_log, "a") as f:
            f.write(f"\n===== {what} =====\n")
        start = os.path.getsize(oma_log)
        p = Process("oma", oma_argv(), oma_log).start()
        try:
            p.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.stop()
            fail(f"{what}: the OMA still runs after 60 s" + tail(oma_log))
        with open(oma_log, errors="replace") as f:
            f.seek(start)
            text = f.read()
        if p.proc.returncode == 0 or expect not in text:
            fail(f"{what}: expected a failed start saying {expect!r}; exit {p.proc.returncode}:\n{text[-2000:]}")
        print(f"   {what}: refused (exit {p.proc.returncode}): "
              f"{next(line for line in text.splitlines() if expect in line).strip()[:300]}", flush=True)

    try:
        t = time.monotonic()
        lab.start_lab(sshd=True)
        shutil.copy(lab.lab["sshd"]["host_key_file"], root.host("/etc/migratekit/lab-ssh-host-key.pub"))
        start_oma("the previous release's OMA")
        lab.pair_vma()
        lab.start_vma()
        lab.add_vms()
        step("lab, previous OMA and VMA started, paired", t)

        # A full pass through the previous release, checked.
        t = time.monotonic()
        vm = lab.vm_ids[0]
        total = sum(d["capacity_bytes"] for d in lab.vms[vm]["disks"])
        full = lab.replicate("full")[vm]
        if lab.failures:
            fail("; ".join(lab.failures))
        step("full pass through the previous release", t)

        # The guest writes, and an incremental pass begins; the VMA reads slowly (its read
        # rate limit) so that the upgrade comes in the middle of the pass.
        t = time.monotonic()
        lab.read_rate_limit = a.read_rate
        lab.restart_vma(signal.SIGTERM)
        lab.guest_writes(blocks_per_disk=200)
        job_id = lab.start_pass(vm, "incremental")

        def copying():
            p = lab.oma.call("GET", f"/api/v1/jobs/{job_id}/progress", timeout=10)
            done = p.get("bytes_done", 0)
            return done if 0 < done < p.get("bytes_total", 0) and lab.oma.job(job_id)["status"] == "copying" else None

        done_before = wait_for("the incremental pass copying", copying, 120, lab.procs["vma"].proc,
                               lab.procs["vma"].log)
        print(f"   incremental pass {job_id} copying: {done_before / 1048576:.1f} MiB done when the upgrade starts",
              flush=True)
        step("incremental pass begun through the previous release", t)

        # The OMA's upgrade, as `apt upgrade` does it: the service stops (prerm; no init
        # runs here, so the test stops it), the packages are replaced, the service starts.
        # The VMA goes on copying meanwhile (VMAs are upgraded after their OMA).
        t = time.monotonic()
        oma.stop(signal.SIGTERM)
        db = root.host(STATE + "/oma.db")
        old_schema, old_rows = schema(db)
        out = root.dpkg_install(pick(new_debs, "migratekit") + pick(new_debs, "migratekit-oma"),
                                "upgrading to this tree's migratekit and migratekit-oma")
        new_version = root.version("migratekit-oma")
        if "Preparing to unpack" not in out or "over (" not in out:
            fail("dpkg did not upgrade the installed packages:\n" + out[-2000:])
        if subprocess.run(["dpkg", "--compare-versions", new_version, "gt", old_version]).returncode != 0:
            fail(f"this tree's package {new_version} is not newer than the previous {old_version}: dpkg would "
                 "not upgrade it (scripts/make-deb's version)")
        print(f"   upgraded migratekit-oma {old_version} -> {new_version}", flush=True)
        log_before = os.path.getsize(oma_log)
        start_oma("this tree's OMA on the previous release's state")
        step("OMA upgraded (dpkg -i), this tree's OMA healthy", t)

        with open(oma_log, errors="replace") as f:
            f.seek(log_before)
            migrated = [line.strip() for line in f if "applied migration" in line]
        print(f"   {len(migrated)} migration(s) applied on start", flush=True)
        for line in migrated:
            print("   " + line[-160:], flush=True)
        job = lab.oma.job(full["job_id"])
        if job["status"] != "completed":
            fail(f"the previous release's full pass is {job['status']} after the upgrade: {job}")
        print(f"   the previous release's full pass {full['job_id']} is still listed: {job['status']}", flush=True)

        # The pass begun before the upgrade: the upgraded OMA takes it up again. With the
        # same OMA<->VMA protocol it completes through the previous VMA; across a protocol
        # change the OMA cannot drive that VMA, and the pass must end failed saying so
        # (and what to do), its replicas' committed state untouched for the next pass.
        t = time.monotonic()
        job = lab.wait_job(job_id, "the incremental pass begun before the upgrade")
        if old_protocol == new_protocol:
            if job["status"] != "completed":
                fail(f"the pass begun before the upgrade ended {job['status']} after it: {job.get('error')}")
            lab.check_disks(vm, job, "incremental")
            if lab.failures:
                fail("; ".join(lab.failures))
            print("   the pass begun before the upgrade completed after it", flush=True)
        else:
            expect = (f"the VMA speaks protocol version {old_protocol} and this OMA speaks version {new_protocol}: "
                      "upgrade the VMA")
            if job["status"] != "failed" or expect not in (job.get("error") or ""):
                fail(f"protocol {old_protocol} -> {new_protocol}: the pass begun before the upgrade should fail "
                     f"saying {expect!r}; it ended {job['status']}: {job.get('error')}")
            print(f"   protocol {old_protocol} -> {new_protocol}: the pass begun before the upgrade failed as it "
                  f"must: {job['error'][:200]}", flush=True)
        step("the pass begun before the upgrade, after it", t)

        # The VMA's upgrade.
        t = time.monotonic()
        vma_from(os.path.join(build, "bin"))
        lab.read_rate_limit = None
        lab.restart_vma(signal.SIGTERM)
        step("VMA upgraded, its tunnel up", t)

        # The next pass goes on from what the previous release committed: incremental,
        # moving less than the disks, and the replicas equal their sources.
        t = time.monotonic()
        lab.guest_writes(seed=11)
        inc = lab.replicate("incremental")[vm]
        if lab.failures:
            fail("; ".join(lab.failures))
        moved = sum(int(d.get("bytes_done", 0)) for d in inc.get("disks", []))
        if moved >= total:
            fail(f"the incremental pass after the upgrade moved {moved} bytes of {total}: the change IDs "
                 "committed before it were not kept")
        print(f"   incremental pass after the upgrade: {moved / 1048576:.1f} MiB of {total / 1048576:.0f} MiB",
              flush=True)
        step("incremental pass after the upgrade", t)

        oma.stop(signal.SIGTERM)  # to read the database as it was migrated
        new_schema, new_rows = schema(db)
        print(f"   schema {old_schema} -> {new_schema}", flush=True)
        if new_rows[:len(old_rows)] != old_rows or new_schema < old_schema:
            fail(f"the upgrade lost applied migrations: before {old_rows}, after {new_rows}")
        if len(migrated) != new_schema - old_schema:
            fail(f"schema {old_schema} -> {new_schema} but the log names {len(migrated)} applied migration(s)")

        # An OMA never runs on a database newer than it knows.
        t = time.monotonic()
        lab.procs["vma"].stop()
        con = sqlite3.connect(db)
        with con:
            con.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, 0)",
                        (new_schema + 1, "a migration of a newer OMA (upgrade_test.py)"))
        con.close()
        refused("this tree's OMA on a database one version ahead",
                f"has schema version {new_schema + 1} but this OMA knows only up to {new_schema}")
        if schema(db)[0] != new_schema + 1:
            fail("the refused OMA changed the database's schema version")
        con = sqlite3.connect(db)
        with con:
            con.execute("DELETE FROM schema_migrations WHERE version = ?", (new_schema + 1,))
        con.close()
        if old_schema < new_schema:
            out = root.dpkg_install(pick(old_debs, "migratekit") + pick(old_debs, "migratekit-oma"),
                                    "installing the previous release again (a downgrade)")
            if "downgrading" not in out.lower():
                fail("dpkg did not downgrade:\n" + out[-2000:])
            refused(f"the previous release ({old_version}) on the migrated database",
                    f"has schema version {new_schema} but this OMA knows only up to {old_schema}")
            if schema(db) != (new_schema, new_rows):
                fail("the refused previous release changed the database's migrations")
        else:
            print(f"   the base has this tree's schema ({new_schema}): no downgrade to refuse "
                  "(MK_UPGRADE_BASE names a commit without a schema change since)", flush=True)
        step("newer schemas refused", t)

        # Removing this tree's OMA package keeps its state; purging deletes it.
        t = time.monotonic()
        if old_schema < new_schema:
            root.dpkg_install(pick(new_debs, "migratekit") + pick(new_debs, "migratekit-oma"),
                              "installing this tree's packages again after the downgrade")
        root.dpkg("removing migratekit-oma", "-r", "migratekit-oma")
        if not os.path.exists(db) or not os.path.exists(root.host(STATE + "/admin.token")):
            fail(f"removing migratekit-oma deleted its state in {STATE} (only a purge may)")
        root.dpkg("purging migratekit-oma", "-P", "migratekit-oma")
        if os.path.exists(root.host(STATE)):
            fail(f"purging migratekit-oma left {STATE}: {os.listdir(root.host(STATE))}")
        step("removed (state kept), then purged (state gone)", t)
    except LabError as e:
        fail(f"{e}" + tail(oma_log, 30))
    finally:
        if oma is not None:
            oma.stop()
        lab.stop()
    shutil.rmtree(lab_dir, ignore_errors=True)
    subprocess.run(["umount", "-R", root.host("/dev")], check=False)
    subprocess.run(["umount", root.host("/proc")], check=False)
    shutil.rmtree(root.path, ignore_errors=True)
    step("whole upgrade test", t_all)
    print("timings: " + ", ".join(f"{n} {s:.0f} s" for n, s in timings), flush=True)


if __name__ == "__main__":
    main()
