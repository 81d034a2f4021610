#!/usr/bin/env bash
# Installs Debian's Chromium for the explorer's browser tests (Playwright drives /usr/bin/chromium;
# `playwright install` downloads browsers and cannot work offline). Does nothing when it is there.
# Set WITH_CHROMEDRIVER=1 to also install chromium-driver (Selenium's driver, same version as Chromium).
set -euo pipefail

packages=()
[ -x /usr/bin/chromium ] || packages+=(chromium)
if [ "${WITH_CHROMEDRIVER:-0}" = "1" ] && ! command -v chromedriver >/dev/null 2>&1; then
  packages+=(chromium-driver)
fi

if [ ${#packages[@]} -eq 0 ]; then
  echo "browser: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: apt-get not found; install ${packages[*]} with your package manager" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-browser: run as root (or install sudo) to apt-get install ${packages[*]}" >&2
    exit 1
  fi
  sudo="sudo"
fi
echo "install-browser: apt-get install ${packages[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
echo "browser: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
