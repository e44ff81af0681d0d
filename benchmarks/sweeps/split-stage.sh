#!/bin/bash
# Run after ../shared/tools/device-stage. A device call carries 64 MiB, the tracked tree included (24 MiB now, most
# of it committed train logs), so device-stage's two calls (44 and 48 MiB) no longer fit: this re-cuts the
# compressed model into three parts of about 30 MB and puts the data, the wheel and assemble.sh with the third.
# Then make three calls back to back:
#   carry [.devcache/p1]  'mkdir -p /root/m && cp .devcache/p1/* /root/m/'
#   carry [.devcache/p2]  'cp .devcache/p2/* /root/m/'
#   carry [.devcache/p3]  'source .devcache/p3/assemble.sh && ... goals.sh'   (the last part, data, wheel)
set -eu
cd "$(git rev-parse --show-toplevel)/.devcache"
[ -f p2/assemble.sh ] && [ -f p1/smollm2.xz.1 ] || { echo "no .devcache/p2/assemble.sh: run ../shared/tools/device-stage first" >&2; exit 1; }
grep -q '\.devcache/p2/smollm2\.xz\.2' p2/assemble.sh || { echo "assemble.sh changed: check p2/assemble.sh by hand" >&2; exit 1; }
rm -rf cut p3 && mkdir cut p3
cat p1/smollm2.xz.1 p2/smollm2.xz.2 > cut/all && split -n 3 -d -a 1 cut/all cut/smollm2.xz.part && rm cut/all
rm p1/smollm2.xz.1 p2/smollm2.xz.2
mv p2/* p3/
mv cut/smollm2.xz.part0 p1/ && mv cut/smollm2.xz.part1 p2/ && mv cut/smollm2.xz.part2 p3/
rmdir cut
# the model is the three parts in order; the third comes with this call, the first two wait in /root/m
sed -i 's#\[ -f /root/m/smollm2\.xz\.1 \]#[ -f /root/m/smollm2.xz.part0 ] \&\& [ -f /root/m/smollm2.xz.part1 ]#;
        s#cat /root/m/smollm2\.xz\.1 \.devcache/p2/smollm2\.xz\.2#cat /root/m/smollm2.xz.part0 /root/m/smollm2.xz.part1 .devcache/p3/smollm2.xz.part2#;
        s#\.devcache/p2/#.devcache/p3/#g' p3/assemble.sh
grep -q 'smollm2.xz.part2' p3/assemble.sh && grep -q 'part0 \] && \[' p3/assemble.sh \
  || { echo "assemble.sh changed: check p3/assemble.sh by hand" >&2; exit 1; }
du -sh p1 p2 p3
