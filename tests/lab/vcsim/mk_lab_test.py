#!/usr/bin/env python3
"""mk-lab as a process (CTest lab.MkLab, label scale): the lab the demo, the browser tests
and the scale runs start. Each test runs `mk-lab --out FILE ...`, waits for the file
(written whole once the lab is ready), checks what it says and what is on disk, and
stops mk-lab by PID with SIGTERM, after which its directory is gone.

  * the default lab (--vms 2) keeps vcsim's 4-VM inventory and the names the tests know,
    seeded in the old order with 256+128 MiB disks;
  * a lab at scale (--vms 18 over 3 clusters of 2 hosts and a standalone host) has
    ceil(18/4) VMs per compute resource, seeds the first 18 spread over all of them with
    16+8 MiB sparse disks of 128 KiB data each, spread over 2 datastores (their
    directories in "datastore_dirs"), and blocks the inventory's last VM;
  * --disk-image (repeatable): the VM's disks, in unit order, are sparse copies of the
    given raw images, each of its image's size; the images are not written;
  * refusals: --vms 257, --blocked-vm with every VM seeded, --disk-image of a size that
    is no multiple of 1 KiB or with --disk-mib.

usage: mk_lab_test.py MK_LAB_BINARY
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

MK_LAB = None


class MkLab:
    def __init__(self, *args):
        self.dir = tempfile.mkdtemp(prefix="mk-lab-test-")
        self.out = os.path.join(self.dir, "lab.json")
        self.log_path = os.path.join(self.dir, "mk-lab.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([MK_LAB, "--out", self.out, *args], stdout=log, stderr=subprocess.STDOUT)
        for _ in range(1200):  # a hang guard only: the file appears once the lab is made
            if os.path.exists(self.out) or self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if not os.path.exists(self.out):
            self.stop()
            raise AssertionError("mk-lab made no lab: " + open(self.log_path).read())
        with open(self.out) as f:
            self.lab = json.load(f)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        return self.proc.returncode


def run_refused(*args):
    with tempfile.TemporaryDirectory(prefix="mk-lab-test-") as d:
        p = subprocess.run([MK_LAB, "--out", os.path.join(d, "lab.json"), *args], capture_output=True, text=True,
                           timeout=60)
        return p.returncode, p.stderr


class MkLabTest(unittest.TestCase):
    def start(self, *args):
        lab = MkLab(*args)
        self.addCleanup(lab.stop)
        return lab

    def test_the_default_lab_keeps_its_inventory_and_names(self):
        lab = self.start("--vms", "2")
        inv = lab.lab["inventory"]
        self.assertEqual((inv["clusters"], inv["hosts_per_cluster"], inv["standalone_hosts"], inv["vms"]),
                         (1, 3, 1, 4))
        self.assertEqual([v["name"] for v in lab.lab["vms"]], ["DC0_H0_VM0", "DC0_H0_VM1"])
        for vm in lab.lab["vms"]:
            self.assertEqual([d["capacity_bytes"] >> 20 for d in vm["disks"]], [256, 128], vm)
        lab_dir = lab.lab["lab_dir"]
        self.assertEqual(lab.stop(), 0)
        self.assertFalse(os.path.exists(lab_dir), "mk-lab left its directory behind")

    def test_a_lab_at_scale_spreads_its_vms_and_keeps_disks_sparse(self):
        lab = self.start("--vms", "18", "--clusters", "3", "--hosts-per-cluster", "2", "--standalone-hosts", "1",
                         "--datastores", "2", "--blocked-vm")
        dirs = lab.lab["datastore_dirs"]
        self.assertEqual(sorted(dirs), ["LocalDS_0", "LocalDS_1"])
        inv = lab.lab["inventory"]
        self.assertEqual((inv["clusters"], inv["hosts"], inv["standalone_hosts"], inv["vms"]), (3, 7, 1, 20))
        names = [v["name"] for v in lab.lab["vms"]]
        self.assertEqual(len(names), 18)
        self.assertEqual(len(set(names)), 18)
        self.assertEqual(names[:5], ["DC0_H0_VM0", "DC0_C0_RP0_VM0", "DC0_C1_RP0_VM0", "DC0_C2_RP0_VM0",
                                     "DC0_H0_VM1"])
        self.assertEqual(lab.lab["blocked_vm"]["name"], "DC0_C2_RP0_VM4")
        self.assertNotIn("DC0_C2_RP0_VM4", names)
        for vm in lab.lab["vms"]:
            self.assertEqual([d["capacity_bytes"] >> 20 for d in vm["disks"]], [16, 8], vm)
            for d in vm["disks"]:
                ds = d["file_name"][1:d["file_name"].index("]")]
                self.assertTrue(d["flat_file"].startswith(dirs[ds] + "/"), d)
                st = os.stat(d["flat_file"])
                self.assertEqual(st.st_size, d["capacity_bytes"])
                self.assertLessEqual(st.st_blocks * 512, 256 << 10, f"{d['flat_file']} is not sparse")
        on = [d["file_name"].split("]")[0][1:] for vm in lab.lab["vms"] for d in vm["disks"]]
        self.assertEqual((on.count("LocalDS_0"), on.count("LocalDS_1")), (18, 18))
        self.assertGreater(lab.lab["seconds_to_make"], 0)

    def test_disk_images_become_the_vms_disks_in_unit_order(self):
        work = tempfile.mkdtemp(prefix="mk-lab-images-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", work]))
        images = []
        for i, (size, data) in enumerate([(3 << 20, b"boot disk"), (1 << 20, b"data disk")]):
            path = os.path.join(work, f"disk{i}.raw")
            with open(path, "wb") as f:
                f.truncate(size)
                f.seek(size // 2)
                f.write(data)
            images.append(path)
        before = [open(p, "rb").read() for p in images]
        lab = self.start("--vms", "1", "--disk-image", images[0], "--disk-image", images[1])
        (vm,) = lab.lab["vms"]
        disks = sorted(vm["disks"], key=lambda d: d["unit"])
        self.assertEqual([d["capacity_bytes"] for d in disks], [3 << 20, 1 << 20], vm)
        for d, image, data in zip(disks, images, before):
            self.assertEqual(open(d["flat_file"], "rb").read(), data, d)
            self.assertNotEqual(os.path.realpath(d["flat_file"]), os.path.realpath(image))
        self.assertEqual([open(p, "rb").read() for p in images], before, "an image was written")

    def test_refusals(self):
        with tempfile.NamedTemporaryFile(suffix=".raw") as odd:
            odd.truncate(1000)
            odd.flush()
            rc, err = run_refused("--vms", "1", "--disk-image", odd.name)
            self.assertEqual(rc, 1, err)
            self.assertIn("not a positive multiple of 1 KiB", err)
            rc, err = run_refused("--disk-image", odd.name, "--disk-mib", "16")
            self.assertEqual(rc, 2, err)
            self.assertIn("--disk-image replaces --disk-mib", err)
        rc, err = run_refused("--vms", "257")
        self.assertEqual(rc, 2, err)
        self.assertIn("--vms must be 1..256", err)
        rc, err = run_refused("--vms", "8", "--clusters", "2", "--blocked-vm")
        self.assertEqual(rc, 2, err)
        self.assertIn("--blocked-vm needs a VM the lab does not seed", err)


if __name__ == "__main__":
    MK_LAB = sys.argv.pop(1)
    unittest.main(verbosity=2)
