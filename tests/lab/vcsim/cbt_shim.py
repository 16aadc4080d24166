#!/usr/bin/env python3
"""Lab double: Changed Block Tracking in front of vcsim.

vcsim (govmomi 0.24.2) implements neither QueryChangedDiskAreas nor disk change IDs. This
HTTPS proxy sits between a vSphere client and vcsim, passes every SOAP call through, and
adds CBT computed from the real bytes of each disk's flat file on vcsim's datastore:

* CBT becomes active on a disk at the first snapshot taken while the VM has
  config.changeTrackingEnabled (as on ESXi, where enabling needs a stun/unstun). The disk
  then gets a random change-tracking UUID; disabling CBT (ReconfigVM) forgets it, so
  re-enabling yields a new UUID: a CBT reset.
* Changes are tracked the way ESXi does it, by the writes, not by reading the disks: once
  CBT is active on a flat file the shim keeps a write journal beside it
  (<flat file>.cbt-journal, one "offset length" line per write). The lab's writers
  (tests/support/files.cpp, lab_vm.cpp through it) append to the journal when it exists.
  Each snapshot takes the journal's new lines as the blocks written since the previous
  snapshot, under a new change ID "<uuid>/<sequence>" in the real format
  ("52 3c 1f ... 2a/17"), and notes the file's allocated blocks (SEEK_DATA/SEEK_HOLE:
  no data is read). A flat file changed (mtime, size) without a journal line was written
  by someone who does not journal: all its allocated blocks count as written, which is
  correct (CBT may report more, never less) and says so on stderr. VirtualDisk backings
  in property results get their changeId: the snapshot's for a VirtualMachineSnapshot,
  the latest for the VM.
* A snapshot freezes the disks, as on ESXi (where the snapshot keeps the base disk
  read-only and the VM writes to a new delta): at CreateSnapshot each disk's flat file is
  copied (cp --reflink=auto: a reflink where the file system can, else a sparse copy)
  to <disk>-<snapshot moref>-flat.vmdk beside it, and the snapshot's
  VirtualDisk backings answer fileName "[ds] dir/<disk>-<snapshot moref>.vmdk", so that
  whoever reads the snapshot's disks reads the content of that moment while the guest
  (the lab's writers) goes on writing the VM's own flat file. The copy and the journal
  point are taken under an flock of the flat file, so a writer that locks it around a
  write and its journal line (bench/soak) sees snapshots as atomic as ESXi's. RemoveSnapshot (with its
  children if asked) and RemoveAllSnapshots delete the copies. With --snapshot-index DIR
  the shim also writes DIR/<snapshot moref>, one "<vm moref> TAB <fileName> TAB <flat
  file>" line per disk, removed with the snapshot: the host's knowledge of its snapshots,
  which the VDDK stand-in (tests/source/fake_nbdkit_vddk.sh) reads to serve the disk of
  the snapshot it is asked for, and to refuse a snapshot or file it does not know.
* Power state for the VDDK stand-in: with --snapshot-index DIR the shim also keeps
  DIR/power-<vm moref>, one line: the VM's power state as the shim last learnt it (from
  any property answer with runtime.powerState, and after PowerOnVM_Task, PowerOffVM_Task,
  ShutdownGuest, SuspendVM_Task, ResetVM_Task; PowerOnVM_Task writes poweredOn at once,
  before vcsim has finished: from then on the VM may run), and DIR/datastores, one
  "<datastore name> TAB <directory>" line per datastore it has resolved. The stand-in
  serves a VM's own disk (no snapshot= given) only when DIR/power-<vm> says poweredOff,
  as VDDK cannot open the disk of a running VM (it is locked); a VM whose power state the
  shim never saw is refused too.
* The VM's own disks report the change ID of the latest point: a snapshot, or a write
  seen since (journal lines not yet taken): such writes make a new point, so the VM's
  current change ID moves on with the guest's writes while a snapshot's stays what it
  was. A pass must store its snapshot's change ID, not the VM's.
* QueryChangedDiskAreas(vm, snapshot, deviceKey, startOffset, changeId) answers the
  blocks written between the change ID's snapshot and this one (a block rewritten with
  the same bytes counts, as on ESXi), or with "*" the allocated blocks of the snapshot.
  Without the snapshot argument it answers for the VM's current point (the journal's
  writes so far make a new one, as for the VM's changeId), which vSphere allows for a
  powered-off VM only: for a VM that is not poweredOff (asked of vcsim at each call) it
  answers FileFault. vSphere's reference lists FileFault ("the virtual disk files cannot
  be accessed or queried"), NotFound (a snapshot not found) and RuntimeFault for this
  method; a running VM holds its current disk and change-tracking file open and locked,
  so FileFault is the fault that fits.
  Results are paged: at most --max-extents areas per call, and DiskChangeInfo.length
  tells where the next call starts. An unknown, foreign or stale change ID is a
  FileFault, as on ESXi.

It also models what vcsim lacks and real vCenters do:

* RetrievePropertiesEx honours options.maxObjects: answers larger than that are paged,
  the rest kept under a token for ContinueRetrievePropertiesEx (CancelRetrievePropertiesEx
  drops it), as vCenter pages large inventories.
* Raw device mappings: a ReconfigVM_Task that adds a disk with a
  VirtualDiskRawDiskMappingVer1BackingInfo is passed to vcsim as a flat disk (vcsim
  cannot hold one), and every property answer shows that disk with its RDM backing
  (compatibilityMode, deviceName, lunUuid) again.
* Property overrides (POST /lab/override, JSON {"moref", "path", "xml"}): the property
  `path` of object `moref` answers `xml` (a <val> element) whenever it is asked for, or is
  absent when "xml" is null; for what vcsim cannot do: encrypted VMs (config.keyId),
  runtime.consolidationNeeded, orphaned or inaccessible VMs, CBT not supported.
* QueryChangedDiskAreas faults (POST /lab/qcda-fault, JSON {"fault": "FileFault", "message",
  "count": 1, "change_id": "*" | "stored" | null, "device_key": null}): the next `count`
  matching calls answer that fault (any vim25 fault type) instead of the areas.
* GET /lab/stats: calls per method, the maxObjects each RetrievePropertiesEx asked for,
  and per method the seconds spent in vcsim ("upstream_seconds") and in the shim's own
  work ("shim_seconds"), so that a benchmark can tell the lab's snapshot time from ours.

The /lab/ endpoints are for tests on loopback only and are not authenticated.

Standard library only. One request at a time (a lock), which is plenty for tests.
"""

