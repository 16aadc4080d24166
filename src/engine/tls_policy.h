// TLS cipher policy for NBD connections.
//
// GnuTLS picks CHACHA20-POLY1305 first on CPUs where it does not detect accelerated
// AES-GCM (these VMs among them, although they have AES-NI), and servers follow the
// client's order. AES-GCM runs about 3× faster here, so TLS copies are much faster with
// ChaCha20 disabled. libnbd offers no priority setting, and GnuTLS reads its system
// priority file (GNUTLS_SYSTEM_PRIORITY_FILE) only when the library loads; so the
// process re-executes itself once with a private in-memory priority file.
//
// An operator's own GNUTLS_SYSTEM_PRIORITY_FILE is always respected, and
// MIGRATEKIT_TLS_CIPHERS=system turns this off.
#pragma once

namespace mk::engine {

// Call first thing in main(), before any thread starts. Returns normally when nothing
// needs doing or the re-exec failed (the copy then uses GnuTLS's defaults).
// `tls_always`: the process will use TLS whatever its arguments say (the VMA's copies
// are always nbds://); otherwise only an nbds:// argument asks for it.
void apply_tls_cipher_policy(int argc, char** argv, bool tls_always = false);

}  // namespace mk::engine
