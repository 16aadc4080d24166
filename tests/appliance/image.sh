#!/usr/bin/env bash
# The appliance test's image (fixture appliance.OmaImage): the OMA appliance built by
# scripts/build-appliance from this build's Debian packages (scripts/make-deb), cached in
# the build tree under a name keyed by the hash of its inputs (the builder, the
# appliance and packaging files, this build's binaries and GUI), so an unchanged tree
# costs a hash and a changed one a new image. The current image is linked as
# OUT_DIR/oma.qcow2; older ones are deleted.
#
#   image.sh SOURCE_DIR BUILD_DIR OUT_DIR
set -euo pipefail

src=${1:?usage: image.sh SOURCE_DIR BUILD_DIR OUT_DIR}
build=${2:?usage: image.sh SOURCE_DIR BUILD_DIR OUT_DIR}
out=${3:?usage: image.sh SOURCE_DIR BUILD_DIR OUT_DIR}
mkdir -p "$out"

inputs=$( (cd "$src" && find scripts/build-appliance scripts/make-deb packaging/appliance packaging/debian \
             packaging/etc packaging/systemd packaging/sshd -type f | sort | xargs sha256sum;
           cd "$build" && find bin/oma bin/migratekit web/dist -type f | sort | xargs sha256sum) |
         sha256sum | cut -c1-16)
image="$out/oma-$inputs.qcow2"
if [[ ! -f "$image" ]]; then
  find "$out" -maxdepth 1 -name 'oma-*.qcow2' -delete
  "$src/scripts/make-deb" --build-dir "$build" --out-dir "$out/deb" >/dev/null
  "$src/scripts/build-appliance" --role oma --debs "$out/deb" --out "$image" --cache-dir "$out/debootstrap-cache"
fi
ln -sfn "$(basename "$image")" "$out/oma.qcow2"
echo "appliance image: $image"