import argparse
import fcntl
import http.client
import http.server
import json
import os
import re
import secrets
import ssl
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
VIM = "urn:vim25"
CHANGE_ID_RE = re.compile(r"^([0-9a-f]{2}(?: [0-9a-f]{2}){15})/(\d+)$")

for prefix, uri in (("soapenv", SOAPENV), ("xsi", XSI), ("xsd", "http://www.w3.org/2001/XMLSchema")):
    ET.register_namespace(prefix, uri)


def local(tag):
    return tag.rsplit("}", 1)[-1]


def child(elem, name):
    for c in elem:
        if local(c.tag) == name:
            return c
    return None


def child_text(elem, name, default=None):
    c = child(elem, name)
    return c.text if c is not None and c.text is not None else default


def xsi_type(elem):
    t = elem.get("{%s}type" % XSI)
    return t.rsplit(":", 1)[-1] if t else None


class SoapFault(Exception):
    def __init__(self, fault_type, message, detail_xml=""):
        super().__init__(message)
        self.fault_type = fault_type
        self.message = message
        self.detail_xml = detail_xml

    def envelope(self):
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<soapenv:Envelope xmlns:soapenv="{SOAPENV}" xmlns:xsi="{XSI}">'
            "<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode>"
            f"<faultstring>{escape(self.message)}</faultstring><detail>"
            f'<{self.fault_type}Fault xmlns="{VIM}" xsi:type="{self.fault_type}">{self.detail_xml}'
            f"</{self.fault_type}Fault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
        ).encode()


def file_fault(file_name, message):
    return SoapFault("FileFault", message, f"<file>{escape(file_name)}</file>")


def invalid_argument(prop, message):
    return SoapFault("InvalidArgument", message, f"<invalidProperty>{escape(prop)}</invalidProperty>")


# The detail each injected fault type carries (its required fields, roughly as vCenter fills them).
FAULT_DETAIL = {
    "FileFault": "<file>{file}</file>",
    "FileNotFound": "<file>{file}</file>",
    "CannotAccessFile": "<file>{file}</file>",
    "InvalidArgument": "<invalidProperty>changeId</invalidProperty>",
    "NotAuthenticated": "<object type=\"VirtualMachine\">{vm}</object><privilegeId>System.View</privilegeId>",
    "SystemError": "<reason>injected</reason>",
}

RDM = "VirtualDiskRawDiskMappingVer1BackingInfo"


class Disk:
    """One VirtualDisk as the shim needs it."""

    def __init__(self, key, file_name, datastore, capacity):
        self.key, self.file_name, self.datastore, self.capacity = key, file_name, datastore, capacity


class flat_file_lock:
    """An exclusive flock(2) on a flat file while its snapshot copy and journal point are
    taken, so that a snapshot is atomic for writers that take the same lock around a write
    and its journal line (bench/soak's guests): such a write is wholly in the copy and in
    this point's changes, or wholly in the next. Writers that do not lock are not held."""

    def __init__(self, path):
        self.path, self.fd = path, None

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return self
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # releases the lock


