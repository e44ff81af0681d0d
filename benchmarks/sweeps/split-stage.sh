#!/bin/bash
# Run after ../shared/tools/device-stage. A device call carries 64 MiB, the tracked tree included (about 10 MB since the
# committed train logs are gzipped; 31 MB before), so device-stage's two calls (44 and 48 MiB) were too big: this
# re-cuts the compressed model into three parts and puts the data, the wheel and assemble.sh with the third (about
# 32 MB a call). Three calls also leave a lost machine less to redo (goals.sh).
# Then make three calls back to back, in the order goals.sh's header gives (p3 first, kept in /root/m/p3; then p1;
# then p2 with `source .devcache/p3/assemble.sh` and the first run).
set -eu
cd "$(git rev-parse --show-toplevel)/.devcache"
[ -f p2/assemble.sh ] && [ -f p1/smollm2.xz.1 ] || { echo "no .devcache/p2/assemble.sh: run ../shared/tools/device-stage first" >&2; exit 1; }
grep -q '\.devcache/p2/smollm2\.xz\.2' p2/assemble.sh || { echo "assemble.sh changed: check p2/assemble.sh by hand" >&2; exit 1; }
rm -rf cut p3 && mkdir cut p3
cat p1/smollm2.xz.1 p2/smollm2.xz.2 > cut/all
# every call carries the tracked tree too, so the three calls should carry as much each: the third also holds the
# data, the wheel and assemble.sh, so its part of the model is that much smaller
extra=$(du -cb p2/data.tar.xz p2/whl p2/assemble.sh | tail -1 | cut -f1)
each=$(( ($(stat -c %s cut/all) + extra) / 3 ))
head -c $each cut/all > cut/smollm2.xz.part0
tail -c +$((each + 1)) cut/all | head -c $each > cut/smollm2.xz.part1
tail -c +$((2 * each + 1)) cut/all > cut/smollm2.xz.part2
cmp <(cat cut/smollm2.xz.part0 cut/smollm2.xz.part1 cut/smollm2.xz.part2) cut/all && rm cut/all
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
