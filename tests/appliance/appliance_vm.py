"""An appliance image booted for a test: a throwaway qcow2 overlay of it run by qemu
under TCG (/dev/kvm cannot run guests on these machines) with its serial console (ttyS0)
in WORK_DIR/console.log and user-mode networking, stopped by its PID. Used by
oma_boot_test.py and vma_boot_test.py as a context manager; one thread."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time


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


class BootedVm:
    def __init__(self, qemu, image, work_dir, memory_mib, nic="user,model=virtio-net-pci"):
        if os.path.isdir(work_dir):
            shutil.rmtree(work_dir)
        os.makedirs(work_dir)
        self.overlay = os.path.join(work_dir, "run.qcow2")
        self.console = os.path.join(work_dir, "console.log")
        self.log = os.path.join(work_dir, "qemu.log")
        # One vCPU leaves the other core to the rest of the suite.
        self.cmd = [qemu, "-accel", "tcg", "-cpu", "max", "-m", str(memory_mib), "-smp", "1", "-nodefaults",
                    "-display", "none", "-monitor", "none", "-no-reboot", "-serial", f"file:{self.console}",
                    "-vga", "std", "-drive", f"file={self.overlay},if=virtio,format=qcow2", "-nic", nic]
        self.image = os.path.abspath(image)
        self.process = None

    def __enter__(self):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", self.image, self.overlay],
                       check=True)
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

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.unlink(self.overlay)
        return False