class Track:
    """Change tracking of one flat file: its UUID, and per sequence number the allocated
    blocks at that snapshot and the blocks written since the previous one."""

    def __init__(self, path):
        self.uuid = " ".join(f"{b:02x}" for b in secrets.token_bytes(16))
        self.allocated = {}  # seq -> sorted block indexes holding data
        self.written = {}    # seq -> set of block indexes written since seq - 1
        self.next_seq = 1
        self.journal = path + ".cbt-journal"
        self.journal_read = 0  # bytes of the journal already taken by a snapshot
        self.stamp = None      # (mtime_ns, size) of the flat file at the last snapshot
        # From now on the lab's writers journal their writes (see the top).
        with open(self.journal, "w"):
            pass

    def change_id(self, seq):
        return f"{self.uuid}/{seq}"

    def has_new_writes(self):
        """The journal holds a complete line not taken yet."""
        try:
            with open(self.journal, "rb") as f:
                f.seek(self.journal_read)
                return b"\n" in f.read()
        except FileNotFoundError:
            return False

    def new_writes(self, block_size):
        """Blocks named by journal lines since the last call."""
        try:
            with open(self.journal, "rb") as f:
                f.seek(self.journal_read)
                data = f.read()
        except FileNotFoundError:
            return set()
        end = data.rfind(b"\n") + 1  # a line still being appended waits for the next snapshot
        self.journal_read += end
        blocks = set()
        for line in data[:end].splitlines():
            offset, length = (int(x) for x in line.split())
            if length > 0:
                blocks.update(range(offset // block_size, (offset + length - 1) // block_size + 1))
        return blocks


class Shim:
    def __init__(self, upstream_host, upstream_port, block_size, max_extents, snapshot_index=None):
        self.upstream = (upstream_host, upstream_port)
        self.block_size = block_size
        self.max_extents = max_extents
        self.lock = threading.Lock()
        self.tracks = {}     # flat file path -> Track
        self.snapshots = {}  # snapshot moref -> {device key: (flat path, seq, capacity, file name)}
        self.frozen = {}     # snapshot moref -> {"vm": moref, "disks": {device key: (file name, flat path)}}
        self.snapshot_index = snapshot_index  # directory of the index files (see the top), or None
        self.ds_urls = {}    # datastore moref -> directory
        self.ds_names = {}   # datastore moref -> name, for DIR/datastores
        self.power = {}      # vm moref -> power state last written to DIR/power-<vm>
        self.rdms = {}       # disk file name -> {compatibilityMode, deviceName, lunUuid, diskMode}
        self.overrides = {}  # (moref, path) -> <val> XML text, or None for absent
        self.qcda_faults = []  # injected QueryChangedDiskAreas fault rules
        self.pages = {}      # token -> remaining ObjectContent elements
        self.next_token = 1
        self.stats = {"calls": {}, "max_objects": [], "upstream_seconds": {}, "shim_seconds": {}}
        self.upstream_time = 0.0  # seconds in vcsim during the current request
        self.upstream_conn = None  # http.client.HTTPSConnection to vcsim, kept alive
        self.ctx = ssl.create_default_context()
        # The upstream is vcsim on loopback, started by the same test with a throwaway cert.
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    # --- upstream -----------------------------------------------------------------------

    def forward(self, path, body, headers):
        """One request to vcsim over one kept-alive connection (self.lock held, so one
        request at a time): a TLS handshake per call was most of the time a lab of
        hundreds of VMs took to make. A connection vcsim closed while idle is opened
        again once; that request never reached vcsim, so sending it again is safe."""
        t0 = time.monotonic()
        try:
            for attempt in (0, 1):
                reused = self.upstream_conn is not None
                if not reused:
                    self.upstream_conn = http.client.HTTPSConnection(*self.upstream, context=self.ctx, timeout=60)
                try:
                    self.upstream_conn.request("POST", path, body=body, headers=headers)
                    resp = self.upstream_conn.getresponse()
                    data = resp.read()
                    if resp.will_close:
                        self.upstream_conn.close()
                        self.upstream_conn = None
                    return resp.status, resp.getheaders(), data
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    self.upstream_conn.close()
                    self.upstream_conn = None
                    if not reused or attempt == 1:
                        raise
                except BaseException:
                    self.upstream_conn.close()
                    self.upstream_conn = None
                    raise
        finally:
            self.upstream_time += time.monotonic() - t0  # under self.lock (one request at a time)

    def retrieve(self, headers, obj_type, obj, paths):
        """RetrievePropertiesEx of one object with the caller's session; {path: element}."""
        props = "".join(f"<pathSet>{escape(p)}</pathSet>" for p in paths)
        body = (
            f'<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="{SOAPENV}" xmlns="{VIM}">'
            '<soapenv:Body><RetrievePropertiesEx><_this type="PropertyCollector">propertyCollector</_this>'
            f"<specSet><propSet><type>{escape(obj_type)}</type>{props}</propSet>"
            f'<objectSet><obj type="{escape(obj_type)}">{escape(obj)}</obj></objectSet></specSet>'
            "<options/></RetrievePropertiesEx></soapenv:Body></soapenv:Envelope>"
        ).encode()
        status, _, data = self.forward("/sdk", body, headers)
        root = ET.fromstring(data)
        fault = root.find(f"{{{SOAPENV}}}Body/{{{SOAPENV}}}Fault")
        if fault is not None:
            detail = child(fault, "detail")
            ftype = xsi_type(detail[0]) if detail is not None and len(detail) else "SystemError"
            raise SoapFault(ftype or "SystemError", child_text(fault, "faultstring", "fault"))
        out = {}
        for ps in root.iter(f"{{{VIM}}}propSet"):
            out[child_text(ps, "name")] = child(ps, "val")
        return out

    def vm_disks(self, headers, obj_type, obj):
        props = self.retrieve(headers, obj_type, obj, ["config.hardware.device"])
        devices = props.get("config.hardware.device")
        return self.disks_in(devices) if devices is not None else []

    def disks_in(self, elem):
        disks = []
        for dev in elem.iter():
            if xsi_type(dev) != "VirtualDisk":
                continue
            backing = child(dev, "backing")
            if backing is None:
                continue
            cap = child_text(dev, "capacityInBytes")
            cap = int(cap) if cap else int(child_text(dev, "capacityInKB", "0")) * 1024
            disks.append(Disk(int(child_text(dev, "key")), child_text(backing, "fileName", ""),
                              child_text(backing, "datastore"), cap))
        return disks

    def flat_path(self, headers, disk):
        if disk.datastore not in self.ds_urls:
            props = self.retrieve(headers, "Datastore", disk.datastore, ["info.url", "name"])
            self.ds_urls[disk.datastore] = props["info.url"].text
            self.ds_names[disk.datastore] = props["name"].text
            self.write_datastores()
        m = re.match(r"^\[[^\]]+\] ?(.*)$", disk.file_name)
        rel = m.group(1) if m else ""
        if not rel.endswith(".vmdk") or ".." in rel.split("/"):
            raise file_fault(disk.file_name, f"Cannot use disk file {disk.file_name}")
        return os.path.join(self.ds_urls[disk.datastore], rel[: -len(".vmdk")] + "-flat.vmdk")

    def cbt_enabled(self, headers, vm):
        v = self.retrieve(headers, "VirtualMachine", vm, ["config.changeTrackingEnabled"])
        e = v.get("config.changeTrackingEnabled")
        return e is not None and e.text == "true"

    # --- block maps ---------------------------------------------------------------------

    def allocated_blocks(self, path, capacity):
        """Indexes of the blocks of the flat file that hold data (not wholly in a hole),
        from SEEK_DATA/SEEK_HOLE: no data is read."""
        bs = self.block_size
        out = []
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return out
        try:
            end = min(os.fstat(fd).st_size, capacity)
            pos = 0
            while pos < end:
                try:
                    data_start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:
                    break  # no data after pos
                if data_start >= end:
                    break
                hole = min(os.lseek(fd, data_start, os.SEEK_HOLE), end)
                first, last = max(data_start // bs, out[-1] + 1 if out else 0), (hole - 1) // bs
                out.extend(range(first, last + 1))
                pos = (last + 1) * bs
        finally:
            os.close(fd)
        return out

    def stamp(self, path):
        try:
            st = os.stat(path)
            return (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return None

    def take_snapshot(self, path, capacity):
        """Records the disk's state at a new point (a snapshot, or the VM's current state
        when the guest wrote since the last one); returns its sequence number. The
        allocated blocks are the live file's: a frozen copy holds no zero blocks (cp makes
        them holes) where the disk has them allocated."""
        track = self.tracks.get(path)
        if track is None:
            track = self.tracks[path] = Track(path)
        seq = track.next_seq
        track.next_seq += 1
        written = track.new_writes(self.block_size)
        allocated = self.allocated_blocks(path, capacity)
        stamp = self.stamp(path)
        if not written and track.stamp is not None and stamp != track.stamp:
            sys.stderr.write(f"cbt-shim: {path} changed without a journal line: every allocated block counts "
                             "as written\n")
            written = set(allocated)
        track.allocated[seq] = allocated
        track.written[seq] = written
        track.stamp = stamp
        return seq

    def areas(self, blocks, capacity):
        """Merged byte ranges [(start, length)] of the given block indexes, clipped to capacity."""
        out = []
        for b in blocks:
            start = b * self.block_size
            end = min(start + self.block_size, capacity)
            if out and out[-1][0] + out[-1][1] == start:
                out[-1] = (out[-1][0], end - out[-1][0])
            else:
                out.append((start, end - start))
        return out

    # --- intercepted methods --------------------------------------------------------------

    def create_snapshot(self, headers, vm):
        props = self.retrieve(headers, "VirtualMachine", vm, ["snapshot.currentSnapshot", "config.changeTrackingEnabled"])
        snap = props.get("snapshot.currentSnapshot")
        if snap is None:
            return
        enabled = props.get("config.changeTrackingEnabled")
        cbt = enabled is not None and enabled.text == "true"
        entry, frozen = {}, {}
        for disk in self.vm_disks(headers, "VirtualMachineSnapshot", snap.text):
            path = self.flat_path(headers, disk)
            with flat_file_lock(path):
                frozen[disk.key] = self.freeze(headers, disk, path, snap.text)
                if cbt:
                    seq = self.take_snapshot(path, disk.capacity)
                    entry[disk.key] = (path, seq, disk.capacity, disk.file_name)
        self.frozen[snap.text] = {"vm": vm, "disks": frozen}
        self.write_index(snap.text)
        if cbt:
            self.snapshots[snap.text] = entry

    def freeze(self, headers, disk, path, snap):
        """Copies the disk's flat file as it is now; returns the snapshot's (file name, flat file)."""
        file_name = f"{disk.file_name[: -len('.vmdk')]}-{snap}.vmdk"
        frozen = self.flat_path(headers, Disk(disk.key, file_name, disk.datastore, disk.capacity))
        if os.path.exists(path):
            # A reflink where the file system can; else a sparse copy (holes kept, zero blocks
            # made holes: they read the same).
            subprocess.run(["cp", "--reflink=auto", "--sparse=auto", path, frozen], check=True)
            os.chmod(frozen, 0o444)  # a snapshot's disk is read-only
        return file_name, frozen

    def write_index(self, snap):
        if self.snapshot_index is None:
            return
        info = self.frozen[snap]
        lines = "".join(f"{info['vm']}\t{name}\t{flat}\n" for name, flat in info["disks"].values())
        tmp = os.path.join(self.snapshot_index, f".{snap}.tmp")
        with open(tmp, "w") as f:
            f.write(lines)
        os.rename(tmp, os.path.join(self.snapshot_index, snap))  # readers see all of it or nothing

    def write_index_file(self, name, text):
        """DIR/name = text, atomically (the stand-in reads all of it or nothing)."""
        tmp = os.path.join(self.snapshot_index, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.snapshot_index, name))

    def write_datastores(self):
        if self.snapshot_index is not None:
            self.write_index_file("datastores", "".join(f"{self.ds_names[m]}\t{d}\n" for m, d in self.ds_urls.items()))

    def note_power(self, vm, state):
        """The VM's power state for the VDDK stand-in (DIR/power-<vm>, see the top)."""
        if self.snapshot_index is None or not vm or self.power.get(vm) == state:
            return
        self.power[vm] = state
        self.write_index_file(f"power-{vm}", state + "\n")

    def power_state(self, headers, vm):
        v = self.retrieve(headers, "VirtualMachine", vm, ["runtime.powerState"]).get("runtime.powerState")
        state = v.text if v is not None else "unknown"
        self.note_power(vm, state)
        return state

    def notice_power(self, root):
        """Power states seen in a property answer (any VM's runtime.powerState)."""
        for content in root.iter():
            obj = child(content, "obj")
            if obj is None or obj.get("type") != "VirtualMachine":
                continue
            for ps in content:
                if local(ps.tag) == "propSet" and child_text(ps, "name") == "runtime.powerState":
                    self.note_power(obj.text, child_text(ps, "val", "unknown"))

    def forget_snapshot(self, snap):
        """The snapshot is gone: its frozen copies and index file too."""
        self.snapshots.pop(snap, None)
        info = self.frozen.pop(snap, None)
        if info is None:
            return
        paths = [flat for _, flat in info["disks"].values()]
        if self.snapshot_index is not None:
            paths.append(os.path.join(self.snapshot_index, snap))
        for p in paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def snapshots_to_remove(self, headers, method, req):
        """The snapshots a RemoveSnapshot_Task or RemoveAllSnapshots_Task removes (asked
        before vcsim forgets the tree)."""
        this = child_text(req, "_this")
        if method == "RemoveAllSnapshots_Task":
            return [s for s, info in self.frozen.items() if info["vm"] == this]
        out, todo = [], [this]
        children = child_text(req, "removeChildren", "false") == "true"
        while todo:
            snap = todo.pop()
            out.append(snap)
            if children:
                kids = self.retrieve(headers, "VirtualMachineSnapshot", snap, ["childSnapshot"]).get("childSnapshot")
                todo.extend(c.text for c in (kids if kids is not None else []))
        return out

    def show_frozen(self, root):
        """A snapshot's disks name their frozen copies (see the top)."""
        changed = False
        for content in root.iter():
            obj = child(content, "obj")
            if obj is None or obj.get("type") != "VirtualMachineSnapshot" or obj.text not in self.frozen:
                continue
            disks = self.frozen[obj.text]["disks"]
            for dev in content.iter():
                if xsi_type(dev) != "VirtualDisk" or child(dev, "backing") is None:
                    continue
                key = int(child_text(dev, "key", "-1"))
                name = child(child(dev, "backing"), "fileName")
                if key in disks and name is not None:
                    name.text = disks[key][0]
                    changed = True
        return changed

    def reconfigured(self, headers, vm):
        if self.cbt_enabled(headers, vm):
            return
        for disk in self.vm_disks(headers, "VirtualMachine", vm):
            track = self.tracks.pop(self.flat_path(headers, disk), None)
            if track is not None:
                try:
                    os.unlink(track.journal)  # writers stop journaling
                except FileNotFoundError:
                    pass

    def query_changed_disk_areas(self, headers, req):
        vm = child_text(req, "_this")
        snap = child_text(req, "snapshot")
        key = child_text(req, "deviceKey")
        start = child_text(req, "startOffset")
        change_id = child_text(req, "changeId")
        if None in (vm, key, start, change_id):
            raise invalid_argument("request", "QueryChangedDiskAreas needs _this, deviceKey, startOffset and changeId")
        self.injected_fault(vm, int(key), change_id)
        # The caller's session must be valid: ask vcsim something with it.
        if not self.cbt_enabled(headers, vm):
            raise file_fault(vm, f"Change tracking is not enabled on {vm}")
        if snap is None:
            path, seq, capacity, file_name = self.current_point(headers, vm, int(key))
        else:
            if snap not in self.snapshots:
                raise invalid_argument("snapshot", f"snapshot {snap} is not a CBT snapshot of {vm}")
            entry = self.snapshots[snap].get(int(key))
            if entry is None:
                raise invalid_argument("deviceKey", f"no disk with key {key} in snapshot {snap}")
            path, seq, capacity, file_name = entry
        track = self.tracks.get(path)
        if track is None or seq not in track.allocated:
            raise file_fault(file_name, f"Change tracking is not active on {file_name}")
        offset = int(start)
        if offset < 0 or offset >= capacity:
            raise invalid_argument("startOffset", f"startOffset {offset} is outside the disk (capacity {capacity})")
        nblocks = (capacity + self.block_size - 1) // self.block_size
        if change_id == "*":
            blocks = track.allocated[seq]
        else:
            m = CHANGE_ID_RE.match(change_id)
            if not m or m.group(1) != track.uuid or int(m.group(2)) not in track.allocated or int(m.group(2)) > seq:
                raise file_fault(file_name, f"Error caused by file {file_name}: change ID {change_id} is not valid for this disk")
            since = set()
            for s in range(int(m.group(2)) + 1, seq + 1):
                since |= track.written[s]
            blocks = sorted(b for b in since if b < nblocks)
        areas = []
        for s, n in self.areas(blocks, capacity):
            if s + n <= offset:
                continue
            if s < offset:
                s, n = offset, s + n - offset
            areas.append((s, n))
        length = capacity - offset
        if len(areas) > self.max_extents:
            areas = areas[: self.max_extents]
            length = areas[-1][0] + areas[-1][1] - offset
        body = "".join(f"<changedArea><start>{s}</start><length>{n}</length></changedArea>" for s, n in areas)
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><S:Envelope xmlns:S="{SOAPENV}">'
            f'<S:Body><v:QueryChangedDiskAreasResponse xmlns:v="{VIM}"><v:returnval>'
            f"<v:startOffset>{offset}</v:startOffset><v:length>{length}</v:length>"
            + body.replace("<", "<v:").replace("<v:/", "</v:")
            + "</v:returnval></v:QueryChangedDiskAreasResponse></S:Body></S:Envelope>"
        ).encode()

    def current_point(self, headers, vm, key):
        """QueryChangedDiskAreas without a snapshot: (flat path, sequence, capacity, file
        name) of the VM's current point of disk `key`; FileFault unless the VM is
        poweredOff (see the top)."""
        state = self.power_state(headers, vm)
        disk = next((d for d in self.vm_disks(headers, "VirtualMachine", vm) if d.key == key), None)
        if disk is None:
            raise invalid_argument("deviceKey", f"no disk with key {key} in VM {vm}")
        if state != "poweredOff":
            raise file_fault(disk.file_name, f"Cannot query the changed areas of {disk.file_name} without a snapshot: "
                                             f"VM {vm} is {state} and holds the disk locked; use a snapshot")
        path = self.flat_path(headers, disk)
        track = self.tracks.get(path)
        if track is None or not track.allocated:
            raise file_fault(disk.file_name, f"Change tracking is not active on {disk.file_name}")
        if track.has_new_writes():
            self.take_snapshot(path, disk.capacity)  # the current state is a new point, as for the VM's changeId
        return path, max(track.allocated), disk.capacity, disk.file_name

    def injected_fault(self, vm, key, change_id):
        for rule in self.qcda_faults:
            if rule["count"] <= 0:
                continue
            want = rule.get("change_id")
            if want == "*" and change_id != "*" or want == "stored" and change_id == "*":
                continue
            if rule.get("device_key") not in (None, key):
                continue
            rule["count"] -= 1
            ftype = rule["fault"]
            detail = FAULT_DETAIL.get(ftype, "").format(file=escape(f"[lab] {vm} disk {key}"), vm=escape(vm))
            raise SoapFault(ftype, rule.get("message") or f"injected {ftype}", detail)

    # --- what vcsim cannot hold: RDM backings, overridden properties, paging -------------

    def reconfig_rdms(self, req):
        """Turns RDM backings of added disks into flat ones for vcsim; remembers them."""
        changed = False
        for dev in req.iter():
            if local(dev.tag) != "device" or xsi_type(dev) != "VirtualDisk":
                continue
            backing = child(dev, "backing")
            if backing is None or xsi_type(backing) != RDM:
                continue
            info = {n: child_text(backing, n, "") for n in ("compatibilityMode", "deviceName", "lunUuid", "diskMode")}
            self.rdms[child_text(backing, "fileName", "")] = info
            for c in list(backing):
                if local(c.tag) in ("compatibilityMode", "deviceName", "lunUuid"):
                    backing.remove(c)
            backing.set(f"{{{XSI}}}type", "VirtualDiskFlatVer2BackingInfo")
            changed = True
        return changed

    def show_rdms(self, root):
        changed = False
        for dev in root.iter():
            if xsi_type(dev) != "VirtualDisk" or child(dev, "backing") is None:
                continue
            backing = child(dev, "backing")
            info = self.rdms.get(child_text(backing, "fileName", ""))
            if info is None:
                continue
            for c in list(backing):
                if local(c.tag) in ("thinProvisioned", "eagerlyScrub", "split", "writeThrough", "digestEnabled"):
                    backing.remove(c)
            backing.set(f"{{{XSI}}}type", RDM)
            for name in ("compatibilityMode", "deviceName", "lunUuid"):
                el = ET.SubElement(backing, f"{{{VIM}}}{name}")
                el.text = info[name]
            changed = True
        return changed

    def apply_overrides(self, req, root):
        """Overridden properties of the objects in a property-collector answer."""
        if not self.overrides:
            return False
        asked = set()
        for ps in req.iter():
            if local(ps.tag) == "propSet":
                asked.update(c.text for c in ps if local(c.tag) == "pathSet")
        changed = False
        for content in root.iter():
            obj = child(content, "obj")
            if obj is None or local(content.tag) not in ("objects", "returnval"):
                continue
            for (moref, path), val in self.overrides.items():
                if moref != obj.text or path not in asked:
                    continue
                for ps in [c for c in content if local(c.tag) == "propSet" and child_text(c, "name") == path]:
                    content.remove(ps)
                if val is not None:
                    ps = ET.SubElement(content, f"{{{VIM}}}propSet")
                    ET.SubElement(ps, f"{{{VIM}}}name").text = path
                    ps.append(ET.fromstring(
                        f'<val xmlns="{VIM}" xmlns:xsi="{XSI}" xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
                        + val[len("<val"):]))
                changed = True
        return changed

    def page(self, req, root):
        """Cuts a RetrievePropertiesEx answer to options.maxObjects; keeps the rest."""
        opts = child(req, "options")
        limit = child_text(opts, "maxObjects") if opts is not None else None
        self.stats["max_objects"].append(int(limit) if limit else None)
        rv = root.find(f".//{{{VIM}}}returnval")
        if not limit or rv is None:
            return False
        objects = [c for c in rv if local(c.tag) == "objects"]
        if len(objects) <= int(limit):
            return False
        for o in objects[int(limit):]:
            rv.remove(o)
        self.add_token(rv, objects[int(limit):])
        return True

    def add_token(self, rv, rest):
        token = str(self.next_token)
        self.next_token += 1
        self.pages[token] = (rest, len([c for c in rv if local(c.tag) == "objects"]))
        ET.SubElement(rv, f"{{{VIM}}}token").text = token

    def continue_page(self, req, method):
        token = child_text(req, "token")
        if token not in self.pages:
            raise invalid_argument("token", f"unknown or finished token {token}")
        rest, limit = self.pages.pop(token)
        if method == "CancelRetrievePropertiesEx":
            return self.envelope(method, "")
        rv = ET.Element(f"{{{VIM}}}returnval")
        for o in rest[:limit]:
            rv.append(o)
        if len(rest) > limit:
            self.pages[token] = (rest[limit:], limit)
            ET.SubElement(rv, f"{{{VIM}}}token").text = token
        return self.envelope(method, ET.tostring(rv, encoding="unicode"))

    def envelope(self, method, inner):
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAPENV}" xmlns:xsi="{XSI}">'
            f'<soapenv:Body><{method}Response xmlns="{VIM}">{inner}</{method}Response></soapenv:Body>'
            "</soapenv:Envelope>"
        ).encode()

    def control(self, method, path, body):
        """The /lab/ endpoints: (status, JSON answer)."""
        with self.lock:
            if path == "/lab/stats":
                return 200, self.stats
            data = json.loads(body or b"{}")
            if path == "/lab/override":
                self.overrides[(data["moref"], data["path"])] = data.get("xml")
                return 200, {"ok": True}
            if path == "/lab/qcda-fault":
                rule = {"fault": data["fault"], "message": data.get("message", ""), "count": data.get("count", 1),
                        "change_id": data.get("change_id"), "device_key": data.get("device_key")}
                self.qcda_faults.append(rule)
                return 200, {"ok": True}
        return 404, {"error": f"no such control {path}"}

    def fill_change_ids(self, headers, data):
        """Adds changeId to the VirtualDisk backings of property results."""
        if b"VirtualDisk" not in data:
            return data
        root = ET.fromstring(data)
        changed = False
        for content in root.iter():
            obj = child(content, "obj")
            if obj is None or child(content, "propSet") is None:
                continue
            otype, moref = obj.get("type"), obj.text
            for dev in content.iter():
                if xsi_type(dev) != "VirtualDisk" or child(dev, "backing") is None:
                    continue
                cid = self.change_id_for(headers, otype, moref, dev)
                if cid is None:
                    continue
                backing = child(dev, "backing")
                el = child(backing, "changeId")
                if el is None:
                    el = ET.SubElement(backing, f"{{{VIM}}}changeId")
                el.text = cid
                changed = True
        return ET.tostring(root, encoding="utf-8", xml_declaration=True) if changed else data

    def change_id_for(self, headers, otype, moref, dev):
        key = int(child_text(dev, "key", "-1"))
        if otype == "VirtualMachineSnapshot":
            entry = self.snapshots.get(moref, {}).get(key)
            if entry is None or entry[0] not in self.tracks:
                return None
            return self.tracks[entry[0]].change_id(entry[1])
        if otype == "VirtualMachine":
            disk = self.disks_in(dev)[0]
            path = self.flat_path(headers, disk)
            track = self.tracks.get(path)
            if track is None or not track.allocated:
                return None
            if track.has_new_writes():
                self.take_snapshot(path, disk.capacity)  # the current state is a new point
            return track.change_id(max(track.allocated))
        return None

    # --- dispatch -------------------------------------------------------------------------

    def handle(self, path, body, headers):
        try:
            root = ET.fromstring(body)
            req_body = root.find(f"{{{SOAPENV}}}Body")
            req = req_body[0] if req_body is not None and len(req_body) else None
        except ET.ParseError:
            root = req = None
        method = local(req.tag) if req is not None else ""
        with self.lock:
            self.stats["calls"][method] = self.stats["calls"].get(method, 0) + 1
            t0, self.upstream_time = time.monotonic(), 0.0
            try:
                return self.dispatch(method, req, root, path, body, headers)
            finally:
                up = self.upstream_time
                for key, value in (("upstream_seconds", up), ("shim_seconds", time.monotonic() - t0 - up)):
                    self.stats[key][method] = self.stats[key].get(method, 0.0) + value

    def dispatch(self, method, req, root, path, body, headers):
        """One SOAP call (self.lock held)."""
        xml_type = [("Content-Type", "text/xml; charset=utf-8")]
        try:
            if method == "QueryChangedDiskAreas":
                return 200, xml_type, self.query_changed_disk_areas(headers, req)
            if method in ("ContinueRetrievePropertiesEx", "CancelRetrievePropertiesEx"):
                return 200, xml_type, self.continue_page(req, method)
            if method == "ReconfigVM_Task" and self.reconfig_rdms(req):
                body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
            removed = []
            if method in ("RemoveSnapshot_Task", "RemoveAllSnapshots_Task"):
                removed = self.snapshots_to_remove(headers, method, req)
            status, rheaders, data = self.forward(path, body, headers)
            if status == 200:
                vm = child_text(req, "_this") if req is not None else None
                if method == "CreateSnapshot_Task":
                    self.create_snapshot(headers, vm)
                elif method in ("RemoveSnapshot_Task", "RemoveAllSnapshots_Task"):
                    for snap in removed:
                        self.forget_snapshot(snap)
                elif method == "ReconfigVM_Task":
                    self.reconfigured(headers, vm)
                elif method == "PowerOnVM_Task":
                    self.note_power(vm, "poweredOn")  # may run from now on, whatever vcsim says yet
                elif method in ("PowerOffVM_Task", "ShutdownGuest", "SuspendVM_Task", "ResetVM_Task"):
                    self.power_state(headers, vm)
                elif method in ("RetrieveProperties", "RetrievePropertiesEx"):
                    data = self.fill_change_ids(headers, data)
                    answer = ET.fromstring(data)
                    self.notice_power(answer)
                    changed = self.show_rdms(answer)
                    changed |= self.show_frozen(answer)
                    changed |= self.apply_overrides(req, answer)
                    if method == "RetrievePropertiesEx":
                        changed |= self.page(req, answer)
                    if changed:
                        data = ET.tostring(answer, encoding="utf-8", xml_declaration=True)
            return status, rheaders, data
        except SoapFault as f:
            return 500, [("Content-Type", "text/xml; charset=utf-8")], f.envelope()


