#!/usr/bin/env bash
# System packages prodvision needs from Debian: the Fashion-MNIST dataset and Chromium (browser test of the
# upload page). Installs only what is missing, and only as root; otherwise says what to install.
set -euo pipefail
need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || [ -n "${PRODVISION_DATA:-}" ] \
  || [ -f data/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "error: missing system packages: ${need[*]}" >&2
  echo "  install them with:  sudo apt-get install ${need[*]}" >&2
  echo "  (Fashion-MNIST can instead be downloaded when online: .venv/bin/prodvision data fetch --download)" >&2
  exit 1
fi
