#!/usr/bin/env python3
"""CloudStack simulator: a strict test double of the Apache CloudStack API subset that
MigrateKit OSSEA uses (volumes, VMs, snapshots, tags, async jobs, paged lists).

It speaks CloudStack's shapes: GET or POST on /client/api with command=..., response=json,
apiKey and signature; answers {"<command>response": {...}} with the API reference's field
names. Every request's signature is verified (401 with errortext otherwise). Asynchronous
commands return a jobid at once and run as real jobs that take --job-delay seconds and can
be made to fail or hang. Volumes are sparse files under --state-dir; attaching one to the
OMA's VM creates /dev/disk/by-id-style links "virtio-<first 20 hex of the UUID>" in
--by-id-dir pointing at the file (removed on detach), so data written there is real.

It refuses what CloudStack refuses: attaching a volume attached elsewhere, deleting an
attached volume, a second root disk, starting a VM without a root disk, a page size over
the limit, an unknown id. And the rules real clouds apply on default settings:

* a volume from a disk offering is Allocated until its first attach makes it Ready (no
  snapshot before that);
* a VM holds at most its hypervisor's data volumes (listHypervisorCapabilities'
  maxdatavolumeslimit, --max-data-volumes: 32 for KVM, every VM here is KVM): the next
  attachVolume's job fails with CloudStack's InvalidParameterValueException (431); a
  volume may not exceed --custom-disk-max-gb
  (custom.diskoffering.size.max, listCapabilities' customdiskofferingmaxsize);
* a volume attached to a running VM cannot be snapshotted unless --kvm-snapshot-enabled
  (kvm.snapshot.enabled is false by default);
* destroyVirtualMachine with expunge=true needs an admin account, or
  --allow-user-expunge (allow.user.expunge.recover.vm), when --user-account is set;
* VM host names are RFC 1123 labels (letters, digits, hyphens, 1-63, not starting with a
  digit or hyphen, not ending with a hyphen);
* iptonetworklist is a map keyed by network: two entries for one network give one NIC
  (the last one's MAC); addNicToVirtualMachine refuses a second NIC in a network;
* a custom service offering without a CPU speed needs details cpuSpeed, and its
  mincpunumber/maxcpunumber/minmemory/maxmemory details bound cpuNumber and memory;
* attaching or detaching volumes of a VM with VM snapshots or a backup offering is
  refused (--oma-vm-snapshot, --oma-backup-offering put the OMA's VM in that state);
* with --enforce-post-and-expires (enforce.post.requests.and.timestamps), a request
  without signatureversion=3 and an expires at most 15 minutes ahead is refused, and so
  is a state-changing command sent by GET; an expires in the past is always refused;
* a command that does not exist or is denied is errorcode 432 in an "errorresponse";
* deployVirtualMachine's boottype is BIOS or UEFI and bootmode LEGACY or SECURE (case
  ignored, as DeployVMCmd reads them); UEFI needs a bootmode (DeployVMCmd.getDetails()
  dereferences it), BIOS takes LEGACY only; the VM answers boottype/bootmode;
* a VM's OS type (guestosid/ostypeid) is its template's until updateVirtualMachine
  changes it, which this simulator allows only on a stopped VM; listOsTypes lists a
  seeded subset of CloudStack's guest_os table (description, keyword and oscategoryid
  filter as the real one: description and keyword are a case-insensitive LIKE %x%).

The signature is checked as ApiServer.verifyRequest computes it: parameter names sorted
as received (case-sensitively), values URL-encoded like Java's URLEncoder, the joined
string lower-cased. With --disk-bus scsi the OMA's disks appear as
scsi-0QEMU_QEMU_HARDDISK_<serial> (an OMA whose first disk is on virtio-scsi) instead of
virtio-<serial>; the serial is the first 20 hex digits of the volume UUID.

Control endpoints (tests only, unauthenticated, loopback):
  POST /control/fail   {"command": "attachVolume", "how": "job"|"error"|"hang"|"late"|
                        "http"|"drop"|"lost", "errorcode": 530, "errortext": "...",
                        "status": 503, "skip": 0, "count": 1, "params": {"id": "..."}}
       makes the next `count` calls of the command (after `skip` that pass; only calls
       with those parameter values when "params" is given) fail: "error"
       answers at once with HTTP errorcode (CloudStack's error object), "job" ends the job
       with jobstatus 2, "hang" leaves the job pending for ever, "late" leaves it pending
       while the client only polls it and runs it (successfully) as soon as any other
       request arrives: a job that completes after the client gave up on it. What a proxy
       or the network in front of the management server does: "http" answers HTTP
       `status` (503) with an HTML page and runs nothing, "drop" closes the connection
       without an answer and runs nothing, "lost" runs the command to its end (its job
       too) and then answers 504 with an HTML page (the client never learns the ids).
       Rules apply to queryAsyncJobResult too (error, http, drop).
  POST /control/clear  removes every failure rule.
  GET  /control/state  the whole state as JSON (volumes, vms, snapshots, jobs, calls).

Several OMA VMs: --oma-vm-id is the first (by-id links in --by-id-dir); each
--oma-vm ID=DIR adds one more running OMA VM ("oma-2", "oma-3", ...) whose disks appear
in DIR, as each OMA VM of a site with several OMA nodes sees only its own disks. The
data-volume cap is per VM: one OMA VM full does not stop attaching to another.

With --tls-cert/--tls-key it serves https instead. The process writes its port to --port-file once listening (it binds port 0, so there is no
race for a free port) and stops on SIGTERM.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GiB = 1024 ** 3


class ProxyFailure(Exception):
    """What a proxy in front of the management server answers: HTTP status, an HTML page."""

    def __init__(self, status):
        super().__init__(f"HTTP {status}")
        self.status = status


class Dropped(Exception):
    """The connection closes without an answer."""


class ApiFailure(Exception):
    """A CloudStack error: errorcode (HTTP status too) and errortext."""

    def __init__(self, errorcode, errortext):
        super().__init__(errortext)
        self.errorcode = errorcode
        self.errortext = errortext


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime())


SAFE = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.*")


def encode_value(v):
    """Java's URLEncoder with spaces as %20, as CloudStack's server encodes to verify."""
    return "".join(chr(b) if b in SAFE else "%%%02X" % b for b in v.encode())


def expected_signature(params, secret):
    # As ApiServer.verifyRequest: names sorted as received, then the whole string lower-cased.
    text = "&".join(f"{k}={encode_value(v)}" for k, v in sorted(params.items())).lower()
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


HOST_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}$")
READ_COMMAND_RE = re.compile(r"^(list|query|get)")


def parse_expires(text):
    """CloudStack's DateUtil.parseTZDateString: yyyy-MM-dd'T'HH:mm:ssZ."""
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def indexed(params, prefix):
    """Collects map parameters such as tags[0].key / tags[0].value into a list of dicts."""
    out = {}
    for k, v in params.items():
        if k.lower().startswith(prefix.lower() + "["):
            idx, _, field = k[len(prefix) + 1:].partition("].")
            out.setdefault(int(idx), {})[field.lower()] = v
    return [out[i] for i in sorted(out)]


