#!/bin/bash -e
# A quickstart-style customization script, as AIB users write them: it runs as root in AIB,
# so it writes system files without sudo (and a sudo in it still works).

cat >> /etc/motd << EOF2
*******************************************************
**      This VM was built by an image template       **
*******************************************************
EOF2

echo "Telemetry: creating files"
mkdir /myfiles
echo "Telemetry: running sudo 'as-is' in a script"
sudo touch /myfiles/somethingElevated.txt

# The marketplace image has its package lists and these packages already.
apt-get install -y unattended-upgrades curl
echo "customizeScript.sh ran as $(id -un)"
