# SPDX-License-Identifier: MIT
# Sourced by the benchmarks in bench/: what they all do the same way.

# seconds COMMAND... — runs it (stdout dropped, stderr shown only when it
# fails) and prints its wall time in seconds; fails when it does.
seconds() {
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null 2>"$dir/stderr" || { cat "$dir/stderr" >&2; return 1; }
    end=$(date +%s%N)
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f\n", (e - s) / 1e9 }'
}

# median: the median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# make_striped_source PATH: a 1 GiB raw file of 1 MiB stripes, random data
# and holes alternating (512 MiB of data), the convert benchmarks' source.
make_striped_source() {
    perl -e '
        my ($path) = @ARGV;
        open(my $rnd, "<:raw", "/dev/urandom") or die "/dev/urandom: $!\n";
        open(my $f, "+>:raw", $path) or die "$path: $!\n";
        truncate($f, 1 << 30) or die "truncate: $!\n";
        for my $i (0 .. 1023) {
            next if $i % 2;          # odd stripes stay holes
            read($rnd, my $buf, 1 << 20) == 1 << 20 or die "short read\n";
            seek($f, $i << 20, 0) or die "seek: $!\n";
            print $f $buf or die "write: $!\n";
        }
        close($f) or die "close: $!\n";
    ' "$1"
}

# bench_prepare NAME TOOL... — the common start of a benchmark: $rounds (at
# least 3) and $qed (built) checked, the TOOLs on the PATH, and a fresh
# work directory $dir under $BENCH_DIR (default /var/tmp), removed on exit.
bench_prepare() {
    local name=$1 tool
    shift
    dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/qed-$name.XXXXXX")
    trap 'rm -rf "$dir"' EXIT
    [ "$rounds" -ge 3 ] || { echo "bench: at least 3 rounds" >&2; exit 1; }
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
    done
    [ -x "$qed" ] || { echo "bench: $qed is missing (run make)" >&2; exit 1; }
}
