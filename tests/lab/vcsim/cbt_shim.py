#!/usr/bin/env python3
"""Lab double: Changed Block Tracking in front of vcsim.

vcsim (govmomi 0.24.2) implements neither QueryChangedDiskAreas nor disk change IDs. This
HTTPS proxy sits between a vSphere client and vcsim, passes every SOAP call through, and
adds CBT computed from the real bytes of each disk's flat file on vcsim's datastore:

* CBT becomes active on a disk at the first snapshot taken while the VM has
  config.changeTrackingEnabled (as on ESXi, where enabling needs a stun/unstun). The disk
  then gets a random change-tracking UUID; disabling CBT (ReconfigVM) forgets it, so
  re-enabling yields a new UUID: a CBT reset.
* Each snapshot records, per disk, a block map of the flat file (a digest per block,
  None for a block wholly in a hole) under a new change ID "<uuid>/<sequence>", in the
  real format ("52 3c 1f ... 2a/17"). VirtualDisk backings in property results get
  their changeId: the snapshot's for a VirtualMachineSnapshot, the latest for the VM.
* QueryChangedDiskAreas(vm, snapshot, deviceKey, startOffset, changeId) answers the
  blocks that differ between the change ID's map and the snapshot's, or with "*" the
  allocated blocks of the snapshot's map. Results are paged: at most --max-extents areas
  per call, and DiskChangeInfo.length tells where the next call starts. An unknown,
  foreign or stale change ID is a FileFault, as on ESXi.

Standard library only. One request at a time (a lock), which is plenty for tests.
"""

import argparse
import hashlib
import http.client
import http.server
import os
import re
import secrets
import ssl
import sys
import threading
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


class Disk:
    """One VirtualDisk as the shim needs it."""

    def __init__(self, key, file_name, datastore, capacity):
        self.key, self.file_name, self.datastore, self.capacity = key, file_name, datastore, capacity


class Track:
    """Change tracking of one flat file: its UUID and a block map per sequence number."""

    def __init__(self):
        self.uuid = " ".join(f"{b:02x}" for b in secrets.token_bytes(16))
        self.maps = {}
        self.next_seq = 1

    def change_id(self, seq):
        return f"{self.uuid}/{seq}"