class Sim:
    ASYNC = {
        "createVolume", "attachVolume", "detachVolume", "createTags", "deleteTags",
        "deployVirtualMachine", "startVirtualMachine", "stopVirtualMachine",
        "destroyVirtualMachine", "createSnapshot", "revertSnapshot", "deleteSnapshot",
        "resizeVolume", "addNicToVirtualMachine",
    }

    def __init__(self, args, secret):
        self.args = args
        self.secret = secret
        self.lock = threading.RLock()
        self.jobs = {}
        self.late_jobs = {}  # job id -> (command, params, handler) of "late" jobs
        self.volumes = {}
        self.vms = {}
        self.snapshots = {}
        self.tags = []
        self.calls = []
        self.rules = []
        os.makedirs(os.path.join(args.state_dir, "volumes"), exist_ok=True)
        # OMA VM id -> the by-id directory where its attached volumes appear.
        self.oma_by_id = {args.oma_vm_id: args.by_id_dir}
        for spec in args.oma_vm:
            vm_id, sep, by_id = spec.partition("=")
            if not sep or not vm_id or not by_id or vm_id in self.oma_by_id:
                raise SystemExit(f"--oma-vm {spec!r}: expected ID=BY_ID_DIR with an id not used before")
            self.oma_by_id[vm_id] = by_id
        for by_id in self.oma_by_id.values():
            os.makedirs(by_id, exist_ok=True)
        self.account = "admin"
        self.domainid = "d0000000-0000-4000-8000-000000000001"
        self.zone = {"id": "z0000000-0000-4000-8000-000000000001", "name": "zone-1",
                     "allocationstate": "Enabled", "networktype": "Advanced"}
        self.disk_offerings = [
            {"id": "do000000-0000-4000-8000-000000000001", "name": "custom",
             "displaytext": "Custom size", "iscustomized": True, "disksize": 0},
            {"id": "do000000-0000-4000-8000-000000000002", "name": "small-5g",
             "displaytext": "5 GiB", "iscustomized": False, "disksize": 5},
        ]
        self.service_offerings = [
            {"id": "so000000-0000-4000-8000-000000000001", "name": "custom",
             "displaytext": "Custom CPU and memory", "iscustomized": True,
             "cpunumber": None, "memory": None, "cpuspeed": None,
             "serviceofferingdetails": {"mincpunumber": "1", "maxcpunumber": "8",
                                        "minmemory": "512", "maxmemory": "16384"}},
            {"id": "so000000-0000-4000-8000-000000000002", "name": "medium",
             "displaytext": "2 vCPU 4 GiB", "iscustomized": False, "cpunumber": 2,
             "memory": 4096, "cpuspeed": 2000},
        ]
        self.templates = [
            {"id": "t0000000-0000-4000-8000-000000000001", "name": "linux-base",
             "isready": True, "status": "Download Complete", "size": 1 * GiB,
             "zoneid": self.zone["id"], "templatetype": "USER", "hypervisor": "KVM",
             "ostypeid": "os000000-0000-4000-8000-000000000002", "ostypename": "Other Linux (64-bit)"},
            {"id": "t0000000-0000-4000-8000-000000000002", "name": "still-downloading",
             "isready": False, "status": "35% Downloaded", "size": 1 * GiB,
             "zoneid": self.zone["id"], "templatetype": "USER", "hypervisor": "KVM",
             "ostypeid": "os000000-0000-4000-8000-000000000002", "ostypename": "Other Linux (64-bit)"},
            {"id": "t0000000-0000-4000-8000-000000000003", "name": "windows-base",
             "isready": True, "status": "Download Complete", "size": 1 * GiB,
             "zoneid": self.zone["id"], "templatetype": "USER", "hypervisor": "KVM",
             "ostypeid": "os000000-0000-4000-8000-000000000040", "ostypename": "Windows Server 2019 (64-bit)"},
            {"id": "t0000000-0000-4000-8000-000000000004", "name": "debian-base",
             "isready": True, "status": "Download Complete", "size": 1 * GiB,
             "zoneid": self.zone["id"], "templatetype": "USER", "hypervisor": "KVM",
             "ostypeid": "os000000-0000-4000-8000-000000000012", "ostypename": "Debian GNU/Linux 12 (64-bit)"},
        ]
        # A subset of CloudStack's guest_os table (ids made up; descriptions and categories
        # as CloudStack ships them), in its order.
        categories = {1: "CentOS", 2: "Debian", 4: "RedHat", 6: "Windows", 7: "Other", 10: "Ubuntu"}
        os_rows = [
            (1, 7, "Other (64-bit)"), (2, 7, "Other Linux (64-bit)"), (3, 7, "Other PV (64-bit)"),
            (4, 7, "Other Linux (32-bit)"),
            (10, 2, "Debian GNU/Linux 10 (64-bit)"), (11, 2, "Debian GNU/Linux 11 (64-bit)"),
            (12, 2, "Debian GNU/Linux 12 (64-bit)"), (13, 2, "Debian GNU/Linux 12 (32-bit)"),
            (20, 10, "Ubuntu 20.04 LTS"), (21, 10, "Ubuntu 22.04 LTS"), (22, 10, "Ubuntu 24.04 LTS"),
            (30, 4, "Red Hat Enterprise Linux 8.0"), (31, 4, "Red Hat Enterprise Linux 9"),
            (32, 1, "CentOS 7"), (33, 1, "CentOS 8"),
            (40, 6, "Windows Server 2019 (64-bit)"), (41, 6, "Windows Server 2022 (64-bit)"),
            (42, 6, "Windows 10 (64-bit)"),
        ]
        self.os_types = [{"id": "os000000-0000-4000-8000-%012d" % n, "description": d, "name": d,
                          "oscategoryid": "oc000000-0000-4000-8000-%012d" % c,
                          "oscategoryname": categories[c], "isuserdefined": False,
                          "fordisplay": True}
                         for n, c, d in os_rows]
        self.networks = [
            {"id": "n0000000-0000-4000-8000-000000000001", "name": "prod",
             "zoneid": self.zone["id"], "state": "Implemented", "type": "Isolated",
             "allowsmac": True},
            {"id": "n0000000-0000-4000-8000-000000000002", "name": "test",
             "zoneid": self.zone["id"], "state": "Implemented", "type": "Isolated",
             "allowsmac": True},
            {"id": "n0000000-0000-4000-8000-000000000003", "name": "shared-nomac",
             "zoneid": self.zone["id"], "state": "Setup", "type": "Shared",
             "allowsmac": False},
        ]
        oma_id = args.oma_vm_id
        self.vms[oma_id] = self.new_vm(oma_id, "oma", "Running",
                                       [self.new_nic(self.networks[0], args.oma_mac)])
        for n, vm_id in enumerate(list(self.oma_by_id)[1:], start=2):
            self.vms[vm_id] = self.new_vm(vm_id, f"oma-{n}", "Running",
                                          [self.new_nic(self.networks[0], "02:00:00:00:0a:%02x" % n)])
        # One row per hypervisor and version, as the hypervisor_capabilities table has.
        self.hypervisor_caps = [
            {"id": "hc000000-0000-4000-8000-000000000001", "hypervisor": "KVM",
             "hypervisorversion": "default", "maxguestslimit": 50,
             "maxdatavolumeslimit": args.max_data_volumes,
             "maxhostspercluster": 50, "securitygroupenabled": True,
             "storagemotionenabled": True, "vmsnapshotenabled": True}]
        if args.oma_account:  # the OMA's VM in an account the API key does not act for
            self.vms[oma_id]["account"] = args.oma_account
        if args.oma_backup_offering:
            self.vms[oma_id]["backupofferingid"] = args.oma_backup_offering
            self.vms[oma_id]["backupofferingname"] = "nightly"
        self.vm_snapshots = []
        if args.oma_vm_snapshot:
            self.vm_snapshots.append({"id": str(uuid.uuid4()), "name": "oma-before-upgrade",
                                      "virtualmachineid": oma_id, "state": "Ready",
                                      "type": "Disk", "created": now_iso()})

    # ---- model helpers -------------------------------------------------------------

    def new_nic(self, network, mac):
        return {"id": str(uuid.uuid4()), "networkid": network["id"],
                "networkname": network["name"], "macaddress": mac,
                "isdefault": False, "type": network["type"]}

    def new_vm(self, vm_id, name, state, nics, offering=None, template=None, details=None):
        if nics:
            nics[0]["isdefault"] = True
        offering = offering or self.service_offerings[1]
        details = details or {}
        return {"id": vm_id, "name": name, "displayname": name, "state": state,
                "zoneid": self.zone["id"], "zonename": self.zone["name"],
                "account": self.account, "domainid": self.domainid,
                "serviceofferingid": offering["id"],
                "serviceofferingname": offering["name"],
                "templateid": template["id"] if template else None,
                "guestosid": template["ostypeid"] if template else None,
                "ostypeid": template["ostypeid"] if template else None,
                "osdisplayname": template["ostypename"] if template else None,
                "boottype": "BIOS", "bootmode": "LEGACY",
                "cpunumber": int(details.get("cpunumber", offering["cpunumber"] or 1)),
                "memory": int(details.get("memory", offering["memory"] or 512)),
                "nic": nics, "created": now_iso(), "hypervisor": "KVM",
                "instancename": "i-2-%d-VM" % (len(self.vms) + 10)}

    def volume_path(self, vol_id):
        return os.path.join(self.args.state_dir, "volumes", vol_id + ".img")

    def link_path(self, vol_id, vm_id):
        """Where the volume appears inside OMA VM vm_id (None: vm_id is no OMA VM)."""
        by_id = self.oma_by_id.get(vm_id)
        if by_id is None:
            return None
        serial = vol_id.replace("-", "")[:20]
        prefix = "scsi-0QEMU_QEMU_HARDDISK_" if self.args.disk_bus == "scsi" else "virtio-"
        return os.path.join(by_id, prefix + serial)

    def max_data_volumes(self, vm):
        """maxdatavolumeslimit of the VM's hypervisor (getMaxDataVolumesSupported: the
        row of its version, else the hypervisor's "default" row)."""
        rows = [c for c in self.hypervisor_caps if c["hypervisor"] == vm["hypervisor"]]
        row = next((c for c in rows if c["hypervisorversion"] == "default"), rows[0] if rows else None)
        if row is None:
            raise ApiFailure(530, f"no hypervisor capabilities for {vm['hypervisor']}")
        return row["maxdatavolumeslimit"]

    def new_volume(self, name, size, vtype, offering_id=None, vol_id=None):
        vol_id = vol_id or str(uuid.uuid4())
        with open(self.volume_path(vol_id), "wb") as f:
            f.truncate(size)
        vol = {"id": vol_id, "name": name, "size": size, "type": vtype,
               "state": "Allocated" if vtype == "DATADISK" else "Ready", "zoneid": self.zone["id"], "zonename": self.zone["name"],
               "diskofferingid": offering_id, "account": self.account,
               "domainid": self.domainid, "created": now_iso(),
               "virtualmachineid": None, "deviceid": None, "storagetype": "shared"}
        self.volumes[vol_id] = vol
        return vol

    def volume_view(self, vol):
        out = {k: v for k, v in vol.items() if v is not None}
        if vol["virtualmachineid"]:
            vm = self.vms.get(vol["virtualmachineid"])
            if vm:
                out["vmname"] = vm["name"]
                out["vmstate"] = vm["state"]
        out["tags"] = [dict(t) for t in self.tags if t["resourceid"] == vol["id"]]
        return out

    def vm_view(self, vm):
        out = dict(vm)
        out["nic"] = [dict(n) for n in vm["nic"]]
        return out

    def get(self, table, key, what, params):
        ident = params.get(key)
        if not ident:
            raise ApiFailure(431, f"Unable to execute API command due to missing parameter {key}")
        obj = table.get(ident)
        if obj is None:
            raise ApiFailure(431, f"Unable to execute API command due to invalid value. "
                                  f"Invalid parameter {key} value={ident} due to incorrect "
                                  f"long value format, or entity does not exist or due to "
                                  f"incorrect parameter annotation for the field in api cmd class.")
        return obj

    def require(self, params, *keys):
        for k in keys:
            if not params.get(k):
                raise ApiFailure(431, f"Unable to execute API command "
                                      f"{params.get('command', '').lower()} due to missing "
                                      f"parameter {k}")

    # ---- paging --------------------------------------------------------------------

    def page(self, params, items, key):
        limit = self.args.max_page_size
        pagesize = params.get("pagesize")
        pg = params.get("page")
        if pagesize is not None:
            try:
                pagesize = int(pagesize)
            except ValueError:
                raise ApiFailure(431, "Unable to execute API command due to invalid value "
                                      "for parameter pagesize")
            if pagesize > limit:
                raise ApiFailure(431, f"Page size can't exceed max allowed page size value: "
                                      f"{limit}")
            if pg is None:
                raise ApiFailure(431, "Page parameter is required when pagesize is specified")
        else:
            pagesize = limit  # CloudStack's default.page.size: the rest is silently cut
        start = (int(pg or 1) - 1) * pagesize
        chunk = items[start:start + pagesize]
        if not items:
            return {}
        return {"count": len(items), key: chunk}

    # ---- failure injection ---------------------------------------------------------

    def take_rule(self, command, params):
        with self.lock:
            for rule in self.rules:
                if rule["command"].lower() != command.lower() or rule["count"] <= 0:
                    continue
                if any(params.get(k) != v for k, v in rule.get("params", {}).items()):
                    continue
                if rule.get("skip", 0) > 0:
                    rule["skip"] -= 1
                    return None
                rule["count"] -= 1
                return dict(rule)
        return None

    # ---- request entry -------------------------------------------------------------

    def handle(self, params, method="GET"):
        command = params.get("command", "")
        self.verify(params)
        if (self.args.enforce_post_and_expires and method != "POST"
                and not READ_COMMAND_RE.match(command)):
            raise ApiFailure(431, f"State changing command {command} needs to be sent using "
                                  f"POST request")
        if params.get("response") != "json":
            raise ApiFailure(431, "this simulator answers only response=json")
        handler = getattr(self, "cmd_" + command, None)
        if command in self.args.deny_api or (handler is None and
                                             command != "queryAsyncJobResult"):
            raise ApiFailure(432, f"The given command:{command} does not exist or it is not "
                                  f"available for user")
        with self.lock:
            self.calls.append({"command": command, "method": method,
                               "params": {k: v for k, v in params.items()
                                          if k not in ("signature", "apiKey", "apikey")}})
        polled = params.get("jobid") if command == "queryAsyncJobResult" else None
        self.run_late_jobs(except_job=polled)
        rule = self.take_rule(command, params)
        how = rule["how"] if rule else None
        if how == "error":
            raise ApiFailure(rule.get("errorcode", 431),
                             rule.get("errortext", f"injected failure of {command}"))
        if how == "http":
            raise ProxyFailure(rule.get("status", 503))
        if how == "drop":
            raise Dropped()
        if command == "queryAsyncJobResult":
            return self.query_job(params)
        if command in self.ASYNC:
            answer = self.start_job(command, params, handler, rule)
        else:
            with self.lock:
                answer = handler(params)
        if how == "lost":
            raise ProxyFailure(504)  # done, but the answer never reaches the client
        return answer

    def verify(self, params):
        given = params.get("signature")
        api_key = params.get("apiKey") or params.get("apikey")
        signed = {k: v for k, v in params.items() if k != "signature"}
        if (not given or api_key != self.args.api_key
                or not hmac.compare_digest(given, expected_signature(signed, self.secret))
                or not self.fresh(params)):
            raise ApiFailure(401, "unable to verify user credentials and/or request signature")

    def fresh(self, params):
        """signatureVersion 3 and expires, as ApiServer checks them (names case-insensitive)."""
        lower = {k.lower(): v for k, v in params.items()}
        if lower.get("signatureversion") == "3":
            expires = parse_expires(lower.get("expires", ""))
            if expires is None or expires < time.time():
                return False
            if self.args.enforce_post_and_expires and expires > time.time() + 15 * 60:
                return False
            return True
        return not self.args.enforce_post_and_expires

    # ---- jobs ----------------------------------------------------------------------

    def start_job(self, command, params, handler, rule):
        with self.lock:
            pre = getattr(self, "pre_" + command, None)
            early = pre(params) if pre else {}
            job_id = str(uuid.uuid4())
            self.jobs[job_id] = {"jobid": job_id, "cmd": command, "jobstatus": 0,
                                 "jobprocstatus": 0, "jobresultcode": 0,
                                 "created": now_iso(), "accountid": self.domainid,
                                 "userid": self.domainid}
        how = rule["how"] if rule else None
        if how == "lost":
            self.run_job(job_id, command, params, handler, None, delay=False)
        elif how == "late":
            with self.lock:
                self.late_jobs[job_id] = (command, params, handler)
        elif how != "hang":
            t = threading.Thread(target=self.run_job,
                                 args=(job_id, command, params, handler, rule), daemon=True)
            t.start()
        return dict(early, jobid=job_id)

    def run_late_jobs(self, except_job=None):
        """Runs every "late" job but the one being polled: the client turned to something
        else, and the job ends now, after the client gave up on it."""
        with self.lock:
            due = [(j, args) for j, args in self.late_jobs.items() if j != except_job]
            for job_id, (command, params, handler) in due:
                del self.late_jobs[job_id]
                self.run_job(job_id, command, params, handler, None, delay=False)

    def run_job(self, job_id, command, params, handler, rule, delay=True):
        if delay:
            time.sleep(self.args.job_delay)
        with self.lock:
            job = self.jobs[job_id]
            try:
                if rule and rule["how"] == "job":
                    raise ApiFailure(rule.get("errorcode", 530),
                                     rule.get("errortext", f"injected failure of {command}"))
                result = handler(params)
                job.update(jobstatus=1, jobresulttype="object", jobresult=result)
            except ApiFailure as e:
                job.update(jobstatus=2, jobresultcode=530, jobresulttype="object",
                           jobresult={"errorcode": e.errorcode, "errortext": e.errortext})
            except Exception as e:  # a simulator bug must show, not hang the client
                job.update(jobstatus=2, jobresultcode=530, jobresulttype="object",
                           jobresult={"errorcode": 530, "errortext": f"simulator error: {e!r}"})

    def query_job(self, params):
        with self.lock:
            job = self.get(self.jobs, "jobid", "job", params)
            return dict(job)

    # ---- zones, offerings, templates, networks, accounts ---------------------------

    def filter_id(self, params, items):
        if params.get("id"):
            items = [i for i in items if i["id"] == params["id"]]
        if params.get("name"):
            items = [i for i in items if i["name"] == params["name"]]
        return items

    def cmd_listZones(self, p):
        return self.page(p, self.filter_id(p, [self.zone]), "zone")

    def cmd_listDiskOfferings(self, p):
        return self.page(p, self.filter_id(p, self.disk_offerings), "diskoffering")

    def cmd_listServiceOfferings(self, p):
        items = [{k: v for k, v in o.items() if v is not None}
                 for o in self.filter_id(p, self.service_offerings)]
        return self.page(p, items, "serviceoffering")

    def cmd_listTemplates(self, p):
        self.require(p, "templatefilter")
        return self.page(p, self.filter_id(p, self.templates), "template")

    def cmd_listNetworks(self, p):
        items = self.filter_id(p, self.networks)
        if p.get("zoneid"):
            items = [n for n in items if n["zoneid"] == p["zoneid"]]
        return self.page(p, items, "network")

    def cmd_listApis(self, p):
        names = sorted(n[4:] for n in dir(self) if n.startswith("cmd_"))
        names.append("queryAsyncJobResult")
        names = [n for n in names if n not in self.args.deny_api]
        if p.get("name"):
            if p["name"] not in names:
                raise ApiFailure(431, f"The API {p['name']} does not exist or is not available "
                                      f"for the account")
            names = [p["name"]]
        return {"count": len(names),
                "api": [{"name": n, "isasync": n in self.ASYNC} for n in names]}

    def cmd_listAccounts(self, p):
        return self.page(p, [{"id": self.domainid, "name": self.account,
                              "domainid": self.domainid, "accounttype": self.account_type(),
                              "state": "enabled"}], "account")

    def account_type(self):
        return 0 if self.args.user_account else 1  # 0: user, 1: root admin

    def cmd_listCapabilities(self, p):
        return {"capability": {
            "cloudstackversion": "4.19.1.0", "securitygroupsenabled": False,
            "kvmsnapshotenabled": self.args.kvm_snapshot_enabled,
            "allowuserexpungerecovervm": self.args.allow_user_expunge,
            "allowuserviewdestroyedvm": False,
            "customdiskofferingmaxsize": self.args.custom_disk_max_gb,
            "customdiskofferingminsize": 1}}

    def cmd_listOsTypes(self, p):
        items = self.filter_id(p, self.os_types)
        if p.get("oscategoryid"):
            items = [o for o in items if o["oscategoryid"] == p["oscategoryid"]]
        for key in ("description", "keyword"):
            if p.get(key):
                items = [o for o in items if p[key].lower() in o["description"].lower()]
        return self.page(p, items, "ostype")

    def cmd_listHypervisorCapabilities(self, p):
        if self.args.user_account:
            raise ApiFailure(432, "The given command:listHypervisorCapabilities does not exist "
                                  "or it is not available for user")
        caps = [dict(c) for c in self.hypervisor_caps]
        if p.get("hypervisor"):
            caps = [c for c in caps if c["hypervisor"].lower() == p["hypervisor"].lower()]
        return self.page(p, caps, "hypervisorCapabilities")

    def cmd_listVMSnapshot(self, p):
        items = self.vm_snapshots
        if p.get("virtualmachineid"):
            items = [s for s in items if s["virtualmachineid"] == p["virtualmachineid"]]
        return self.page(p, items, "vmSnapshot")

    # ---- volumes -------------------------------------------------------------------

    def cmd_listVolumes(self, p):
        items = sorted(self.volumes.values(), key=lambda v: v["created"] + v["id"])
        items = self.filter_id(p, items)
        if p.get("virtualmachineid"):
            items = [v for v in items if v["virtualmachineid"] == p["virtualmachineid"]]
        if p.get("type"):
            items = [v for v in items if v["type"] == p["type"].upper()]
        views = [self.volume_view(v) for v in items]
        for want in indexed(p, "tags"):
            views = [v for v in views
                     if any(t["key"] == want.get("key") and t["value"] == want.get("value")
                            for t in v["tags"])]
        return self.page(p, views, "volume")

    def pre_createVolume(self, p):
        self.require(p, "name", "zoneid", "diskofferingid")
        if p["zoneid"] != self.zone["id"]:
            self.get({}, "zoneid", "zone", p)
        offering = next((o for o in self.disk_offerings if o["id"] == p["diskofferingid"]), None)
        if offering is None:
            self.get({}, "diskofferingid", "disk offering", p)
        if offering["iscustomized"] and not p.get("size"):
            raise ApiFailure(431, "This disk offering requires a custom size specified")
        if not offering["iscustomized"] and p.get("size"):
            raise ApiFailure(431, "This disk offering does not allow custom size")
        if offering["iscustomized"]:
            self.check_size(int(p["size"]))
        vol_id = str(uuid.uuid4())
        p["_id"] = vol_id
        return {"id": vol_id}

    def check_size(self, gb):
        if gb < 1 or gb > self.args.custom_disk_max_gb:
            raise ApiFailure(431, f"Volume size: {gb}GB is out of allowed range. Max: "
                                  f"{self.args.custom_disk_max_gb} Min:1")

    def check_vm_allows_volume_changes(self, vm, verb):
        if any(s["virtualmachineid"] == vm["id"] for s in self.vm_snapshots):
            raise ApiFailure(431, f"Unable to {verb} volume, please specify a VM that does not "
                                  f"have VM snapshots")
        if vm.get("backupofferingid"):
            raise ApiFailure(431, f"Unable to {verb} volume, please specify a VM that does not "
                                  f"have any backups")

    def pre_resizeVolume(self, p):
        vol = self.get(self.volumes, "id", "volume", p)
        self.require(p, "size")
        gb = int(p["size"])
        self.check_size(gb)
        if gb * GiB < vol["size"] and p.get("shrinkok", "false").lower() != "true":
            raise ApiFailure(431, f"Going from existing size of {vol['size']} to size of "
                                  f"{gb * GiB} would shrink the volume. Need to sign off by "
                                  f"supplying the shrinkok parameter with value of true.")
        return {}

    def cmd_resizeVolume(self, p):
        vol = self.get(self.volumes, "id", "volume", p)
        vol["size"] = int(p["size"]) * GiB
        with open(self.volume_path(vol["id"]), "r+b") as f:
            f.truncate(vol["size"])
        return {"volume": self.volume_view(vol)}

    def cmd_createVolume(self, p):
        offering = next(o for o in self.disk_offerings if o["id"] == p["diskofferingid"])
        size = int(p["size"]) * GiB if offering["iscustomized"] else offering["disksize"] * GiB
        # The id announced when the job started.
        vol = self.new_volume(p["name"], size, "DATADISK", offering["id"], p["_id"])
        return {"volume": self.volume_view(vol)}

    def cmd_attachVolume(self, p):
        vol = self.get(self.volumes, "id", "volume", p)
        vm = self.get(self.vms, "virtualmachineid", "vm", p)
        if vol["virtualmachineid"]:
            raise ApiFailure(431, f"Volume {vol['name']} is already attached to VM "
                                  f"{self.vms[vol['virtualmachineid']]['name']}, please "
                                  f"detach it first")
        self.check_vm_allows_volume_changes(vm, "attach")
        attached = [v for v in self.volumes.values() if v["virtualmachineid"] == vm["id"]]
        data = [v for v in attached if v["type"] == "DATADISK"]
        limit = self.max_data_volumes(vm)
        if p.get("deviceid") != "0" and len(data) >= limit:
            raise ApiFailure(431, f"The specified VM already has the maximum number of data "
                                  f"disks ({limit}) attached. Please specify another VM.")
        device = p.get("deviceid")
        if device is not None:
            device = int(device)
            if device == 0 and any(v["type"] == "ROOT" for v in attached):
                raise ApiFailure(431, f"Vm {vm['name']} already has a root volume attached")
            if any(v["deviceid"] == device for v in attached):
                raise ApiFailure(431, f"Device {device} is used in VM {vm['name']}")
        else:
            used = {v["deviceid"] for v in attached}
            device = next(d for d in range(1, 64) if d != 3 and d not in used)
        if device == 0 and vm["state"] != "Stopped":
            raise ApiFailure(431, "Root volume can be attached only to a stopped VM")
        vol["virtualmachineid"] = vm["id"]
        vol["deviceid"] = device
        vol["state"] = "Ready"  # created on primary storage at its first attach
        if device == 0:
            vol["type"] = "ROOT"
        link = self.link_path(vol["id"], vm["id"])
        if link:
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(self.volume_path(vol["id"]), link)
        return {"volume": self.volume_view(vol)}

    def cmd_detachVolume(self, p):
        vol = self.get(self.volumes, "id", "volume", p)
        if not vol["virtualmachineid"]:
            raise ApiFailure(431, f"Volume {vol['name']} is not attached to any VM")
        vm = self.vms[vol["virtualmachineid"]]
        self.check_vm_allows_volume_changes(vm, "detach")
        if vol["type"] == "ROOT" and vm["state"] != "Stopped":
            raise ApiFailure(431, "Root volume can be detached only from a stopped VM")
        link = self.link_path(vol["id"], vm["id"])
        if link and os.path.lexists(link):
            os.unlink(link)
        vol["virtualmachineid"] = None
        vol["deviceid"] = None
        # A detached root disk becomes a data disk again, as CloudStack does.
        vol["type"] = "DATADISK"
        return {"volume": self.volume_view(vol)}

    def cmd_deleteVolume(self, p):
        vol = self.get(self.volumes, "id", "volume", p)
        if vol["virtualmachineid"]:
            raise ApiFailure(431, "Please specify a volume that is not attached to any VM.")
        if any(s["volumeid"] == vol["id"] for s in self.snapshots.values()):
            raise ApiFailure(431, f"Volume {vol['name']} has snapshots, delete them first")
        self.drop_volume(vol)
        return {"success": True}

    def drop_volume(self, vol):
        os.unlink(self.volume_path(vol["id"]))
        del self.volumes[vol["id"]]
        self.tags = [t for t in self.tags if t["resourceid"] != vol["id"]]

    # ---- tags ----------------------------------------------------------------------

    def cmd_createTags(self, p):
        self.require(p, "resourceids", "resourcetype")
        if p["resourcetype"] != "Volume":
            raise ApiFailure(431, "this simulator tags only resourcetype=Volume")
        tags = indexed(p, "tags")
        if not tags:
            raise ApiFailure(431, "Unable to execute API command createtags due to missing "
                                  "parameter tags")
        for rid in p["resourceids"].split(","):
            self.get(self.volumes, "id", "volume", {"id": rid})
            for t in tags:
                if any(x["resourceid"] == rid and x["key"] == t["key"] for x in self.tags):
                    raise ApiFailure(431, f"tag {t['key']} already on resource {rid}")
                self.tags.append({"key": t["key"], "value": t["value"],
                                  "resourcetype": "Volume", "resourceid": rid,
                                  "account": self.account, "domainid": self.domainid})
        return {"success": True}

    def cmd_listTags(self, p):
        items = self.tags
        if p.get("resourceid"):
            items = [t for t in items if t["resourceid"] == p["resourceid"]]
        if p.get("key"):
            items = [t for t in items if t["key"] == p["key"]]
        return self.page(p, items, "tag")

    # ---- virtual machines ----------------------------------------------------------

    def cmd_listVirtualMachines(self, p):
        items = self.filter_id(p, sorted(self.vms.values(), key=lambda v: v["created"] + v["id"]))
        return self.page(p, [self.vm_view(v) for v in items], "virtualmachine")

    def pre_deployVirtualMachine(self, p):
        self.require(p, "serviceofferingid", "templateid", "zoneid")
        offering = next((o for o in self.service_offerings
                         if o["id"] == p["serviceofferingid"]), None)
        if offering is None:
            self.get({}, "serviceofferingid", "offering", p)
        template = next((t for t in self.templates if t["id"] == p["templateid"]), None)
        if template is None:
            self.get({}, "templateid", "template", p)
        if p["zoneid"] != self.zone["id"]:
            self.get({}, "zoneid", "zone", p)
        details = {d_k.lower(): d_v for d in indexed(p, "details") for d_k, d_v in d.items()}
        if offering["iscustomized"]:
            self.check_custom_offering(offering, details)
        self.boot_of(p)
        name = p.get("name", "")
        if name and not HOST_NAME_RE.match(name) or name.endswith("-"):
            raise ApiFailure(431, "Invalid name. Vm name can contain ASCII letters 'a' through "
                                  "'z', the digits '0' through '9', and the hyphen ('-'), must "
                                  "be between 1 and 63 characters long, and can't start or end "
                                  "with \"-\" and can't start with digit")
        nets = indexed(p, "iptonetworklist")
        if not nets and p.get("networkids"):
            nets = [{"networkid": n} for n in p["networkids"].split(",")]
        if not nets:
            raise ApiFailure(431, "Can't deploy a VM without a network in an advanced zone")
        for n in nets:
            net = next((x for x in self.networks if x["id"] == n.get("networkid")), None)
            if net is None:
                raise ApiFailure(431, f"Unable to find network by id {n.get('networkid')}")
            if n.get("mac") and not net["allowsmac"]:
                raise ApiFailure(431, f"Network {net['name']} does not allow a specified MAC "
                                      f"address")
            if n.get("mac") and any(nic["macaddress"] == n["mac"] and nic["networkid"] == net["id"]
                                    for vm in self.vms.values() for nic in vm["nic"]):
                raise ApiFailure(431, f"The MAC address {n['mac']} is already in use in "
                                      f"network {net['name']}")
        if name and any(v["name"] == name for v in self.vms.values()):
            raise ApiFailure(431, f"The vm with hostName {name} already exists in the network")
        p["_id"] = str(uuid.uuid4())
        return {"id": p["_id"]}

    def boot_of(self, p):
        """boottype and bootmode as DeployVMCmd reads them (trimmed, upper-cased enums)."""
        boot_type = p.get("boottype", "").strip().upper()
        boot_mode = p.get("bootmode", "").strip().upper()
        if boot_type and boot_type not in ("BIOS", "UEFI"):
            raise ApiFailure(431, f"Invalid bootType {p['boottype']}Specified for vm {p.get('name')} "
                                  f"Valid values are: [BIOS, UEFI]")
        if boot_mode and boot_mode not in ("LEGACY", "SECURE"):
            raise ApiFailure(431, f"Invalid bootMode {p['bootmode']}Specified for vm {p.get('name')} "
                                  f"Valid values are:  [LEGACY, SECURE]")
        if boot_type == "UEFI" and not boot_mode:
            raise ApiFailure(530, "java.lang.NullPointerException (boottype UEFI without a bootmode)")
        if boot_type != "UEFI" and boot_mode == "SECURE":
            raise ApiFailure(431, "Boot mode SECURE applies to boot type UEFI only")
        return boot_type or "BIOS", boot_mode or "LEGACY"

    def check_custom_offering(self, offering, details):
        if not ("cpunumber" in details and "memory" in details):
            raise ApiFailure(431, "cpuNumber and memory must be specified in details for a "
                                  "custom service offering")
        if offering.get("cpuspeed") is None:
            speed = details.get("cpuspeed", "")
            if not speed.isdigit() or int(speed) <= 0:
                raise ApiFailure(431, "Invalid cpu speed value, specify a value between 1 and "
                                      "2147483647")
        limits = offering.get("serviceofferingdetails", {})
        cpus, memory = int(details["cpunumber"]), int(details["memory"])
        lo, hi = int(limits.get("mincpunumber", 1)), int(limits.get("maxcpunumber", 2 ** 31 - 1))
        if not lo <= cpus <= hi:
            raise ApiFailure(431, f"Invalid CPU cores value, specify a value between {lo} and {hi}")
        lo, hi = int(limits.get("minmemory", 32)), int(limits.get("maxmemory", 2 ** 31 - 1))
        if not lo <= memory <= hi:
            raise ApiFailure(431, f"Invalid memory value, specify a value between {lo} and {hi}")

    def cmd_deployVirtualMachine(self, p):
        offering = next(o for o in self.service_offerings if o["id"] == p["serviceofferingid"])
        template = next(t for t in self.templates if t["id"] == p["templateid"])
        if not template["isready"]:
            raise ApiFailure(431, f"Template {template['name']} is not ready")
        details = {d_k.lower(): d_v for d in indexed(p, "details") for d_k, d_v in d.items()}
        nets = indexed(p, "iptonetworklist") or [{"networkid": n}
                                                 for n in p["networkids"].split(",")]
        # UserVmManagerImpl keeps iptonetworklist in a map keyed by network: a second entry
        # for a network replaces the first, so the VM gets one NIC per network.
        by_network = {}
        for n in nets:
            by_network.pop(n["networkid"], None)
            by_network[n["networkid"]] = n
        nets = list(by_network.values())
        nics = []
        for n in nets:
            net = next(x for x in self.networks if x["id"] == n["networkid"])
            mac = n.get("mac") or "02:00:%02x:%02x:%02x:%02x" % tuple(os.urandom(4))
            nics.append(self.new_nic(net, mac))
        name = p.get("name") or "VM-" + p["_id"]
        state = "Running" if p.get("startvm", "true").lower() == "true" else "Stopped"
        vm = self.new_vm(p["_id"], name, state, nics, offering, template, details)
        if p.get("displayname"):
            vm["displayname"] = p["displayname"]
        vm["boottype"], vm["bootmode"] = self.boot_of(p)
        self.vms[vm["id"]] = vm
        root = self.new_volume("ROOT-" + vm["id"][:8], template["size"], "ROOT")
        root["virtualmachineid"] = vm["id"]
        root["deviceid"] = 0
        return {"virtualmachine": self.vm_view(vm)}

    def pre_addNicToVirtualMachine(self, p):
        vm = self.get(self.vms, "virtualmachineid", "vm", p)
        net = next((x for x in self.networks if x["id"] == p.get("networkid")), None)
        if net is None:
            self.get({}, "networkid", "network", p)
        return {}

    def cmd_addNicToVirtualMachine(self, p):
        vm = self.get(self.vms, "virtualmachineid", "vm", p)
        net = next(x for x in self.networks if x["id"] == p["networkid"])
        if any(n["networkid"] == net["id"] for n in vm["nic"]):
            raise ApiFailure(530, f"A NIC already exists for VM:{vm['instancename']} in "
                                  f"network: {net['id']}")
        mac = p.get("macaddress")
        if mac and not net["allowsmac"]:
            raise ApiFailure(431, f"Network {net['name']} does not allow a specified MAC address")
        if mac and any(nic["macaddress"] == mac and nic["networkid"] == net["id"]
                       for v in self.vms.values() for nic in v["nic"]):
            raise ApiFailure(530, f"A NIC with this MAC address exists for network: {net['id']}")
        mac = mac or "02:00:%02x:%02x:%02x:%02x" % tuple(os.urandom(4))
        vm["nic"].append(self.new_nic(net, mac))
        return {"virtualmachine": self.vm_view(vm)}

    def cmd_updateVirtualMachine(self, p):
        vm = self.get(self.vms, "id", "vm", p)
        if p.get("ostypeid"):
            os_type = next((o for o in self.os_types if o["id"] == p["ostypeid"]), None)
            if os_type is None:
                self.get({}, "ostypeid", "os type", p)
            if vm["state"] != "Stopped":
                raise ApiFailure(431, f"Please stop VM {vm['name']} before changing its OS type")
            vm["guestosid"] = vm["ostypeid"] = os_type["id"]
            vm["osdisplayname"] = os_type["description"]
        if p.get("displayname"):
            vm["displayname"] = p["displayname"]
        return {"virtualmachine": self.vm_view(vm)}

    def cmd_startVirtualMachine(self, p):
        vm = self.get(self.vms, "id", "vm", p)
        if not any(v["virtualmachineid"] == vm["id"] and v["type"] == "ROOT"
                   for v in self.volumes.values()):
            raise ApiFailure(530, f"Unable to start VM {vm['name']}: no root volume found")
        vm["state"] = "Running"
        return {"virtualmachine": self.vm_view(vm)}

    def cmd_stopVirtualMachine(self, p):
        vm = self.get(self.vms, "id", "vm", p)
        if vm["id"] in self.oma_by_id:
            raise ApiFailure(431, "refusing to stop the OMA itself")
        vm["state"] = "Stopped"
        return {"virtualmachine": self.vm_view(vm)}

    def cmd_destroyVirtualMachine(self, p):
        vm = self.get(self.vms, "id", "vm", p)
        if vm["id"] in self.oma_by_id:
            raise ApiFailure(431, "refusing to destroy the OMA itself")
        if (p.get("expunge", "false").lower() == "true" and self.args.user_account
                and not self.args.allow_user_expunge):
            raise ApiFailure(531, "Parameter expunge can be passed by Admin only. Or when the "
                                  "allow.user.expunge.recover.vm key is set.")
        for vol in list(self.volumes.values()):
            if vol["virtualmachineid"] != vm["id"]:
                continue
            if vol["type"] == "ROOT":
                vol["virtualmachineid"] = None
                self.drop_volume(vol)  # the root disk goes with the VM
            else:
                vol["virtualmachineid"] = None
                vol["deviceid"] = None
        if p.get("expunge", "false").lower() == "true":
            del self.vms[vm["id"]]
            return {"virtualmachine": dict(self.vm_view(vm), state="Expunging")}
        vm["state"] = "Destroyed"
        return {"virtualmachine": self.vm_view(vm)}

    # ---- snapshots -----------------------------------------------------------------

    def cmd_listSnapshots(self, p):
        items = self.filter_id(p, sorted(self.snapshots.values(),
                                         key=lambda s: s["created"] + s["id"]))
        if p.get("volumeid"):
            items = [s for s in items if s["volumeid"] == p["volumeid"]]
        return self.page(p, [{k: v for k, v in s.items() if not k.startswith("_")}
                             for s in items], "snapshot")

    def pre_createSnapshot(self, p):
        vol = self.get(self.volumes, "volumeid", "volume", p)
        if vol["state"] != "Ready":
            raise ApiFailure(431, f"VolumeId: {vol['id']} is not in Ready state but "
                                  f"{vol['state']}. Cannot take snapshot.")
        vm = self.vms.get(vol["virtualmachineid"]) if vol["virtualmachineid"] else None
        if vm and vm["state"] != "Stopped" and not self.args.kvm_snapshot_enabled:
            raise ApiFailure(431, "KVM Snapshot is not supported for Running VMs. It is disabled "
                                  "by default due to a possible volume corruption in certain "
                                  "cases. To enable it set global settings kvm.snapshot.enabled "
                                  "to True. See the documentation for more details.")
        p["_id"] = str(uuid.uuid4())
        return {"id": p["_id"]}

    def cmd_createSnapshot(self, p):
        vol = self.get(self.volumes, "volumeid", "volume", p)
        snap_path = os.path.join(self.args.state_dir, "volumes", p["_id"] + ".snap")
        sparse_copy(self.volume_path(vol["id"]), snap_path)
        snap = {"id": p["_id"], "name": p.get("name") or f"{vol['name']}-snap",
                "volumeid": vol["id"], "volumename": vol["name"], "volumetype": vol["type"],
                "state": "BackedUp", "snapshottype": "MANUAL", "created": now_iso(),
                "account": self.account, "domainid": self.domainid, "_path": snap_path}
        self.snapshots[snap["id"]] = snap
        return {"snapshot": {k: v for k, v in snap.items() if not k.startswith("_")}}

    def cmd_revertSnapshot(self, p):
        snap = self.get(self.snapshots, "id", "snapshot", p)
        vol = self.volumes[snap["volumeid"]]
        vm = self.vms.get(vol["virtualmachineid"]) if vol["virtualmachineid"] else None
        if vm and vm["state"] == "Running":
            raise ApiFailure(431, f"Volume {vol['name']} is attached to running VM "
                                  f"{vm['name']}; stop it or detach the volume first")
        sparse_copy(snap["_path"], self.volume_path(vol["id"]))
        return {"snapshot": {k: v for k, v in snap.items() if not k.startswith("_")}}

    def cmd_deleteSnapshot(self, p):
        snap = self.get(self.snapshots, "id", "snapshot", p)
        os.unlink(snap["_path"])
        del self.snapshots[snap["id"]]
        return {"success": True}

    # ---- control -------------------------------------------------------------------

    def state(self):
        with self.lock:
            return {"volumes": [self.volume_view(v) for v in self.volumes.values()],
                    "virtualmachines": [self.vm_view(v) for v in self.vms.values()],
                    "snapshots": [{k: v for k, v in s.items() if not k.startswith("_")}
                                  for s in self.snapshots.values()],
                    "jobs": list(self.jobs.values()),
                    "calls": list(self.calls),
                    "oma_vm_id": self.args.oma_vm_id,
                    "oma_vms": dict(self.oma_by_id)}


