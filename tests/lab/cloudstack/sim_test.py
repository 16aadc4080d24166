#!/usr/bin/env python3
"""Behaviour of the CloudStack simulator (cloudstack_sim.py), the double every CloudStack
test trusts: if it accepted anything, those tests would prove nothing. Each test starts
the simulator on 127.0.0.1 (port 0, read from its --port-file), signs its requests with
its own implementation of CloudStack's signing (not the project's C++ signer), and stops
it by PID.

  * a signed call is answered; a wrong secret, a wrong key, no signature, a parameter
    added after signing, an expired signatureVersion 3 request are refused with 401;
  * malformed calls: an unknown command (432, "errorresponse"), a missing parameter
    (431 naming it), a response format other than json (431);
  * an asynchronous job's lifecycle: createVolume returns a jobid at once, the job goes
    from pending to succeeded with the volume, the volume is then listed; an injected
    job failure ends with jobstatus 2 and CloudStack's errorcode/errortext; a hung job
    stays pending; an unknown job id is refused;
  * several OMA VMs (--oma-vm) and the per-VM data-volume cap: listHypervisorCapabilities
    answers KVM's maxdatavolumeslimit (32); the 33rd data volume attached to one OMA VM
    fails with CloudStack's InvalidParameterValueException (431) and is not attached, the
    same volume attaches to the other OMA VM and appears only in that VM's by-id
    directory, and a detach frees a slot.
"""

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

SIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cloudstack_sim.py")
API_KEY = "test-api-key"
SECRET = "test-secret-key"
ZONE = "z0000000-0000-4000-8000-000000000001"
CUSTOM_DISK_OFFERING = "do000000-0000-4000-8000-000000000001"
OMA_1 = "0a000000-0000-4000-8000-00000000000a"  # the simulator's default --oma-vm-id
OMA_2 = "0b000000-0000-4000-8000-00000000000b"


def sign(params, secret=SECRET):
    """CloudStack's request signature (ApiServer.verifyRequest): names sorted, values
    encoded as Java's URLEncoder with "+" then replaced by "%20" ("*" kept), the whole
    string lower-cased, HMAC-SHA1, base64."""
    text = "&".join(f"{k}={urllib.parse.quote(v, safe='*')}" for k, v in sorted(params.items())).lower()
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()).decode()


