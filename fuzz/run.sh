#!/usr/bin/env bash
# A fuzzing campaign for one target: `fuzz/run.sh TARGET SECONDS` (or `fuzz/run.sh all SECONDS`,
# every target one after the other).
#
# SECONDS is CPU time of the fuzzer process (user + system, read from /proc), not wall time,
# so a campaign on a busy machine is as long as one on an idle one. The fuzzer (libFuzzer via
# cargo-fuzz, nightly, release with debug assertions) works on a scratch copy of the committed
# corpus; at the end the corpus is minimised into fuzz/corpus/TARGET (the named
# valid-*/garbage-* seeds and findings stay, plus a smallest set of inputs covering every
# edge any committed or new input covers), crashes, hangs (> 10 s) and out-of-memory (> 2 GiB)
# inputs land in fuzz/artifacts/TARGET/, and one line of figures is printed and appended to
# fuzz/campaigns.tsv: target, CPU seconds, runs, coverage (edges), features, corpus files
# before and after, artifacts.
#
# Needs: the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  echo "usage: fuzz/run.sh TARGET|all SECONDS   (SECONDS of fuzzer CPU time per target)" >&2
  echo "targets: $(targets | tr '\n' ' ')" >&2
  exit 2
}
targets() { sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^weft-fuzz$'; }

[ $# -eq 2 ] || usage
target=$1 secs=$2
[[ $secs =~ ^[0-9]+$ ]] && [ "$secs" -gt 0 ] || { echo "fuzz/run.sh: SECONDS must be a positive whole number, not '$secs'" >&2; exit 2; }
if [ "$target" = all ]; then
  rc=0
  for t in $(targets); do "$0" "$t" "$secs" || rc=1; done
  exit $rc
fi
targets | grep -qx "$target" || { echo "fuzz/run.sh: no fuzz target '$target'" >&2; usage; }
cargo +nightly fuzz --help >/dev/null 2>&1 || { echo "fuzz/run.sh: cargo-fuzz on nightly is missing: cargo install cargo-fuzz" >&2; exit 1; }

cargo +nightly fuzz build -O "$target" >&2
bin=$(ls -d target/*/release/"$target" | head -1)
corpus=corpus/$target
arts=artifacts/$target
work=$(mktemp -d "/tmp/weft-fuzz-$target.XXXXXX")
log=$work/fuzz.log
trap 'rm -rf "$work"' EXIT
mkdir -p "$arts" "$work/corpus"
cp "$corpus"/* "$work/corpus/"
before=$(ls "$corpus" | wc -l)
arts_before=$(ls "$arts" | wc -l)

"$bin" "$work/corpus" -artifact_prefix="$arts/" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -max_total_time=$((secs * 20)) >"$log" 2>&1 &
pid=$!
tick=$(getconf CLK_TCK)
cpu=0
while kill -0 "$pid" 2>/dev/null; do
  # utime and stime are fields 14 and 15 of /proc/PID/stat (the name, field 2, has no spaces here).
  if stat=$(cat "/proc/$pid/stat" 2>/dev/null); then
    read -r -a f <<<"$stat"
    cpu=$(((f[13] + f[14]) / tick))
    if [ "$cpu" -ge "$secs" ]; then
      kill -INT "$pid" 2>/dev/null || true
      break
    fi
  fi
  sleep 1
done
wait "$pid" || true

# The last status line: "#RUNS ... cov: EDGES ft: FEATURES corp: ...".
last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")

# Minimise: the named seeds (valid-*, garbage-*, findings) stay; of the rest, committed and
# new, a smallest set covering the same edges replaces the committed files (edges, not hit
# counts: counts keep thousands of files for a JSON parser).
named() { ls "$1" | grep -vxE '[0-9a-f]{40}' || true; }
merged=$work/merged
mkdir -p "$merged"
for f in $(named "$corpus"); do cp "$corpus/$f" "$merged/"; done
if "$bin" -artifact_prefix="$work/" -use_counters=0 -set_cover_merge=1 "$merged" "$corpus" "$work/corpus" >"$work/merge.log" 2>&1; then
  find "$corpus" -maxdepth 1 -type f -regextype posix-extended -regex '.*/[0-9a-f]{40}' -delete
  cp -n "$merged"/* "$corpus/"
else
  echo "fuzz/run.sh: the merge failed (the committed corpus is left as it was):" >&2
  tail -3 "$work/merge.log" >&2
fi
after=$(ls "$corpus" | wc -l)
found=$(($(ls "$arts" | wc -l) - arts_before))

line=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$(date -u +%FT%TZ)" "$target" "$cpu" "${runs:-0}" "${cov:-?}" "${ft:-?}" "$before" "$after" "$found")
[ -f campaigns.tsv ] || printf 'date\ttarget\tcpu_s\truns\tcov\tft\tcorpus_before\tcorpus_after\tartifacts\n' >campaigns.tsv
echo "$line" >>campaigns.tsv
echo "$target: ${cpu} s CPU, ${runs:-0} runs, cov ${cov:-?}, ft ${ft:-?}, corpus $before -> $after files, $found new artifacts"
if [ "$found" -gt 0 ]; then
  grep -E 'ERROR|panicked|SUMMARY' "$log" | head -5 >&2 || true
  for a in $(ls -t "$arts" | head -"$found"); do
    echo "replay: cd fuzz && cargo +nightly fuzz run -O $target $arts/$a" >&2
  done
  exit 1
fi
