#!/bin/bash
# erpcloud (images/): S2, the second half of online growth. The automation grows the EBS volume;
# this grows the XFS file system to match, online. A no-op when there is nothing to grow.
set -euo pipefail
mount_point=/var/lib/postgresql
if ! mountpoint -q "$mount_point"; then
  exit 0
fi
device=$(findmnt -no SOURCE "$mount_point")
disk_bytes=$(blockdev --getsize64 "$device")
fs_bytes=$(df --block-size=1 --output=size "$mount_point" | tail -n 1 | tr -d ' ')
# Grow when the disk is at least 1 GiB larger than the file system.
if [ $((disk_bytes - fs_bytes)) -gt 1073741824 ]; then
  xfs_growfs -d "$mount_point"
fi
