#!/usr/bin/env bash
# The upgrade test's "previous release" (fixture upgrade.PreviousPackages): the Debian
# packages and the lab VMA (vma, vma-lab) built from an older commit of this repository,
# cached in the build tree under that commit's hash, so a rerun costs a `git rev-parse`.
#
#   previous_packages.sh SOURCE_DIR BUILD_DIR OUT_DIR
#
# The base commit: $MK_UPGRADE_BASE when set (any git revision, e.g. HEAD~1), else the
# parent (first parent) of the newest commit on HEAD's first-parent line that changed the
# OMA's schema (src/oma/db/migrations.cpp): the OMA as it was before its last schema
# change, so every run upgrades a database through a real migration, and the base (and
# its cache) moves only when the schema does. Needs the repository's history (a CI clone
# with full history; a shallow one is refused with what to do).
#
# OUT_DIR/COMMIT/ holds the tree (git archive), its build (build/: only the targets the
# packages and the lab VMA need, with ccache when the environment sets it up, vcsim not
# built) and deb/ (that commit's own scripts/make-deb). OUT_DIR/base is a link to the
# current one; older ones are deleted. Prints the commit, its schema and the time taken.
set -euo pipefail

usage="usage: previous_packages.sh SOURCE_DIR BUILD_DIR OUT_DIR"
src=$(cd "${1:?$usage}" && pwd)
build=$(cd "${2:?$usage}" && pwd)
out=${3:?$usage}
mkdir -p "$out"
out=$(cd "$out" && pwd)
started=$(date +%s)

git -C "$src" rev-parse --git-dir >/dev/null 2>&1 ||
  { echo "previous_packages: $src is not a git checkout: the previous release is built from its history" >&2; exit 1; }
if [[ $(git -C "$src" rev-parse --is-shallow-repository) == true ]]; then
  echo "previous_packages: $src is a shallow clone: run 'git fetch --unshallow' (or set MK_UPGRADE_BASE to a commit it has)" >&2
  exit 1
fi
if [[ -n "${MK_UPGRADE_BASE:-}" ]]; then
  base=$(git -C "$src" rev-parse --verify "${MK_UPGRADE_BASE}^{commit}") ||
    { echo "previous_packages: MK_UPGRADE_BASE=$MK_UPGRADE_BASE is not a commit of $src" >&2; exit 1; }
  why="MK_UPGRADE_BASE=$MK_UPGRADE_BASE"
else
  changed=$(git -C "$src" log -1 --first-parent --format=%H HEAD -- src/oma/db/migrations.cpp)
  [[ -n "$changed" ]] || { echo "previous_packages: no commit changed src/oma/db/migrations.cpp: set MK_UPGRADE_BASE" >&2; exit 1; }
  base=$(git -C "$src" rev-parse --verify "$changed^1") ||
    { echo "previous_packages: $changed (the last schema change) has no parent: set MK_UPGRADE_BASE" >&2; exit 1; }
  why="before the last schema change $(git -C "$src" log -1 --format='%h %s' "$changed" | cut -c1-80)"
fi
echo "previous release: $(git -C "$src" log -1 --format='%h %ad' --date=short "$base") ($why)"

dir="$out/$base"
if [[ -f "$dir/done" ]]; then
  ln -sfn "$base" "$out/base"
  echo "previous packages: cached in $dir"
  exit 0
fi
find "$out" -mindepth 1 -maxdepth 1 ! -name "$base" -exec rm -rf {} +
rm -rf "$dir"
mkdir -p "$dir/src"
git -C "$src" archive "$base" | tar -x -C "$dir/src"
if [[ ! -x "$dir/src/scripts/make-deb" ]]; then
  echo "previous_packages: $base has no scripts/make-deb (older than the packages): choose a newer MK_UPGRADE_BASE" >&2
  exit 1
fi
# The same layout as a checkout (TREE/build): with CCACHE_BASEDIR the compiler sees the
# same relative paths, so ccache finds what other builds of these sources left.
# The GUI's modules: this tree's when the lock file is the same (no download), else npm ci.
if [[ -d "$src/web/node_modules" ]] && cmp -s "$src/web/package-lock.json" "$dir/src/web/package-lock.json"; then
  cp -a "$src/web/node_modules" "$dir/src/web/node_modules"
fi
vcsim=()
[[ -x "$build/lab/vcsim/vcsim" ]] && vcsim=(-DMK_VCSIM_DIR="$build/lab/vcsim")
# The version this commit's packages would have had (scripts/make-deb: a base whose
# make-deb predates the stamp ignores it and says what its changelog says, which is older).
version="$(dpkg-parsechangelog -l "$dir/src/packaging/debian/changelog" -S Version)+git$(git -C "$src" rev-list --count "$base").g${base:0:7}"
log="$dir/build.log"
echo "building $base's packages and lab VMA in $dir/src/build (log: $log)"
(cd "$dir/src" &&
 cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${vcsim[@]}" &&
 targets=$(cmake --build build --target help | sed -n 's/^\([A-Za-z0-9_.-]*\): .*/\1/p' |
           grep -x -E 'migratekit|oma|vma|vma-lab|oma-end-tunnel-session|nbdkit-written-filter|migratekit-nbd-router|man|web' |
           paste -sd' ') &&
 cmake --build build -j "${JOBS:-$(nproc)}" --target $targets &&
 MK_DEB_VERSION="$version" scripts/make-deb --build-dir build --out-dir "$dir/deb") >"$log" 2>&1 ||
  { tail -n 40 "$log" >&2; echo "previous_packages: building $base failed (log: $log)" >&2; exit 1; }
mkdir -p "$dir/bin"
cp "$dir/src/build/bin/vma" "$dir/src/build/bin/vma-lab" "$dir/bin/"
# The packages and the lab VMA are all the test needs: the objects go (ccache keeps them).
rm -rf "$dir/src/build" "$dir/src/web/node_modules"
touch "$dir/done"
ln -sfn "$base" "$out/base"
ls -l "$dir"/deb/*.deb | awk '{ printf "  %-40s %8.1f KiB\n", $NF, $5 / 1024 }' | sed "s|$dir/deb/||"
echo "previous packages built in $(($(date +%s) - started)) s"