class Simulator:
    def __init__(self, extra_args=()):
        self.dir = tempfile.mkdtemp(prefix="mk-cs-sim-test-")
        secret_file = os.path.join(self.dir, "secret")
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, SECRET.encode())
        os.close(fd)
        os.mkdir(os.path.join(self.dir, "state"))
        os.mkdir(os.path.join(self.dir, "by-id"))
        port_file = os.path.join(self.dir, "port")
        self.log = open(os.path.join(self.dir, "sim.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, SIM, "--port-file", port_file, "--state-dir", os.path.join(self.dir, "state"),
             "--by-id-dir", os.path.join(self.dir, "by-id"), "--api-key", API_KEY, "--secret-key-file", secret_file,
             "--job-delay", "0", *[a.replace("{dir}", self.dir) for a in extra_args]],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(3000):  # a start guard only: the port file appears once it listens
            if os.path.exists(port_file) or self.proc.poll() is not None:
                break
            time.sleep(0.01)
        if not os.path.exists(port_file):
            self.stop()
            raise RuntimeError("the simulator did not start: " + open(os.path.join(self.dir, "sim.log")).read())
        with open(port_file) as f:
            self.base = f"http://127.0.0.1:{int(f.read())}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def raw(self, params):
        """GET /client/api with these exact parameters: (HTTP status, JSON body)."""
        url = f"{self.base}/client/api?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def call(self, command, **params):
        p = dict(params, command=command, response="json", apiKey=API_KEY)
        p["signature"] = sign(p)
        return self.raw(p)

    def control(self, path, body):
        req = urllib.request.Request(f"{self.base}{path}", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def job(self, job_id):
        status, body = self.call("queryAsyncJobResult", jobid=job_id)
        assert status == 200, body
        return body["queryasyncjobresultresponse"]

    def wait_job(self, job_id):
        for _ in range(3000):  # a hang guard only: the job runs with --job-delay 0
            j = self.job(job_id)
            if j["jobstatus"] != 0:
                return j
            time.sleep(0.01)
        raise AssertionError(f"job {job_id} still pending")


class SimTest(unittest.TestCase):
    def setUp(self):
        self.sim = Simulator()
        self.addCleanup(self.sim.stop)

    def sim_state(self):
        with urllib.request.urlopen(f"{self.sim.base}/control/state", timeout=30) as r:
            return json.load(r)

    def assert_refused(self, status, body, code, text):
        self.assertEqual(status, code, body)
        (answer,) = body.values()
        self.assertEqual(answer["errorcode"], code, body)
        self.assertIn(text, answer["errortext"], body)

    def test_a_signed_call_is_answered(self):
        status, body = self.sim.call("listZones", name="zone with space*")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["listzonesresponse"], {})  # no such zone: an empty answer
        status, body = self.sim.call("listZones")
        self.assertEqual(status, 200, body)
        self.assertEqual([z["id"] for z in body["listzonesresponse"]["zone"]], [ZONE])

    def test_bad_signatures_are_refused(self):
        good = {"command": "listZones", "response": "json", "apiKey": API_KEY}
        cases = {
            "wrong secret": dict(good, signature=sign(good, "another-secret")),
            "wrong key": dict(good, apiKey="other-key", signature=sign(dict(good, apiKey="other-key"))),
            "no signature": dict(good),
            "parameter added after signing": dict(good, signature=sign(good), name="x"),
            "expired signatureVersion 3": dict(
                dict(good, signatureVersion="3", expires="2001-01-01T00:00:00+0000"),
                signature=sign(dict(good, signatureVersion="3", expires="2001-01-01T00:00:00+0000"))),
        }
        for what, params in cases.items():
            with self.subTest(what):
                status, body = self.sim.raw(params)
                self.assert_refused(status, body, 401, "unable to verify user credentials")
        # The same request correctly signed passes: the refusals above are the signature's.
        status, body = self.sim.raw(dict(good, signature=sign(good)))
        self.assertEqual(status, 200, body)

    def test_malformed_calls_are_refused(self):
        status, body = self.sim.call("deployEverything")
        self.assert_refused(status, body, 432, "does not exist")
        self.assertIn("errorresponse", body)
        status, body = self.sim.call("createVolume", name="v1", diskofferingid=CUSTOM_DISK_OFFERING, size="1")
        self.assert_refused(status, body, 431, "missing parameter zoneid")
        p = {"command": "listZones", "response": "xml", "apiKey": API_KEY}
        status, body = self.sim.raw(dict(p, signature=sign(p)))
        self.assert_refused(status, body, 431, "only response=json")
        status, body = self.sim.call("queryAsyncJobResult", jobid="00000000-0000-4000-8000-000000000000")
        self.assert_refused(status, body, 431, "invalid value")
        self.assertEqual(self.sim_state()["volumes"], [])  # the refused createVolume made none

    def test_async_job_lifecycle(self):
        status, body = self.sim.call("createVolume", name="v1", zoneid=ZONE, diskofferingid=CUSTOM_DISK_OFFERING,
                                     size="1")
        self.assertEqual(status, 200, body)
        started = body["createvolumeresponse"]
        job = self.sim.wait_job(started["jobid"])
        self.assertEqual(job["jobstatus"], 1, job)
        self.assertEqual(job["cmd"], "createVolume")
        volume = job["jobresult"]["volume"]
        self.assertEqual(volume["name"], "v1")
        self.assertEqual(volume["size"], 1024 ** 3)
        if "id" in started:  # announced when the job started: the same volume
            self.assertEqual(started["id"], volume["id"])
        status, body = self.sim.call("listVolumes", id=volume["id"])
        self.assertEqual(status, 200, body)
        self.assertEqual([v["name"] for v in body["listvolumesresponse"]["volume"]], ["v1"])

        # A job CloudStack fails: jobstatus 2 with its errorcode and errortext; no volume.
        self.sim.control("/control/fail", {"command": "createVolume", "how": "job", "errortext": "no storage"})
        status, body = self.sim.call("createVolume", name="v2", zoneid=ZONE, diskofferingid=CUSTOM_DISK_OFFERING,
                                     size="1")
        self.assertEqual(status, 200, body)
        job = self.sim.wait_job(body["createvolumeresponse"]["jobid"])
        self.assertEqual(job["jobstatus"], 2, job)
        self.assertEqual(job["jobresult"], {"errorcode": 530, "errortext": "no storage"})
        status, body = self.sim.call("listVolumes", name="v2")
        self.assertEqual(body["listvolumesresponse"], {}, body)

        # A hung job stays pending: nothing runs it.
        self.sim.control("/control/fail", {"command": "createVolume", "how": "hang"})
        status, body = self.sim.call("createVolume", name="v3", zoneid=ZONE, diskofferingid=CUSTOM_DISK_OFFERING,
                                     size="1")
        job_id = body["createvolumeresponse"]["jobid"]
        self.assertEqual(self.sim.job(job_id)["jobstatus"], 0)
        self.assertEqual(self.sim.job(job_id)["jobstatus"], 0)


    def test_os_types_boot_type_and_mode(self):
        status, body = self.sim.call("listOsTypes", description="debian gnu/linux 12")
        self.assertEqual(status, 200, body)
        self.assertEqual([o["description"] for o in body["listostypesresponse"]["ostype"]],
                         ["Debian GNU/Linux 12 (64-bit)", "Debian GNU/Linux 12 (32-bit)"])
        debian = body["listostypesresponse"]["ostype"][0]
        self.assertEqual(debian["oscategoryname"], "Debian")

        base = dict(serviceofferingid="so000000-0000-4000-8000-000000000002",
                    templateid="t0000000-0000-4000-8000-000000000001", zoneid=ZONE,
                    networkids="n0000000-0000-4000-8000-000000000001", startvm="false")
        # UEFI needs a bootmode; SECURE needs UEFI; the values are enums (case ignored).
        status, body = self.sim.call("deployVirtualMachine", name="a", boottype="UEFI", **base)
        self.assertEqual(status, 530, body)
        status, body = self.sim.call("deployVirtualMachine", name="b", boottype="BIOS", bootmode="SECURE", **base)
        self.assert_refused(status, body, 431, "SECURE")
        status, body = self.sim.call("deployVirtualMachine", name="c", boottype="EFI", bootmode="LEGACY", **base)
        self.assert_refused(status, body, 431, "Invalid bootType")
        status, body = self.sim.call("deployVirtualMachine", name="d", boottype="uefi", bootmode="secure", **base)
        self.assertEqual(status, 200, body)
        vm = self.sim.wait_job(body["deployvirtualmachineresponse"]["jobid"])["jobresult"]["virtualmachine"]
        self.assertEqual((vm["boottype"], vm["bootmode"]), ("UEFI", "SECURE"))
        # The template's OS type until updateVirtualMachine changes it (stopped VMs only).
        self.assertEqual(vm["guestosid"], "os000000-0000-4000-8000-000000000002")
        status, body = self.sim.call("updateVirtualMachine", id=vm["id"], ostypeid=debian["id"])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["updatevirtualmachineresponse"]["virtualmachine"]["guestosid"], debian["id"])
        status, body = self.sim.call("updateVirtualMachine", id=vm["id"], ostypeid="os000000-0000-4000-8000-999999999999")
        self.assert_refused(status, body, 431, "invalid value")
        status, body = self.sim.call("updateVirtualMachine", id=OMA_1, ostypeid=debian["id"])
        self.assert_refused(status, body, 431, "stop VM")


