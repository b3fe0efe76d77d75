#!/usr/bin/env bash
# The README's demo: build the bundled sample phone, image it, verify it, restore it, check it.
# Usage: bash docs/demo.sh [OUTDIR]   (make demo runs it after setting the machine up)
set -euo pipefail
OUT=${1:-demo-out}
mkdir -p "$OUT"
PHONE="$OUT/phone.img"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building the sample phone (A/B GPT, ext4/vfat file systems, erased and random regions)"
[ -f "$PHONE" ] || python3 -m fixtures.phone "$PHONE" --size 256M
sha256sum "$PHONE"

step "imager info: the partition table"
imager info "$PHONE"

step "imager acquire: phone -> seekable zstd image (sha256 + md5)"
rm -f "$OUT/phone.imgz" "$OUT/phone.imgz.journal"
imager acquire "$PHONE" "$OUT/phone.imgz" --hash sha256,md5 --case DEMO-1 --examiner demo
ls -l "$PHONE" "$OUT/phone.imgz"

step "stock zstd -d gives back the exact device bytes"
zstd -q -d -c "$OUT/phone.imgz" | sha256sum

step "imager verify: every chunk and the whole-image hashes"
imager verify "$OUT/phone.imgz"

step "imager show"
imager show "$OUT/phone.imgz"

step "imager restore onto a blank copy, with read-back verification"
rm -f "$OUT/restored.img"
imager restore "$OUT/phone.imgz" "$OUT/restored.img" --yes
sha256sum "$PHONE" "$OUT/restored.img"
cmp "$PHONE" "$OUT/restored.img" && echo "restored image is identical to the phone"
