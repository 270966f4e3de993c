#!/bin/bash
# Installs the web content; runs as root, as AIB runs a scriptUri script.
set -euo pipefail
mkdir -p /var/www/site
echo "release ${1:-unset}" > /var/www/site/version.txt
echo "install.sh ran as $(id -un)"
