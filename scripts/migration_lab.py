"""A whole MigrateKit system on one machine: the lab, the OMA and a paired VMA.

Used by scripts/demo (the README's main command), the end-to-end tests (tests/migration)
and the benchmark of a VMA pass (bench/vma_pass). Everything goes through the products'
own interfaces: the OMA's REST API as an operator would use it, `vma pair` with a
pairing bundle, the VMA's SSH reverse tunnel to an sshd on a loopback port.

    lab = MigrationLab(work_dir, vms=1, disk_mib="1024,512")
    lab.start()                      # mk-lab (vcsim + CBT shim + sshd), OMA, VMA paired
    lab.add_vms()                    # from the VMA's discovery, through the OMA
    lab.replicate(["full"])          # every VM at once; sha256 checked per disk
    lab.guest_writes(); lab.replicate(["incremental"]); lab.cutover(vm)
    lab.stop()                       # every process stopped by PID

With cloudstack=True the OMA keeps its volumes in the CloudStack simulator
(tests/lab/cloudstack) instead of local files: each pass attaches them through its API,
and cloudstack_fail() makes that API fail as a management server does.

Processes are started in their own sessions and stopped by PID (never by name). Not
thread-safe.
"""
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20
JOB_ENDED = ("completed", "failed", "cancelled")


class LabError(Exception):
    pass


def say(msg):
    print(msg, flush=True)


def free_port(preferred=0):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(log, lines=15):
    if not log or not os.path.exists(log):
        return ""
    with open(log, errors="replace") as f:
        text = f.readlines()[-lines:]
    return f"\n--- last lines of {log} ---\n" + "".join(text)


