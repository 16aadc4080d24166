"""An appliance image booted for a test: a throwaway qcow2 overlay of it run by qemu
under TCG (/dev/kvm cannot run guests on these machines) with its serial console (ttyS0)
in WORK_DIR/console.log and user-mode networking, stopped by its PID. Used by
oma_boot_test.py, oma_pair_replicate_test.py and vma_boot_test.py as a context manager;
one thread. Also what those tests share about the OMA: its HTTPS API on a forwarded
loopback port (self-signed: pinned by the fingerprint its console announced), the wait
for /health and the first-boot announcement."""
import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request


def console_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def fail(message, log_path):
    tail = console_text(log_path)[-6000:]
    # The console holds the first boot's secrets: never echo them into the test log.
    tail = re.sub(r"MK-(ADMIN-TOKEN|ROOT-PASSWORD): \S+", r"MK-\1: (hidden)", tail)
    print(f"FAIL: {message}\n--- last console output ({log_path}) ---\n{tail}", file=sys.stderr)
    sys.exit(1)


def arguments(doc, timeout_help):
    """The options both tests take; a test adds its own."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--timeout", type=int, default=1500, help=timeout_help)
    return ap


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def insecure_context():
    # The certificate is self-signed: callers pin it by the fingerprint the console
    # printed (served_fingerprint), as a VMA pins it from its pairing bundle.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def request(port, method, path, token=None, body=None):
    """One call to the OMA's HTTPS API on 127.0.0.1:port; returns (status, body bytes)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=insecure_context(), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def served_fingerprint(port):
    """SHA-256 of the certificate the HTTPS listener on 127.0.0.1:port serves ("AB:CD:...")."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with insecure_context().wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def wait_healthy(vm, port, started, timeout):
    """Waits until the OMA's GET /health on the forwarded `port` answers 200; returns the
    seconds since `started` (time.monotonic()); fails the test after `timeout` s."""
    while time.monotonic() - started < timeout:
        vm.check_running("the OMA answered")
        try:
            status, _ = request(port, "GET", "/health")
            if status == 200:
                return time.monotonic() - started
        except (OSError, ssl.SSLError):
            pass  # not up yet: qemu forwards the port before the guest listens
        time.sleep(3)
    fail(f"GET /health did not answer 200 within {timeout} s", vm.console)


def oma_announcement(vm):
    """Waits for the OMA's first-boot announcement; returns (console text, admin token,
    certificate fingerprint). The token stays in memory: never print it."""
    # The announcement follows the OMA's start (After=migratekit-oma.service).
    text = vm.wait_for("MK-APPLIANCE-READY oma", 300, "first-boot announcement")
    token = re.search(r"MK-ADMIN-TOKEN: (\S+)", text)
    fingerprint = re.search(r"fingerprint:\s*\n\s*((?:[0-9A-F]{2}:){31}[0-9A-F]{2})", text)
    if not token or not fingerprint:
        fail("the announcement lacks the admin token or the certificate fingerprint", vm.console)
    return text, token.group(1), fingerprint.group(1)


def guest_append(overlay, path, text):
    """Appends `text` to the file `path` of the appliance's root file system (partition 2)
    in the qcow2 `overlay` before its first boot, as an operator customises a template
    (docs/install.md, "Settings before the first boot"), with libguestfs (TCG here)."""
    env = dict(os.environ, LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg")
    out = subprocess.run(["guestfish", "--rw", "--format=qcow2", "-a", overlay, "-m", "/dev/sda2", "--",
                          "write-append", path, text], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"FAIL: guestfish could not append to {path} in {overlay}: {out.stderr.strip()[-2000:]}",
              file=sys.stderr)
        sys.exit(1)


def guest_files(overlay, paths, dirs=()):
    """Reads files and lists directories of the appliance's root file system (partition 2)
    in the qcow2 `overlay` of a stopped guest, read-only, in one libguestfs run (TCG here).
    Returns ({path: text, or None when it is no file}, {dir: [names], or None})."""
    script = []
    for p in paths:
        script += [f"echo @@@F {p}", f"is-file {p}", f"-cat {p}"]
    for d in dirs:
        script += [f"echo @@@D {d}", f"is-dir {d}", f"-ls {d}"]
    env = dict(os.environ, LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg")
    out = subprocess.run(["guestfish", "--ro", "--format=qcow2", "-a", overlay, "-m", "/dev/sda2"],
                         input="\n".join(script) + "\n", capture_output=True, text=True, env=env)
    if out.returncode != 0 or "@@@" not in out.stdout:
        print(f"FAIL: guestfish could not read {overlay}: {out.stderr.strip()[-2000:]}", file=sys.stderr)
        sys.exit(1)
    files, listings = {}, {}
    for chunk in out.stdout.split("@@@")[1:]:
        head, _, rest = chunk.partition("\n")
        kind, name = head.split(" ", 1)
        found, _, body = rest.partition("\n")
        if kind == "F":
            files[name] = body if found == "true" else None
        else:
            listings[name] = body.split() if found == "true" else None
    return files, listings


class BootedVm:
    """`before_boot(overlay)`, when given, may change the fresh overlay before qemu starts;
    `extra_args`, more qemu arguments (e.g. a seed CD-ROM)."""

    def __init__(self, qemu, image, work_dir, memory_mib, nic="user,model=virtio-net-pci", before_boot=None,
                 extra_args=()):
        if os.path.isdir(work_dir):
            shutil.rmtree(work_dir)
        os.makedirs(work_dir)
        self.overlay = os.path.join(work_dir, "run.qcow2")
        self.console = os.path.join(work_dir, "console.log")
        self.log = os.path.join(work_dir, "qemu.log")
        self.qmp = os.path.join(work_dir, "qmp.sock")  # power_off's ACPI button
        # One vCPU leaves the other core to the rest of the suite.
        self.cmd = [qemu, "-accel", "tcg", "-cpu", "max", "-m", str(memory_mib), "-smp", "1", "-nodefaults",
                    "-display", "none", "-monitor", "none", "-no-reboot", "-serial", f"file:{self.console}",
                    "-qmp", f"unix:{self.qmp},server=on,wait=off", "-vga", "std", "-drive", f"file={self.overlay},if=virtio,format=qcow2", "-nic", nic,
                    *extra_args]
        self.image = os.path.abspath(image)
        self.before_boot = before_boot
        self.process = None

    def __enter__(self):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", self.image, self.overlay],
                       check=True)
        if self.before_boot:
            self.before_boot(self.overlay)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return self

    def text(self):
        return console_text(self.console)

    def check_running(self, what):
        if self.process.poll() is not None:
            fail(f"qemu exited with status {self.process.returncode} before {what}", self.console)

    def wait_for(self, marker, seconds, what):
        """Waits until `marker` shows on the console; fails the test naming `what`
        when qemu exits or `seconds` pass first. Returns the console's text."""
        deadline = time.monotonic() + seconds
        while marker not in self.text():
            self.check_running(what)
            if time.monotonic() > deadline:
                fail(f"no {what} on the serial console within {seconds} s", self.console)
            time.sleep(2)
        return self.text()

    def power_off(self, seconds):
        """Presses the ACPI power button (QMP system_powerdown) and waits until the guest
        has shut down and qemu exited (-no-reboot): what the guest wrote is on its disk
        (a power cut may leave files it wrote in the last half minute empty)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.qmp)
            f = s.makefile("rwb")
            f.readline()  # the greeting
            for command in ("qmp_capabilities", "system_powerdown"):
                f.write(json.dumps({"execute": command}).encode() + b"\n")
                f.flush()
                while b'"return"' not in (line := f.readline()):
                    if not line or b'"error"' in line:
                        fail(f"qemu's QMP refused {command}: {line!r}", self.console)
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            fail(f"the guest did not power off within {seconds} s of the ACPI power button", self.console)

    def stop(self):
        """Stops qemu (a power cut: the guest's file systems are read back as a crash left
        them); the overlay stays until the end of the `with` block."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __exit__(self, *exc):
        self.stop()
        os.unlink(self.overlay)
        return False
