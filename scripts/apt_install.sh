#!/usr/bin/env bash
# Installs Debian packages with apt where it can: as root, or through sudo. A package that
# is installed already is left alone. Without apt, or as a user without sudo, it says so
# and exits 0, so that set-up goes on (each caller says what the package is for).
# Usage: bash scripts/apt_install.sh PACKAGE...
set -euo pipefail

MISSING=()
for PACKAGE in "$@"; do
  if dpkg-query -W -f='${Status}' "$PACKAGE" 2>/dev/null | grep -q "install ok installed"; then
    echo "$PACKAGE is already installed."
  else
    MISSING+=("$PACKAGE")
  fi
done
[ ${#MISSING[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not found: not installing ${MISSING[*]}."
  exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "Not root and sudo not found: not installing. As root: apt-get install -y ${MISSING[*]}"
    exit 0
  fi
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
# A fresh machine or container may have no package lists yet: update only then.
if ! "${SUDO[@]}" apt-get install -y "${MISSING[@]}"; then
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" apt-get install -y "${MISSING[@]}"
fi