def wait_for(what, check, timeout, proc=None, log=None, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise LabError(f"{what}: the process exited with status {proc.returncode}" + tail(log))
        time.sleep(interval)
    raise LabError(f"{what}: not within {timeout} s" + tail(log))


def journal_writes(flat_file, ranges):
    """Tells the lab's CBT shim which ranges of a flat file were written: one "offset
    length" line each in its write journal, when it keeps one (tests/lab/vcsim/cbt_shim.py).
    Without it the shim counts every allocated block as changed."""
    try:
        fd = os.open(flat_file + ".cbt-journal", os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        return  # change tracking is not active on this disk yet
    try:
        os.write(fd, "".join(f"{o} {n}\n" for o, n in ranges).encode())
    finally:
        os.close(fd)


def sha256(path, length=None):
    """The file's sha256, or that of its first `length` bytes (a CloudStack volume is
    rounded up to whole GiB: only the source disk's size is compared)."""
    h = hashlib.sha256()
    left = os.path.getsize(path) if length is None else length
    with open(path, "rb") as f:
        while left > 0 and (chunk := f.read(min(8 * MIB, left))):
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def child_pids(parent):
    """PIDs whose parent is `parent` (from /proc; used to find the VMA's ssh)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == parent:
            out.append(int(name))
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class ReflinkStore:
    """A btrfs file system on a loop device over a sparse image file, for the lab's vCenter
    datastore. The CBT shim freezes a disk at CreateSnapshot by copying its flat file; on
    tmpfs or ext4 that is a full copy, seconds per GiB spent by the lab, counted in every
    pass's snapshot time. On btrfs the copy is a reflink (no data copied), as a vSphere
    snapshot starts a new delta disk without copying the base disk. Benchmarks use it so
    that the lab's cost of a snapshot is not counted as ours. Needs root, the kernel's btrfs
    and loop drivers and btrfs-progs; mounted with nodatasum, so that reads and writes cost
    no checksums that tmpfs would not. Not thread-safe."""

    def __init__(self, image, mountpoint, size):
        self.image, self.mountpoint, self.size = image, mountpoint, size
        self.mounted = False

    @staticmethod
    def unavailable():
        """Why this machine cannot have one (None when it can)."""
        if os.geteuid() != 0:
            return "not root (mounting a loop device needs root)"
        if not shutil.which("mkfs.btrfs"):
            return "mkfs.btrfs is missing (apt-get install btrfs-progs)"
        if not os.path.exists("/dev/loop-control"):
            return "no loop devices (/dev/loop-control)"
        return None

    def mount(self):
        with open(self.image, "wb") as f:
            f.truncate(self.size)
        os.makedirs(self.mountpoint, exist_ok=True)
        for argv in (["mkfs.btrfs", "-q", "-f", self.image],
                     ["mount", "-t", "btrfs", "-o", "loop,nodatasum", self.image, self.mountpoint]):
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode != 0:
                os.unlink(self.image)
                raise LabError(f"reflink datastore: {' '.join(argv)} failed: {(r.stderr or r.stdout).strip()[-400:]}")
        self.mounted = True

    def unmount(self):
        if self.mounted:
            r = subprocess.run(["umount", self.mountpoint], capture_output=True, text=True)
            if r.returncode != 0:
                sys.stderr.write(f"reflink datastore: umount {self.mountpoint} failed: {r.stderr.strip()}\n")
                return
            self.mounted = False
        if os.path.exists(self.image):
            os.unlink(self.image)


def reflink_datastore_size(choice, data_bytes, log):
    """For a benchmark's --lab-snapshots CHOICE ("reflink" or "copy"): the bytes of a
    ReflinkStore for `data_bytes` of disks, or None (full copies) when copies were asked
    for or this machine cannot have one; what was chosen is said through `log`."""
    if choice == "copy":
        return None
    why = ReflinkStore.unavailable()
    if why:
        log(f"the lab's snapshots are full copies: no reflink datastore ({why})")
        return None
    log("the lab's datastore on btrfs: its snapshots are reflinks (--lab-snapshots copy for full copies)")
    return 2 * data_bytes + (1 << 30)  # sparse: room for the disks, the writes between passes, metadata


class Process:
    """One service: its argv, log and Popen; restartable."""

    def __init__(self, name, argv, log, env=None):
        self.name, self.argv, self.log, self.env, self.proc = name, argv, log, env, None

    def start(self):
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=self.env)
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if not self.running():
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class OmaApi:
    """The OMA's REST API with a bearer token. `context`: the ssl.SSLContext for an
    https:// base (an appliance's self-signed API, pinned by its caller); None for http://."""

    def __init__(self, base, token, context=None):
        self.base, self.token, self.context = base, token, context

    def call(self, method, path, body=None, ok=(200, 201, 202), timeout=120):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.context) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise LabError(f"OMA API {method} {path}: {e}") from None
        if status not in ok:
            raise LabError(f"OMA API {method} {path}: HTTP {status}: {text[:400]}")
        return json.loads(text) if text else {}

    def job(self, job_id):
        j = self.call("GET", f"/api/v1/jobs/{job_id}")
        return j.get("job", j)

    def wait_jobs(self, job_ids, timeout=1800):
        """Follows jobs to their end on the OMA's event stream (GET /api/v1/events, as the GUI
        does) and returns {job_id: job}. One connection, told of each change as it happens:
        polling GET /api/v1/jobs fast enough to see an end at once costs the OMA and the
        client a TLS handshake per request, CPU a benchmark's copy on two cores would miss."""
        pending = set(job_ids)
        deadline = time.monotonic() + timeout
        url = urllib.parse.urlsplit(self.base)
        conn_type = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        kw = {"context": self.context} if url.scheme == "https" else {}
        conn = conn_type(url.hostname, url.port, timeout=max(1.0, timeout), **kw)
        try:
            conn.request("GET", url.path.rstrip("/") + "/api/v1/events",
                         headers={"Authorization": "Bearer " + self.token, "Accept": "text/event-stream"})
            r = conn.getresponse()
            if r.status != 200:
                raise LabError(f"OMA API GET /api/v1/events: HTTP {r.status}: {r.read(400).decode(errors='replace')}")
            recheck = True  # a job may have ended before the stream was open
            event = None
            while pending:
                if recheck:
                    pending = {j for j in pending if self.job(j)["status"] not in JOB_ENDED}
                    recheck = False
                    continue
                if time.monotonic() > deadline:
                    raise LabError(f"jobs {', '.join(sorted(pending))}: not finished within {timeout} s")
                line = r.readline()
                if not line:
                    raise LabError("the OMA closed its event stream (is it stopping?)")
                line = line.decode(errors="replace").rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "job":
                    data = json.loads(line[5:])
                    if data.get("job_id") in pending and data.get("status") in JOB_ENDED:
                        pending.discard(data["job_id"])
                elif line.startswith("data:") and event == "resync":  # we fell behind: events were lost
                    recheck = True
        except (OSError, http.client.HTTPException) as e:
            raise LabError(f"OMA API GET /api/v1/events: {e}") from None
        finally:
            conn.close()
        return {j: self.job(j) for j in job_ids}


class MigrationLab:
    def __init__(self, work, vms=1, disk_mib="1024,512", fill="sparse", nbd_over_ssh=False,
                 read_rate_limit=None, ports=None, bin_dir=None, quiet=False, nbd_tls="psk", cloudstack=False,
                 target_sha256=None, disk_images=None, convert_guests=False, vma_args=(), reflink_datastore=None):
        self.work = work
        # Bytes of a btrfs file system for vCenter's datastore (ReflinkStore), or None: the
        # datastore on whatever holds `work`, where the shim's snapshots are full copies.
        self.reflink_datastore = reflink_datastore
        self.store = None
        # More options of `vma run` (benchmarks compare settings, e.g. --nbd-connections 2).
        self.vma_args = list(vma_args)
        # oma --convert-guests: a cutover inspects the volumes and converts the guest for KVM
        # (virt-v2v-in-place) after the final pass; the final disks then differ from the source.
        self.convert_guests = convert_guests
        # Raw images (unit order) the first VM's disks are copies of (mk-lab --disk-image),
        # in place of generated disks of disk_mib; a real guest's disks get no simulated writes.
        self.disk_images = [os.path.abspath(p) for p in (disk_images or [])]
        self.cloudstack = cloudstack
        # How check_disks reads a replica: target_sha256(vm_id, disk, volume) -> hex digest,
        # `disk` as in the lab's JSON, `volume` as GET /api/v1/volumes lists it. Default: the
        # volume's file (device_path) over the source's size, which only an OMA on this
        # machine has.
        self.target_sha256 = target_sha256 or (
            lambda vm_id, disk, volume: self.volume_sha256(volume, disk["flat_file"]))
        # "psk" (the OMA's default) or "x509": the OMA gets `--tls-certificates DIR` with a
        # throwaway PKI (certtool: a CA, a server certificate for localhost/127.0.0.1) and
        # the VMA its client certificate at pairing.
        if nbd_tls not in ("psk", "x509"):
            raise LabError(f"nbd_tls {nbd_tls!r}: expected psk or x509")
        self.nbd_tls = nbd_tls
        self.bin = bin_dir or os.environ.get("MIGRATEKIT_BIN_DIR", os.path.join(ROOT, "build", "bin"))
        self.n_vms, self.disk_mib, self.fill = vms, disk_mib, fill
        self.nbd_over_ssh, self.read_rate_limit = nbd_over_ssh, read_rate_limit
        self.quiet = quiet
        # Preferred ports by role ("api", "nbd", "gui", "tunnel"), each taken only if it is free;
        # a role not named gets any free port (the OMA writes the API's and GUI's to DATA/*.port).
        self.preferred_ports = ports or {}
        self.gui_port = free_port(self.preferred_ports["gui"]) if "gui" in self.preferred_ports else 0
        self.api_port = free_port(self.preferred_ports["api"]) if "api" in self.preferred_ports else 0
        self.procs = {}
        self.passes = []      # one entry per disk and pass (the demo's summary)
        self.cutover_snapshots = None  # snapshots vCenter took during the last cutover (cutover())
        self.failures = []    # checks that failed, in words
        self.vm_ids = []

    def log(self, msg):
        if not self.quiet:
            say(msg)

    def tool(self, name):
        path = os.path.join(self.bin, name)
        if not os.access(path, os.X_OK):
            raise LabError(f"{path} is missing; build first (make demo or make test build it)")
        return path

    def spawn(self, name, argv, env=None):
        p = Process(name, argv, os.path.join(self.work, f"{name}.log"), env).start()
        self.procs[name] = p
        return p

    def stop(self):
        for name in ("vma", "oma"):
            if name in self.procs:
                self.procs[name].stop()
        # The export server outlives OMA restarts (--keep-export-server): the OMA stops it
        # by the PID it recorded.
        if "oma" in self.procs:
            subprocess.run([self.tool("oma"), "--data-dir", self.oma_dir, "--stop-export-server"],
                           capture_output=True, timeout=60)
        for name in ("lab", "cloudstack"):
            if name in self.procs:
                self.procs[name].stop()
        if self.store:
            self.store.unmount()

    # --- the lab: vcsim + CBT shim + sshd ----------------------------------------------

    def start(self):
        self.start_lab()
        self.start_oma()
        self.pair_vma()
        self.start_vma()

    def use_oma(self, api):
        """Drives an OMA this lab did not start (e.g. a booted appliance) through `api`
        (an OmaApi) instead of start_oma(); stop() then leaves it alone."""
        self.oma = api

    def start_lab(self, sshd=True):
        """vcsim with its CBT shim and the lab's VMs; with `sshd`, the sshd that the OMA
        started by start_oma() has its VMAs' tunnels end at (an appliance has its own)."""
        self.oma_dir = os.path.join(self.work, "oma")
        os.makedirs(self.oma_dir, mode=0o700, exist_ok=True)
        self.authorized_keys = os.path.join(self.oma_dir, "vma_authorized_keys")
        if not os.path.exists(self.authorized_keys):
            write_private(self.authorized_keys, "")
        lab_json = os.path.join(self.work, "lab.json")
        argv = [self.tool("mk-lab"), "--out", lab_json, "--vms", str(self.n_vms)]
        if self.disk_images:
            for image in self.disk_images:
                argv += ["--disk-image", image]
        else:
            argv += ["--disk-mib", self.disk_mib, "--fill", self.fill]
        if sshd:
            argv += ["--sshd-authorized-keys", self.authorized_keys]
        env = None
        if self.reflink_datastore:
            self.store = ReflinkStore(os.path.join(self.work, "datastore.btrfs"), os.path.join(self.work, "datastore"),
                                      self.reflink_datastore)
            self.store.mount()
            env = dict(os.environ, TMPDIR=self.store.mountpoint)  # mk-lab makes vcsim's directory under TMPDIR
        p = self.spawn("lab", argv, env)
        wait_for("the lab (mk-lab)", lambda: os.path.exists(lab_json), 300, p.proc, p.log)
        with open(lab_json) as f:
            self.lab = json.load(f)
        self.vms = {v["instance_uuid"]: v for v in self.lab["vms"]}
        if self.cloudstack:
            self.start_cloudstack()

    # --- the CloudStack simulator (cloudstack=True) --------------------------------------

    # The simulator's seeded zone, offerings, template and network (tests/cloudstack/sim_server.h).
    CLOUDSTACK_SEED = {"zone_id": "z0000000-0000-4000-8000-000000000001",
                       "disk_offering_id": "do000000-0000-4000-8000-000000000001",
                       "service_offering_id": "so000000-0000-4000-8000-000000000001",
                       "template_id": "t0000000-0000-4000-8000-000000000001",
                       "test_network_id": "n0000000-0000-4000-8000-000000000002",
                       "oma_mac": "02:00:00:00:0a:01"}

    def start_cloudstack(self):
        d = os.path.join(self.work, "cloudstack")
        os.makedirs(d, mode=0o700, exist_ok=True)
        self.by_id_dir = os.path.join(d, "by-id")
        port_file = os.path.join(d, "port")
        secret_file = os.path.join(d, "secret")
        self.cloudstack_secret = os.urandom(24).hex()
        write_private(secret_file, self.cloudstack_secret)
        p = self.spawn("cloudstack", [sys.executable, os.path.join(ROOT, "tests", "lab", "cloudstack", "cloudstack_sim.py"),
                                      "--port-file", port_file, "--state-dir", os.path.join(d, "state"),
                                      "--by-id-dir", self.by_id_dir, "--api-key", "lab-key",
                                      "--secret-key-file", secret_file])
        wait_for("the CloudStack simulator", lambda: os.path.exists(port_file) and open(port_file).read().strip(),
                 60, p.proc, p.log)
        with open(port_file) as f:
            self.cloudstack_url = f"http://127.0.0.1:{int(f.read())}"

    def cloudstack_control(self, path, body=None):
        req = urllib.request.Request(self.cloudstack_url + path, method="POST" if body is not None else "GET",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"{}")

    def cloudstack_fail(self, rule):
        """Makes the simulator fail calls as `rule` says (its README: command, how, count...)."""
        self.cloudstack_control("/control/fail", rule)

    def cloudstack_clear(self):
        self.cloudstack_control("/control/clear", {})

    # --- the OMA -----------------------------------------------------------------------

    def start_oma(self):
        argv = [self.tool("oma"), "--data-dir", self.oma_dir, "--api-listen", "127.0.0.1", "--api-port", str(self.api_port),
                "--nbd-listen", "127.0.0.1", "--nbd-port", str(self.nbd_port()), "--gui-port", str(self.gui_port),
                "--gui-listen", "127.0.0.1",  # loopback: plain HTTP (elsewhere the OMA speaks HTTPS)
                "--keep-export-server",
                "--tunnel-port-base", str(self.tunnel_port_base()),
                "--vma-url", f"http://127.0.0.1:{self.tunnel_port_base()}",
                "--ssh-host", "127.0.0.1", "--ssh-port", str(self.lab["sshd"]["port"]), "--ssh-user", "root",
                "--ssh-host-key-file", self.lab["sshd"]["host_key_file"],
                "--authorized-keys-file", self.authorized_keys]
        if self.nbd_tls == "x509":
            argv += ["--tls-certificates", self.x509_server_dir()]
        if self.convert_guests:
            argv.append("--convert-guests")
        if self.cloudstack:
            argv += ["--volume-backend", "cloudstack", "--by-id-dir", self.by_id_dir, "--cloudstack-allow-http"]
        port_file = os.path.join(self.oma_dir, "api.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        p = self.spawn("oma", argv)
        wait_for("the OMA's API", lambda: os.path.exists(port_file) and open(port_file).read().strip(), 60,
                 p.proc, p.log)
        with open(port_file) as f:
            api_port = int(f.read())
        with open(os.path.join(self.oma_dir, "admin.token")) as f:
            self.oma = OmaApi(f"http://127.0.0.1:{api_port}", f.read().strip())
        if self.gui_port == 0:  # then the same port again after a restart
            gui_port_file = os.path.join(self.oma_dir, "gui.port")
            wait_for("the OMA's GUI port", lambda: os.path.exists(gui_port_file), 30, p.proc, p.log)
            with open(gui_port_file) as f:
                self.gui_port = int(f.read())
        self.gui_url = f"http://127.0.0.1:{self.gui_port}/"
        if self.cloudstack:  # stored in the OMA's database; again after a restart is harmless
            self.oma.call("PUT", "/api/v1/settings/cloudstack",
                          {"api_url": self.cloudstack_url + "/client/api", "api_key": "lab-key",
                           "secret_key": self.cloudstack_secret, **self.CLOUDSTACK_SEED})

    def x509_server_dir(self):
        """The operator's NBD server certificates directory for an X.509 OMA (made once):
        ca-cert.pem, server-cert.pem, server-key.pem; the CA's key stays in pki/ca."""
        pki = os.path.join(self.work, "pki")
        server = os.path.join(pki, "server")
        if os.path.exists(os.path.join(server, "server-key.pem")):
            return server
        ca = os.path.join(pki, "ca")
        os.makedirs(ca, mode=0o700, exist_ok=True)
        os.makedirs(server, mode=0o700, exist_ok=True)

        def certtool(*args):
            out = subprocess.run(["certtool", *args], capture_output=True, text=True)
            if out.returncode != 0:
                raise LabError(f"certtool {' '.join(args)} failed (is gnutls-bin installed?): {out.stderr.strip()}")

        def template(name, text):
            path = os.path.join(ca, name)
            with open(path, "w") as f:
                f.write(text)
            return path

        certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", os.path.join(ca, "ca-key.pem"))
        certtool("--generate-self-signed", "--load-privkey", os.path.join(ca, "ca-key.pem"), "--template",
                 template("ca.info", "cn = MigrateKit lab CA\nca\ncert_signing_key\nexpiration_days = 7\n"),
                 "--outfile", os.path.join(ca, "ca-cert.pem"))
        certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", os.path.join(server, "server-key.pem"))
        certtool("--generate-certificate", "--load-ca-certificate", os.path.join(ca, "ca-cert.pem"),
                 "--load-ca-privkey", os.path.join(ca, "ca-key.pem"), "--load-privkey",
                 os.path.join(server, "server-key.pem"), "--template",
                 template("server.info", "cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\n"
                                         "tls_www_server\nencryption_key\nsigning_key\nexpiration_days = 7\n"),
                 "--outfile", os.path.join(server, "server-cert.pem"))
        shutil.copyfile(os.path.join(ca, "ca-cert.pem"), os.path.join(server, "ca-cert.pem"))
        for f in os.listdir(server):
            os.chmod(os.path.join(server, f), 0o600)
        return server

    def nbd_certificates(self):
        """X.509: the VMA's NBD client certificates directory (its key, the certificate the
        OMA issued it at pairing, the OMA's server CA), as libnbd's tls-certificates reads it."""
        return os.path.join(self.vma_dir, "nbd-pki")

    def tunnel_port_base(self):
        # A lab's own unless one is preferred: another lab's VMA on this machine may hold 9081.
        if not hasattr(self, "_tunnel_port_base"):
            self._tunnel_port_base = free_port(self.preferred_ports.get("tunnel", 0))
        return self._tunnel_port_base

    def nbd_port(self):
        # Fixed for the lab's lifetime: a restarted OMA keeps serving where the VMA writes.
        if not hasattr(self, "_nbd_port"):
            self._nbd_port = free_port(self.preferred_ports.get("nbd", 0))
        return self._nbd_port

    def export_server_pid(self):
        return self.oma.call("GET", "/health").get("export_server_pid")

    def restart_oma(self, sig=signal.SIGKILL):
        self.procs["oma"].stop(sig)
        self.start_oma()

    # --- the VMA -----------------------------------------------------------------------

    def pair_vma(self):
        bundle = self.oma.call("POST", "/api/v1/vmas/pairing-bundles", {})
        bundle_file = os.path.join(self.work, "pairing-bundle.json")
        write_private(bundle_file, json.dumps(bundle))
        self.vma_dir = os.path.join(self.work, "vma")
        out = subprocess.run([self.tool("vma"), "pair", "--bundle", bundle_file, "--state-dir", self.vma_dir,
                              "--name", "lab-site", "--vcenter", urllib.parse.urlparse(self.lab["vcenter_url"]).netloc],
                             capture_output=True, text=True)
        os.unlink(bundle_file)  # single use, and it holds secrets
        if out.returncode != 0:
            raise LabError(f"vma pair failed: {out.stderr.strip()}")
        pending = [v for v in self.oma.call("GET", "/api/v1/vmas")["vmas"] if v["state"] == "pending"]
        if len(pending) != 1:
            raise LabError(f"expected one VMA waiting for approval, the OMA lists {pending}")
        self.vma_id = pending[0]["vma_id"]
        self.oma.call("POST", f"/api/v1/vmas/{self.vma_id}/approve")
        self.tunnel_port = pending[0].get("tunnel_port")

    def start_vma(self):
        datastore_dir = os.path.dirname(os.path.dirname(self.lab["vms"][0]["disks"][0]["flat_file"]))
        argv = [self.tool("vma-lab"), "run", "--state-dir", self.vma_dir,
                "--vcenter", self.lab["vcenter_url"], "--vcenter-user", self.lab["user"],
                "--vcenter-password-file", self.lab["password_file"],
                "--vcenter-thumbprint", self.lab["thumbprint"], "--listen", "127.0.0.1:0",
                "--lab-flat-datastore", f"LocalDS_0={datastore_dir}"]
        if self.nbd_over_ssh:
            argv.append("--nbd-over-ssh")
        if self.read_rate_limit:
            argv += ["--read-rate-limit", self.read_rate_limit]
        argv += self.vma_args
        p = self.spawn("vma", argv)
        wait_for("the VMA's SSH tunnel to the OMA", self.tunnel_up, 120, p.proc, p.log, interval=0.3)

    def tunnel_up(self):
        try:
            h = self.oma.call("GET", f"/api/v1/vmas/{self.vma_id}/health", timeout=10)
        except LabError:
            return None
        return h if h.get("tunnel", {}).get("state") == "up" else None

    def kill_ssh(self):
        """SIGKILLs the VMA's ssh client (found among the VMA's children); returns its PID."""
        vma = self.procs["vma"].pid
        ssh = [p for p in child_pids(vma) if comm(p) == "ssh"]
        if not ssh:
            raise LabError("the VMA has no ssh child to kill")
        os.kill(ssh[0], signal.SIGKILL)
        return ssh[0]

    def vma_ssh_pid(self):
        ssh = [p for p in child_pids(self.procs["vma"].pid) if comm(p) == "ssh"]
        return ssh[0] if ssh else None

    def nbd_ssh_local_port(self):
        """The VMA-side port of its ssh -L forward to the OMA's NBD port (--nbd-over-ssh),
        read from the ssh child's command line; None when the VMA writes NBD directly."""
        pid = self.vma_ssh_pid()
        if pid is None:
            return None
        with open(f"/proc/{pid}/cmdline") as f:
            argv = f.read().split("\0")
        for flag, spec in zip(argv, argv[1:]):
            parts = spec.split(":")
            if flag == "-L" and len(parts) == 4 and parts[3] == str(self.nbd_port()):
                return int(parts[1])
        return None

    def nbd_psk(self):
        """(identity, path) of the NBD TLS PSK the VMA got from pairing (its state dir)."""
        path = os.path.join(self.vma_dir, "nbd-psk.keys")
        with open(path) as f:
            return f.read().split(":", 1)[0], path

    def export_name(self, vm_id, unit):
        return f"migration-vm-{vm_id}-disk{unit}"  # src/oma/names.cpp

    def restart_vma(self, sig=signal.SIGKILL):
        self.procs["vma"].stop(sig)
        self.start_vma()

    # --- VMs and passes ------------------------------------------------------------------

    def add_vms(self):
        found = self.oma.call("GET", f"/api/v1/vmas/{self.vma_id}/discover")
        for vm in found["vms"]:
            if vm["vm_id"] not in self.vms:
                continue
            body = {k: vm[k] for k in ("vm_id", "name", "datacenter", "cpus", "memory_mb", "guest_os", "power_state")}
            body.update({"vcenter": found["vcenter"], "vma_id": self.vma_id,
                         "disks": [{"key": d["disk_key"], "unit": d["unit"], "capacity_bytes": d["capacity_bytes"],
                                    "label": d["label"]} for d in vm["disks"]]})
            if vm.get("nics"):
                body["nics"] = [{k: n[k] for k in ("key", "mac", "network")} for n in vm["nics"]]
            self.oma.call("POST", "/api/v1/vms", body)
            self.vm_ids.append(vm["vm_id"])
        if len(self.vm_ids) != len(self.vms):
            raise LabError(f"discovery showed {len(self.vm_ids)} of the lab's {len(self.vms)} VMs")
        return self.vm_ids

    def start_pass(self, vm_id, kind):
        j = self.oma.call("POST", "/api/v1/jobs", {"vm_id": vm_id, "kind": kind})
        return j.get("job_id") or j["job"]["job_id"]

    def wait_job(self, job_id, label, timeout=1800, on_progress=None):
        """Follows a job to its end; returns the job. on_progress(fraction) may inject faults."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                job = self.oma.job(job_id)
            except LabError:
                time.sleep(0.5)  # the OMA may be restarting
                continue
            if job["status"] in JOB_ENDED:
                return job
            if on_progress:
                try:
                    p = self.oma.call("GET", f"/api/v1/jobs/{job_id}/progress", timeout=10)
                    total = p.get("bytes_total") or 0
                    on_progress(p.get("bytes_done", 0) / total if total else 0.0)
                except LabError:
                    pass
            time.sleep(0.3)
        raise LabError(f"{label}: not finished within {timeout} s")

    def replicate(self, kind, vm_ids=None, on_progress=None, expect="completed"):
        """One pass of `kind` for every VM at once; checks every disk by sha256."""
        vm_ids = vm_ids or self.vm_ids
        jobs = {vm: self.start_pass(vm, kind) for vm in vm_ids}
        results = {}
        for vm, job_id in jobs.items():
            job = self.wait_job(job_id, f"{kind} pass of {self.vms[vm]['name']}", on_progress=on_progress)
            results[vm] = job
            if job["status"] != expect:
                raise LabError(f"{kind} pass of {self.vms[vm]['name']} ended {job['status']}: {job.get('error')}")
            if expect == "completed":
                self.check_disks(vm, job, kind)
        return results

    def disk_targets(self, vm_id):
        """disk_key -> the OMA's volume (device_path: the local volume's file)."""
        vols = self.oma.call("GET", "/api/v1/volumes")["volumes"]
        return {str(v["disk_key"]): v for v in vols if v["vm_id"] == vm_id}

    @staticmethod
    def volume_sha256(target, source_file):
        """The volume's sha256 over the source disk's size (CloudStack rounds volumes up to
        whole GiB); a volume with data written past that size never compares equal."""
        size = os.path.getsize(source_file)
        fd = os.open(target["device_path"], os.O_RDONLY)
        try:
            os.lseek(fd, size, os.SEEK_DATA)
            return "data past the source disk's end"
        except OSError:  # ENXIO: no data after `size`
            pass
        finally:
            os.close(fd)
        return sha256(target["device_path"], size)

    def check_disks(self, vm_id, job, kind, converted=False):
        """Compares every disk of the VM with its source by sha256. `converted`: the cutover
        converted the guest after the final pass, so the disks differ by design; their
        digests are recorded, not compared (the boot after cutover is their check)."""
        vm = self.vms[vm_id]
        targets = self.disk_targets(vm_id)
        job_disks = {str(d["disk_key"]): d for d in job.get("disks", [])}
        for disk in vm["disks"]:
            key = str(disk["key"])
            jd = job_disks.get(key, {})
            src, dst = sha256(disk["flat_file"]), self.target_sha256(vm_id, disk, targets[key])
            entry = {"vm": vm["name"], "disk": key, "type": kind,
                     "bytes_moved": int(jd.get("bytes_done", 0)),
                     "seconds": round(disk_seconds(jd, job), 3),
                     "source_sha256": src, "target_sha256": dst}
            if converted:
                entry["converted"] = True
            self.passes.append(entry)
            verdict = ("converted for KVM after the pass" if converted else
                       "identical" if src == dst else "DIFFERENT")
            self.log(f"   {vm['name']} disk {key}: moved {entry['bytes_moved'] / MIB:.1f} MiB in "
                     f"{entry['seconds']:.2f} s; sha256 {src[:16]}… {verdict}")
            if src != dst and not converted:
                self.failures.append(f"{kind} pass: disk {key} of {vm['name']} differs from its source")

    def guest_writes(self, blocks_per_disk=40, seed=7):
        """The running guests write: scattered 64 KiB blocks change on every disk. Not on
        disks made from given images: random blocks would break a real guest's filesystem."""
        if self.disk_images:
            return 0
        rng = random.Random(seed)
        n = 0
        for vm in self.vms.values():
            for disk in vm["disks"]:
                written = []
                with open(disk["flat_file"], "r+b") as f:
                    for _ in range(blocks_per_disk):
                        offset = rng.randrange(disk["capacity_bytes"] // 65536) * 65536
                        f.seek(offset)
                        f.write(os.urandom(65536))
                        written.append(offset)
                        n += 1
                journal_writes(disk["flat_file"], [(o, 65536) for o in written])
        return n

    def lab_stats(self):
        """The CBT shim's /lab/stats (calls and seconds per SOAP method, in vcsim and in the
        shim: tests/lab/vcsim/cbt_shim.py); {} when it cannot be read."""
        url = self.lab["vcenter_url"].rstrip("/")
        url = url[: -len("/sdk")] if url.endswith("/sdk") else url
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the lab's throwaway certificate, on loopback
        try:
            with urllib.request.urlopen(url + "/lab/stats", context=ctx, timeout=10) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return {}

    def snapshots_created(self):
        """How many CreateSnapshot_Task calls the lab's vCenter answered so far; None when
        the shim's stats cannot be read."""
        stats = self.lab_stats()
        return stats["calls"].get("CreateSnapshot_Task", 0) if stats else None

    def cutover(self, vm_id, shutdown_timeout=60):
        """Cuts the VM over; returns (job, downtime). Sets cutover_snapshots: how many
        snapshots vCenter took during it (None: unknown). The source is off for the final
        pass, which therefore takes none (src/source/vmware_source.h)."""
        t0 = time.monotonic()
        before = self.snapshots_created()
        j = self.oma.call("POST", f"/api/v1/vms/{vm_id}/cutover", {"shutdown_timeout_seconds": shutdown_timeout})
        job = self.wait_job(j["job_id"], f"cutover of {self.vms[vm_id]['name']}")
        after = self.snapshots_created()
        self.cutover_snapshots = None if before is None or after is None else after - before
        elapsed = time.monotonic() - t0
        if job["status"] != "completed":
            raise LabError(f"cutover of {self.vms[vm_id]['name']} ended {job['status']}: {job.get('error')}")
        self.check_disks(vm_id, job, "final", converted=self.convert_guests)
        return job, cutover_downtime(job, elapsed)

    def boot_check(self, vm_id, timeout=3600):
        """A boot check through the OMA's API, as an operator starts one (POST
        /api/v1/vms/{id}/boot-check): overlays of the replicas converted and booted. Waits
        for its job; returns the stored result (GET .../boot-check, without the picture)."""
        j = self.oma.call("POST", f"/api/v1/vms/{vm_id}/boot-check")
        name = self.vms[vm_id]["name"]
        job = self.wait_job(j["job_id"], f"boot check of {name}", timeout=timeout)
        try:
            result = self.oma.call("GET", f"/api/v1/vms/{vm_id}/boot-check")
        except LabError as e:  # e.g. the inspection failed: no result stored
            raise LabError(f"boot check of {name} ended {job['status']}: {job.get('error')} ({e})") from None
        result.pop("screenshot_base64", None)
        result["job_status"], result["job_error"] = job["status"], job.get("error")
        return result

    def vm_summary(self, vm_id):
        """The VM as GET /api/v1/vms lists it (predicted downtime, last boot check...)."""
        for vm in self.oma.call("GET", "/api/v1/vms")["vms"]:
            if vm["vm_id"] == vm_id:
                return vm
        raise LabError(f"the OMA does not list VM {vm_id}")


def disk_seconds(job_disk, job):
    """The pass's wall time from the OMA's own record (milliseconds): created to finished."""
    if job.get("created_at") and job.get("finished_at"):
        return (job["finished_at"] - job["created_at"]) / 1000.0
    return 0.0


def cutover_downtime(job, elapsed):
    """From the start of the final pass (which begins by shutting the source down) to the end
    of the cutover,
    from the job's own step times (milliseconds); the whole job when there is no such step."""
    steps = job.get("steps", [])
    off = next((s for s in steps if s.get("name") in ("final-pass", "shutdown", "power-off")), None)
    if off and off.get("started_at") and job.get("finished_at"):
        return (job["finished_at"] - off["started_at"]) / 1000.0
    return elapsed