def make_handler(shim):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # An answer is two writes (headers, then body): with Nagle's algorithm the body
        # waits for the client's delayed ACK of the headers, 40 ms per call on Linux
        # loopback, which was 80 % of the time a 256-VM lab took to make.
        disable_nagle_algorithm = True

        def do_GET(self):
            self.lab("GET", b"")

        def lab(self, method, body):
            status, answer = shim.control(method, self.path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            if self.path.startswith("/lab/"):
                return self.lab("POST", body)
            fwd = {k: v for k, v in self.headers.items() if k.lower() in ("cookie", "soapaction", "content-type", "vmware_soap_session")}
            status, rheaders, data = shim.handle(self.path, body, fwd)
            self.send_response(status)
            for k, v in rheaders:
                if k.lower() in ("content-type", "set-cookie", "vmware_soap_session"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):
            sys.stderr.write("cbt-shim: " + (fmt % args) + "\n")

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen-port", type=int, required=True)
    p.add_argument("--upstream-port", type=int, required=True, help="vcsim's HTTPS port on 127.0.0.1")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--block-size", type=int, default=65536)
    p.add_argument("--max-extents", type=int, default=64, help="changed areas per QueryChangedDiskAreas answer")
    p.add_argument("--snapshot-index", help="directory for one file per snapshot naming its disks' frozen flat files")
    a = p.parse_args()
    shim = Shim("127.0.0.1", a.upstream_port, a.block_size, a.max_extents, a.snapshot_index)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.listen_port), make_handler(shim))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    sys.stderr.write(f"cbt-shim: listening on 127.0.0.1:{a.listen_port}, upstream 127.0.0.1:{a.upstream_port}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
