#!/usr/bin/env python3
"""The OMA appliance's first boot under qemu (TCG), checked from outside (label appliance).

Boots a throwaway qcow2 overlay of the built OMA image (tests/appliance/image.sh) with
user-mode networking, the guest's API port forwarded to a free port on 127.0.0.1 and the
serial console (ttyS0) in a file, then checks what an operator relies on:
  * the OMA's API answers /health over HTTPS (the time from qemu's start is printed);
  * the first-boot announcement on the console carries the admin token and the HTTPS
    certificate's fingerprint, and the certificate the API serves has that fingerprint;
  * the token is an admin token of this OMA: refused without it, a pairing bundle made
    with it names the address first boot advertised (the guest's DHCP address) and pins
    that certificate.
qemu (appliance_vm.py) is stopped by its PID. No secret is printed: the token and the bundle stay in
memory (the console log in the work directory holds the token, as the console does).

  oma_boot_test.py --image OMA.qcow2 --work-dir DIR [--qemu qemu-system-x86_64] [--timeout S]
"""
import json
import re
import time

from appliance_vm import (BootedVm, arguments, fail, free_port, oma_announcement, request, served_fingerprint,
                          wait_healthy)

GUEST_ADDRESS = "10.0.2.15"  # qemu user networking's first DHCP lease


def main():
    a = arguments(__doc__, "seconds for the boot to reach a healthy API").parse_args()

    port = free_port()
    nic = f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:8082"
    started = time.monotonic()
    with BootedVm(a.qemu, a.image, a.work_dir, 1536, nic) as vm:
        serial = vm.console
        healthy = wait_healthy(vm, port, started, a.timeout)
        print(f"boot to healthy API under TCG: {healthy:.0f} s")

        text, token, fingerprint = oma_announcement(vm)
        if not re.search(r"MK-ROOT-PASSWORD: \S{16}", text):
            fail("the announcement lacks the one-time root password", serial)
        print(f"announced after {time.monotonic() - started:.0f} s")
        if "FAILED" in text:
            fail("a unit failed during the first boot", serial)

        if served_fingerprint(port) != fingerprint:
            fail("the API serves another certificate than the one whose fingerprint was announced", serial)
        status, _ = request(port, "GET", "/api/v1/vmas")
        if status != 401:
            fail(f"GET /api/v1/vmas without a token answered {status}, expected 401", serial)
        status, body = request(port, "GET", "/api/v1/vmas", token)
        if status != 200:
            fail(f"GET /api/v1/vmas with the announced token answered {status}: {body[:200]!r}", serial)
        status, body = request(port, "POST", "/api/v1/vmas/pairing-bundles", token, {})
        if status != 201:
            fail(f"POST /api/v1/vmas/pairing-bundles answered {status}: {body[:200]!r}", serial)
        bundle = json.loads(body)
        expect = {"nbd_host": GUEST_ADDRESS, "ssh_host": GUEST_ADDRESS, "oma_api_fingerprint": fingerprint,
                  "oma_api_url": f"https://{GUEST_ADDRESS}:8082"}
        for field, want in expect.items():
            if bundle.get(field) != want:
                fail(f"pairing bundle: {field} is {bundle.get(field)!r}, expected {want!r}", serial)
        print("appliance OMA: healthy, token and certificate as announced, pairing bundle for "
              f"{GUEST_ADDRESS}")


if __name__ == "__main__":
    main()