class SeveralOmaVmsTest(unittest.TestCase):
    def setUp(self):
        self.sim = Simulator(["--oma-vm", OMA_2 + "={dir}/by-id-2"])
        self.addCleanup(self.sim.stop)
        self.by_id = {OMA_1: os.path.join(self.sim.dir, "by-id"), OMA_2: os.path.join(self.sim.dir, "by-id-2")}

    def run_job(self, command, **params):
        status, body = self.sim.call(command, **params)
        self.assertEqual(status, 200, body)
        return self.sim.wait_job(body[command.lower() + "response"]["jobid"])

    def new_volume(self, name):
        job = self.run_job("createVolume", name=name, zoneid=ZONE, diskofferingid=CUSTOM_DISK_OFFERING, size="1")
        self.assertEqual(job["jobstatus"], 1, job)
        return job["jobresult"]["volume"]["id"]

    def links(self, vm_id):
        return sorted(os.listdir(self.by_id[vm_id]))

    def test_hypervisor_capabilities_answer_the_cap(self):
        status, body = self.sim.call("listHypervisorCapabilities", hypervisor="KVM")
        self.assertEqual(status, 200, body)
        answer = body["listhypervisorcapabilitiesresponse"]
        self.assertEqual(answer["count"], 1, body)
        (kvm,) = answer["hypervisorCapabilities"]
        self.assertEqual((kvm["hypervisor"], kvm["hypervisorversion"], kvm["maxdatavolumeslimit"]),
                         ("KVM", "default", 32), body)
        status, body = self.sim.call("listVirtualMachines")
        vms = {v["id"]: v for v in body["listvirtualmachinesresponse"]["virtualmachine"]}
        self.assertEqual({i: (vms[i]["name"], vms[i]["state"], vms[i]["hypervisor"]) for i in (OMA_1, OMA_2)},
                         {OMA_1: ("oma", "Running", "KVM"), OMA_2: ("oma-2", "Running", "KVM")})

    def test_the_33rd_data_volume_is_refused_on_a_full_oma_vm_and_accepted_on_another(self):
        volumes = [self.new_volume(f"disk-{i}") for i in range(34)]
        for vol in volumes[:32]:
            job = self.run_job("attachVolume", id=vol, virtualmachineid=OMA_1)
            self.assertEqual(job["jobstatus"], 1, job)
        self.assertEqual(len(self.links(OMA_1)), 32)

        job = self.run_job("attachVolume", id=volumes[32], virtualmachineid=OMA_1)
        self.assertEqual(job["jobstatus"], 2, job)
        self.assertEqual(job["jobresult"], {
            "errorcode": 431,
            "errortext": "The specified VM already has the maximum number of data disks (32) attached. "
                         "Please specify another VM."})
        status, body = self.sim.call("listVolumes", id=volumes[32])
        (vol,) = body["listvolumesresponse"]["volume"]
        self.assertNotIn("virtualmachineid", vol, vol)
        self.assertEqual(len(self.links(OMA_1)), 32)

        # The cap is per VM: the other OMA VM takes the same volume, in its own by-id.
        job = self.run_job("attachVolume", id=volumes[32], virtualmachineid=OMA_2)
        self.assertEqual(job["jobstatus"], 1, job)
        self.assertEqual(job["jobresult"]["volume"]["virtualmachineid"], OMA_2)
        self.assertEqual(job["jobresult"]["volume"]["vmname"], "oma-2")
        serial = volumes[32].replace("-", "")[:20]
        self.assertEqual(self.links(OMA_2), ["virtio-" + serial])
        self.assertNotIn("virtio-" + serial, self.links(OMA_1))
        status, body = self.sim.call("listVolumes", virtualmachineid=OMA_1)
        self.assertEqual(body["listvolumesresponse"]["count"], 32, body)

        # A detach frees a slot on the full one.
        job = self.run_job("detachVolume", id=volumes[0])
        self.assertEqual(job["jobstatus"], 1, job)
        job = self.run_job("attachVolume", id=volumes[33], virtualmachineid=OMA_1)
        self.assertEqual(job["jobstatus"], 1, job)
        self.assertEqual(len(self.links(OMA_1)), 32)


if __name__ == "__main__":
    unittest.main(verbosity=2)
