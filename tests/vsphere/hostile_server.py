#!/usr/bin/env python3
"""Test double: an HTTPS server that answers each SOAP method with a canned response.

For a POST whose SOAP Body starts with <METHOD>, the answer is described by the JSON file
DIR/METHOD.json, read at every request so that a test can change it between calls:
  {"status": 200, "body": "<xml...>", "repeat": 0, "claim_extra": 0}
"repeat" appends that many bytes of filler to the body (a huge answer); "claim_extra"
announces that many more bytes than are sent, then closes (a truncated answer). A
method without a file gets a SOAP fault naming it. Standard library only.
"""
import argparse
import http.server
import json
import os
import re
import ssl
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--dir", required=True)
    a = p.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode("utf-8", "replace")
            m = re.search(r"<(?:\w+:)?Body>\s*<(?:\w+:)?(\w+)", body)
            method = m.group(1) if m else "unknown"
            sys.stderr.write(f"hostile: method {method}\n")
            sys.stderr.flush()
            path = os.path.join(a.dir, method + ".json")
            if os.path.exists(path):
                with open(path) as f:
                    spec = json.load(f)
            else:
                spec = {"status": 500, "body": '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
                        f"<s:Body><s:Fault><faultcode>s:Server</faultcode><faultstring>no canned answer for {method}</faultstring>"
                        "</s:Fault></s:Body></s:Envelope>"}
            data = spec.get("body", "").encode() + b"x" * spec.get("repeat", 0)
            self.send_response(spec.get("status", 200))
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(len(data) + spec.get("claim_extra", 0)))
            if method == "Login":
                self.send_header("Set-Cookie", 'vmware_soap_session="hostile"; Path=/; HttpOnly; Secure')
            self.end_headers()
            self.wfile.write(data)
            if spec.get("claim_extra", 0):
                self.close_connection = True

        def log_message(self, fmt, *args):
            sys.stderr.write("hostile: " + (fmt % args) + "\n")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