def sparse_copy(src, dst):
    """Copies src over dst keeping holes: only the data extents (SEEK_DATA) are read and
    written, so a mostly empty 1 GiB volume costs what its data costs."""
    size = os.path.getsize(src)
    tmp = dst + ".tmp"
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        fout.truncate(size)
        fd = fin.fileno()
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data past offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            fin.seek(start)
            fout.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = fin.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                fout.write(chunk)
                remaining -= len(chunk)
            offset = end
    # Replace the file (same path), so by-id links to the path keep pointing at the volume.
    os.replace(tmp, dst)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # An answer is two writes (headers, then body): with Nagle's algorithm the body
    # waits for the client's delayed ACK of the headers (40 ms per call on a kept-alive
    # connection), which a test of hundreds of volumes would pay hundreds of times.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        if self.server.sim.args.verbose:
            sys.stderr.write("sim: " + (fmt % args) + "\n")

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def reply_html(self, status):
        data = (f"<html><body><h1>{status} {self.responses.get(status, ('',))[0]}</h1>"
                f"</body></html>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n).decode() if n else ""

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def dispatch(self, method):
        url = urllib.parse.urlsplit(self.path)
        sim = self.server.sim
        body = self.read_body() if method == "POST" else ""
        if url.path.startswith("/control/"):
            return self.control(url.path, body)
        if url.path != "/client/api":
            return self.reply(404, {"errorresponse": {"errorcode": 404,
                                                      "errortext": f"no such path {url.path}"}})
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        if method == "POST" and body:
            ctype = self.headers.get("Content-Type", "")
            if "application/x-www-form-urlencoded" not in ctype:
                return self.reply(415, {"errorresponse": {"errorcode": 415,
                                                          "errortext": "POST body must be "
                                                          "application/x-www-form-urlencoded"}})
            params.update(urllib.parse.parse_qsl(body, keep_blank_values=True))
        key = params.get("command", "").lower() + "response"
        try:
            self.reply(200, {key: sim.handle(params, method)})
        except ProxyFailure as e:
            self.reply_html(e.status)
        except Dropped:
            self.close_connection = True
        except ApiFailure as e:
            # A command the server cannot run for this caller has no response object of
            # its own: CloudStack answers it as "errorresponse".
            if e.errorcode == 432:
                key = "errorresponse"
            self.reply(e.errorcode if 400 <= e.errorcode < 600 else 530,
                       {key: {"uuidList": [], "errorcode": e.errorcode,
                              "cserrorcode": 4350, "errortext": e.errortext}})

    def control(self, path, body):
        sim = self.server.sim
        if path == "/control/state":
            return self.reply(200, sim.state())
        if path == "/control/fail":
            rule = json.loads(body or "{}")
            rule.setdefault("count", 1)
            rule.setdefault("how", "job")
            hows = ("job", "error", "hang", "late", "http", "drop", "lost")
            if "command" not in rule or rule["how"] not in hows:
                return self.reply(400, {"error": "need command and how in " + "|".join(hows)})
            if rule["command"] == "queryAsyncJobResult" and rule["how"] not in (
                    "error", "http", "drop"):
                return self.reply(400, {"error": "queryAsyncJobResult fails by error|http|drop"})
            with sim.lock:
                sim.rules.append(rule)
            return self.reply(200, {"ok": True})
        if path == "/control/clear":
            with sim.lock:
                sim.rules.clear()
            return self.reply(200, {"ok": True})
        return self.reply(404, {"error": f"no such control {path}"})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--by-id-dir", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--secret-key-file", required=True,
                    help="file holding the secret key (never on the command line)")
    ap.add_argument("--oma-vm-id", default="0a000000-0000-4000-8000-00000000000a")
    ap.add_argument("--oma-mac", default="02:00:00:00:0a:01")
    ap.add_argument("--oma-vm", action="append", default=[], metavar="ID=BY_ID_DIR",
                    help="one more OMA VM (repeatable): its id and where its disks appear")
    ap.add_argument("--job-delay", type=float, default=0.05)
    ap.add_argument("--max-page-size", type=int, default=500)
    ap.add_argument("--deny-api", action="append", default=[],
                    help="a command this account may not call (repeatable)")
    ap.add_argument("--oma-account", default="")
    ap.add_argument("--max-data-volumes", type=int, default=32,
                    help="maxdatavolumeslimit of KVM (listHypervisorCapabilities)")
    ap.add_argument("--custom-disk-max-gb", type=int, default=1024,
                    help="custom.diskoffering.size.max")
    ap.add_argument("--kvm-snapshot-enabled", action="store_true",
                    help="kvm.snapshot.enabled (false by default, as in CloudStack)")
    ap.add_argument("--user-account", action="store_true",
                    help="the API key belongs to a user account, not a root admin")
    ap.add_argument("--allow-user-expunge", action="store_true",
                    help="allow.user.expunge.recover.vm")
    ap.add_argument("--enforce-post-and-expires", action="store_true",
                    help="enforce.post.requests.and.timestamps")
    ap.add_argument("--oma-vm-snapshot", action="store_true",
                    help="the OMA's VM has a VM snapshot")
    ap.add_argument("--oma-backup-offering", default="",
                    help="the OMA's VM is assigned this backup offering")
    ap.add_argument("--disk-bus", choices=("virtio", "scsi"), default="virtio",
                    help="how the OMA's disks appear in the by-id directory")
    ap.add_argument("--tls-cert", default="", help="PEM certificate: serve https")
    ap.add_argument("--tls-key", default="", help="PEM private key of --tls-cert")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    with open(args.secret_key_file) as f:
        secret = f.read().strip()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.sim = Sim(args, secret)
    if args.tls_cert:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
