#!/bin/bash
# Run after ../shared/tools/device-stage: its second call (.devcache/p2, 48 MiB) no longer fits one device call
# beside the tracked tree (19 MiB; a call carries 64 MiB), so split it in two. Then make three calls back to back:
#   carry [.devcache/p1]   'mkdir -p /root/m && cp .devcache/p1/* /root/m/'
#   carry [.devcache/p2a]  'cp .devcache/p2a/* /root/m/'                      (the model's second part)
#   carry [.devcache/p2b]  'source .devcache/p2b/assemble.sh && ... goals.sh' (data, wheel, assemble.sh)
set -eu
cd "$(git rev-parse --show-toplevel)/.devcache"
[ -f p2/assemble.sh ] || { echo "no .devcache/p2/assemble.sh: run ../shared/tools/device-stage first" >&2; exit 1; }
rm -rf p2a p2b && mkdir p2a p2b
mv p2/smollm2.xz.2 p2a/
mv p2/* p2b/
rmdir p2
sed -i 's#\.devcache/p2/smollm2\.xz\.2#/root/m/smollm2.xz.2#; s#\.devcache/p2/#.devcache/p2b/#g' p2b/assemble.sh
grep -q /root/m/smollm2.xz.2 p2b/assemble.sh || { echo "assemble.sh changed: check p2b/assemble.sh by hand" >&2; exit 1; }
du -sh p1 p2a p2b
