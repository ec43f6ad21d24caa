#!/bin/bash
# erpcloud (images/): at every boot, before PostgreSQL, mount the data volume on the database
# directory. On first boot the blank volume is formatted (XFS) and the image's cluster copied
# onto it. S1: the data volume is encrypted by EBS with the customer's key.
set -euo pipefail
mount_point=/var/lib/postgresql
if mountpoint -q "$mount_point"; then
  exit 0
fi
root_disk=$(lsblk -no PKNAME "$(findmnt -no SOURCE /)")
device=""
for _ in $(seq 1 120); do  # the attachment can trail the boot by a minute or two
  while read -r name kind; do
    if [ "$kind" = "disk" ] && [ "$(basename "$name")" != "$root_disk" ]; then
      device=$name
      break
    fi
  done < <(lsblk -dpno NAME,TYPE)
  if [ -n "$device" ]; then
    break
  fi
  sleep 5
done
if [ -z "$device" ]; then
  echo "erpcloud: no data volume attached after 10 minutes" >&2
  exit 1
fi
if [ -z "$(blkid -o value -s TYPE "$device" || true)" ]; then
  mkfs.xfs -q -L erpdata "$device"
  staging=$(mktemp -d)
  mount "$device" "$staging"
  cp -a "$mount_point"/. "$staging"/
  umount "$staging"
  rmdir "$staging"
fi
uuid=$(blkid -o value -s UUID "$device")
if ! grep -q "UUID=$uuid" /etc/fstab; then
  echo "UUID=$uuid $mount_point xfs defaults,nofail 0 2" >> /etc/fstab
fi
mount "$mount_point"
