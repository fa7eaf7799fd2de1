#!/usr/bin/env bash
# What some tests use beyond the project's venv:
#  - a local Google Cloud Storage (tests/gcs_emulator: gcp-storage-emulator + mitmproxy) in its own venv, pinned;
#  - headless Chromium + ChromeDriver for the model server's web page test (Debian packages). They need root or
#    passwordless sudo; without them the web page test is skipped and says why.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GCS_VENV=$ROOT/.venv/tools/gcs-emulator
GCS_REQUIREMENTS=$ROOT/tests/gcs_emulator/requirements.txt
GCS_STAMP=$GCS_VENV/.requirements-sha256
gcs_wanted=$(sha256sum "$GCS_REQUIREMENTS" | cut -d' ' -f1)
if [ "$(cat "$GCS_STAMP" 2>/dev/null)" != "$gcs_wanted" ]; then
  echo "[test-deps] installing the GCS emulator into $GCS_VENV" >&2
  rm -rf "$GCS_VENV"
  python3.11 -m venv "$GCS_VENV"
  "$GCS_VENV/bin/python" -m pip install --quiet --no-deps -r "$GCS_REQUIREMENTS"
  echo "$gcs_wanted" > "$GCS_STAMP"
fi

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; else
    echo "[test-deps] chromium/chromedriver missing and no root: the web page test will be skipped" >&2
    exit 0
  fi
fi
echo "[test-deps] installing Debian's chromium and chromium-driver" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
