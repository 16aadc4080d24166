#!/usr/bin/env bash
# Builds vcsim (govmomi's vSphere simulator) from Debian's govmomi source package with
# Debian's Go, in GOPATH mode: no Go module is downloaded from anywhere.
#
#   build-vcsim.sh OUT_DIR
#
# OUT_DIR/vcsim is the result; OUT_DIR/work holds the source and Go caches, so a second
# run costs nothing. The source package is fetched with `apt-get source` through a
# private apt configuration (sources, lists and cache under OUT_DIR/work/apt): its
# deb-src entries are derived at run time from the machine's own deb entries, so
# neither /etc/apt nor this repository names any mirror.
set -euo pipefail

out="${1:?usage: build-vcsim.sh OUT_DIR}"
version="0.24.2"
mkdir -p "$out/work"
out="$(cd "$out" && pwd)"
work="$out/work"

if [[ -x "$out/vcsim" && -f "$out/vcsim.version" && "$(cat "$out/vcsim.version")" == "$version" ]]; then
  exit 0
fi

for tool in go dpkg-source apt-get; do
  command -v "$tool" >/dev/null || {
    echo "build-vcsim: '$tool' is missing: run scripts/install-deps (as root)" >&2
    exit 1
  }
done

src="$work/golang-github-vmware-govmomi-$version"
if [[ ! -f "$src/vcsim/main.go" ]]; then
  apt="$work/apt"
  rm -rf "$apt"
  mkdir -p "$apt/sources.list.d" "$apt/lists/partial" "$apt/cache/archives/partial"
  # deb822 files: each "Types: deb" stanza becomes a "Types: deb-src" one.
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    sed -n '/^Types:.*\bdeb\b/,/^$/p' "$f" | sed 's/^Types:.*/Types: deb-src/' \
      >"$apt/sources.list.d/$(basename "$f")"
  done
  # One-line format: "deb URI SUITE COMPONENTS" becomes "deb-src ...".
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    grep -E '^deb[[:space:]]' "$f" | sed 's/^deb\([[:space:]]\)/deb-src\1/' \
      >>"$apt/sources.list.d/derived.list" || true
  done
  aptopts=(-q -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/sources.list.d"
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=root")
  echo "build-vcsim: fetching Debian's govmomi $version source package" >&2
  apt-get "${aptopts[@]}" update >"$work/apt-update.log" 2>&1 || {
    echo "build-vcsim: apt-get update (deb-src) failed; see $work/apt-update.log" >&2
    tail -5 "$work/apt-update.log" >&2
    exit 1
  }
  (cd "$work" && apt-get "${aptopts[@]}" source "golang-github-vmware-govmomi=$version-3" \
      >"$work/apt-source.log" 2>&1) || {
    echo "build-vcsim: apt-get source failed; see $work/apt-source.log" >&2
    tail -5 "$work/apt-source.log" >&2
    exit 1
  }
fi

gopath="$work/gopath"
mkdir -p "$gopath/src/github.com/vmware"
ln -sfn "$src" "$gopath/src/github.com/vmware/govmomi"
echo "build-vcsim: building vcsim (GOPATH mode)" >&2
# govmomi's only outside dependency, github.com/google/uuid, comes from Debian's
# golang-github-google-uuid-dev in /usr/share/gocode.
env GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode" \
  GOCACHE="$work/gocache" \
  go build -o "$out/vcsim.tmp" github.com/vmware/govmomi/vcsim
mv "$out/vcsim.tmp" "$out/vcsim"
echo "$version" >"$out/vcsim.version"