class Shim:
    def __init__(self, upstream_host, upstream_port, block_size, max_extents):
        self.upstream = (upstream_host, upstream_port)
        self.block_size = block_size
        self.max_extents = max_extents
        self.lock = threading.Lock()
        self.tracks = {}     # flat file path -> Track
        self.snapshots = {}  # snapshot moref -> {device key: (flat path, seq, capacity, file name)}
        self.ds_urls = {}    # datastore moref -> directory
        self.ctx = ssl.create_default_context()
        # The upstream is vcsim on loopback, started by the same test with a throwaway cert.
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    # --- upstream -----------------------------------------------------------------------

    def forward(self, path, body, headers):
        conn = http.client.HTTPSConnection(*self.upstream, context=self.ctx, timeout=60)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

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
            url = self.retrieve(headers, "Datastore", disk.datastore, ["info.url"])["info.url"].text
            self.ds_urls[disk.datastore] = url
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

    def block_map(self, path, capacity):
        """A digest per block of the flat file; None for a block wholly in a hole."""
        bs = self.block_size
        nblocks = (capacity + bs - 1) // bs
        out = [None] * nblocks
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return out
        try:
            size = os.fstat(fd).st_size
            pos = 0
            while pos < min(size, capacity):
                try:
                    data_start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:
                    break  # no data after pos
                if data_start >= min(size, capacity):
                    break
                hole = os.lseek(fd, data_start, os.SEEK_HOLE)
                first, last = data_start // bs, (min(hole, capacity) - 1) // bs
                for b in range(first, last + 1):
                    if out[b] is None:
                        os.lseek(fd, b * bs, os.SEEK_SET)
                        out[b] = hashlib.blake2b(os.read(fd, min(bs, capacity - b * bs)), digest_size=16).digest()
                pos = (last + 1) * bs
        finally:
            os.close(fd)
        return out

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
        enabled = props.get("config.changeTrackingEnabled")
        if snap is None or enabled is None or enabled.text != "true":
            return
        entry = {}
        for disk in self.vm_disks(headers, "VirtualMachineSnapshot", snap.text):
            path = self.flat_path(headers, disk)
            track = self.tracks.setdefault(path, Track())
            seq = track.next_seq
            track.next_seq += 1
            track.maps[seq] = self.block_map(path, disk.capacity)
            entry[disk.key] = (path, seq, disk.capacity, disk.file_name)
        self.snapshots[snap.text] = entry

    def reconfigured(self, headers, vm):
        if self.cbt_enabled(headers, vm):
            return
        for disk in self.vm_disks(headers, "VirtualMachine", vm):
            self.tracks.pop(self.flat_path(headers, disk), None)

    def query_changed_disk_areas(self, headers, req):
        vm = child_text(req, "_this")
        snap = child_text(req, "snapshot")
        key = child_text(req, "deviceKey")
        start = child_text(req, "startOffset")
        change_id = child_text(req, "changeId")
        if None in (vm, key, start, change_id):
            raise invalid_argument("request", "QueryChangedDiskAreas needs _this, deviceKey, startOffset and changeId")
        # The caller's session must be valid: ask vcsim something with it.
        if not self.cbt_enabled(headers, vm):
            raise file_fault(vm, f"Change tracking is not enabled on {vm}")
        if snap is None or snap not in self.snapshots:
            raise invalid_argument("snapshot", f"snapshot {snap} is not a CBT snapshot of {vm}")
        entry = self.snapshots[snap].get(int(key))
        if entry is None:
            raise invalid_argument("deviceKey", f"no disk with key {key} in snapshot {snap}")
        path, seq, capacity, file_name = entry
        track = self.tracks.get(path)
        if track is None or seq not in track.maps:
            raise file_fault(file_name, f"Change tracking is not active on {file_name}")
        offset = int(start)
        if offset < 0 or offset >= capacity:
            raise invalid_argument("startOffset", f"startOffset {offset} is outside the disk (capacity {capacity})")
        now = track.maps[seq]
        if change_id == "*":
            blocks = [i for i, d in enumerate(now) if d is not None]
        else:
            m = CHANGE_ID_RE.match(change_id)
            if not m or m.group(1) != track.uuid or int(m.group(2)) not in track.maps or int(m.group(2)) > seq:
                raise file_fault(file_name, f"Error caused by file {file_name}: change ID {change_id} is not valid for this disk")
            then = track.maps[int(m.group(2))]
            blocks = [i for i in range(len(now)) if now[i] != then[i]]
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
            track = self.tracks.get(self.flat_path(headers, disk))
            if track is None or not track.maps:
                return None
            return track.change_id(max(track.maps))
        return None

    # --- dispatch -------------------------------------------------------------------------

    def handle(self, path, body, headers):
        try:
            root = ET.fromstring(body)
            req_body = root.find(f"{{{SOAPENV}}}Body")
            req = req_body[0] if req_body is not None and len(req_body) else None
        except ET.ParseError:
            req = None
        method = local(req.tag) if req is not None else ""
        with self.lock:
            try:
                if method == "QueryChangedDiskAreas":
                    return 200, [("Content-Type", "text/xml; charset=utf-8")], self.query_changed_disk_areas(headers, req)
                status, rheaders, data = self.forward(path, body, headers)
                if status == 200:
                    vm = child_text(req, "_this") if req is not None else None
                    if method == "CreateSnapshot_Task":
                        self.create_snapshot(headers, vm)
                    elif method == "RemoveSnapshot_Task":
                        self.snapshots.pop(vm, None)
                    elif method == "ReconfigVM_Task":
                        self.reconfigured(headers, vm)
                    elif method in ("RetrieveProperties", "RetrievePropertiesEx", "ContinueRetrievePropertiesEx"):
                        data = self.fill_change_ids(headers, data)
                return status, rheaders, data
            except SoapFault as f:
                return 500, [("Content-Type", "text/xml; charset=utf-8")], f.envelope()


def make_handler(shim):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
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
    a = p.parse_args()
    shim = Shim("127.0.0.1", a.upstream_port, a.block_size, a.max_extents)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.listen_port), make_handler(shim))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    sys.stderr.write(f"cbt-shim: listening on 127.0.0.1:{a.listen_port}, upstream 127.0.0.1:{a.upstream_port}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
