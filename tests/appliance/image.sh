#!/usr/bin/env bash
# The appliance tests' images (fixtures appliance.OmaImage, appliance.VmaImage): the OMA
# or VMA appliance (the VMA with its OVA) built by scripts/build-appliance from this
# build's Debian packages (scripts/make-deb), cached in
# the build tree under a name keyed by the hash of its inputs (the builder, the
# appliance and packaging files, this build's binaries and GUI), so an unchanged tree
# costs a hash and a changed one a new image. The current image is linked as
# OUT_DIR/ROLE.qcow2 (and ROLE.ova); older ones are deleted.
#
#   image.sh oma|vma SOURCE_DIR BUILD_DIR OUT_DIR
set -euo pipefail

usage="usage: image.sh oma|vma SOURCE_DIR BUILD_DIR OUT_DIR"
role=${1:?$usage}
src=${2:?$usage}
build=${3:?$usage}
out=${4:?$usage}
mkdir -p "$out"

inputs=$( (cd "$src" && find scripts/build-appliance scripts/make-deb packaging/appliance packaging/debian \
             packaging/etc packaging/systemd packaging/sshd -type f | sort | xargs sha256sum;
           cd "$build" && find "bin/$role" bin/migratekit web/dist -type f | sort | xargs sha256sum) |
         sha256sum | cut -c1-16)
image="$out/$role-$inputs.qcow2"
ova=()
[[ $role == vma ]] && ova=(--ova "$out/$role-$inputs.ova")
if [[ ! -f "$image" ]]; then
  find "$out" -maxdepth 1 \( -name "$role-*.qcow2" -o -name "$role-*.ova" \) -delete
  # Each role its own package directory (CTest runs the two fixtures one at a time: the
  # debootstrap cache is shared).
  "$src/scripts/make-deb" --build-dir "$build" --out-dir "$out/deb-$role" >/dev/null
  "$src/scripts/build-appliance" --role "$role" --debs "$out/deb-$role" --out "$image" "${ova[@]}" \
    --cache-dir "$out/debootstrap-cache"
fi
ln -sfn "$(basename "$image")" "$out/$role.qcow2"
[[ $role == vma ]] && ln -sfn "$role-$inputs.ova" "$out/$role.ova"
echo "appliance image: $image"
