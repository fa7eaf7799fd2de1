#!/usr/bin/env bash
# Headless Chromium + ChromeDriver for the model server's web page test (Debian packages). Needs root or
# passwordless sudo; without them the web page test is skipped and says why.
set -euo pipefail
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
