# SPDX-License-Identifier: MIT
# Helpers for the interop tests: sourced by every tests/interop/*.sh.
#
# Output is TAP: each check is one test point; the plan (1..N) is printed by
# done_testing at the end.  Every script gets its own temporary directory ($T,
# also the working directory) which is removed on exit unless QED_TEST_KEEP=1.
#
# Environment: QED (the qed binary; default build/qed next to this tree),
# TMPDIR, QED_TEST_TIMEOUT (seconds any single command may take, default 60),
# QED_TEST_KEEP=1 (keep the temporary directory, for debugging).
#
# When executed rather than sourced (run-tests.pl runs every *.sh here), this
# file tests its own helpers.

set -u

_tap_n=0
_tap_failed=0
_tap_skip_ok=0

# ---- TAP ---------------------------------------------------------------------

# diag LINE... — diagnostics on stderr (shown by the harness).
diag() {
    local line
    for line in "$@"; do
        printf '%s\n' "$line" | sed 's/^/#   /' >&2
    done
}

# note LINE... — comments on stdout (shown only in verbose runs).
note() {
    local line
    for line in "$@"; do
        printf '%s\n' "$line" | sed 's/^/# /'
    done
}

_tap_name() {
    local name="$*"
    name=${name//$'\n'/ }
    printf '%s' "${name//#/\\#}"
}

pass() {
    _tap_n=$((_tap_n + 1))
    printf 'ok %d - %s\n' "$_tap_n" "$(_tap_name "$@")"
}

# fail NAME [DIAG-LINE...]
fail() {
    local name=$1
    shift
    _tap_n=$((_tap_n + 1))
    _tap_failed=$((_tap_failed + 1))
    printf 'not ok %d - %s\n' "$_tap_n" "$(_tap_name "$name")"
    printf '#   Failed test %d: %s\n' "$_tap_n" "$(_tap_name "$name")" >&2
    [ $# -gt 0 ] && diag "$@"
    return 0
}

# skip NAME REASON — a test point that was not run.
skip() {
    _tap_n=$((_tap_n + 1))
    printf 'ok %d - %s # SKIP %s\n' "$_tap_n" "$(_tap_name "$1")" "$(_tap_name "$2")"
}

# ok STATUS NAME [DIAG-LINE...] — passes when STATUS is 0:  [ -f x ]; ok $? "x"
ok() {
    local st=$1
    shift
    if [ "$st" -eq 0 ]; then
        pass "$1"
    else
        fail "$@"
    fi
}

# tap_is GOT EXPECTED NAME
tap_is() {
    if [ "$1" == "$2" ]; then
        pass "$3"
    else
        fail "$3" "got:      '$1'" "expected: '$2'"
    fi
}

# tap_like GOT REGEX NAME — extended regex match (grep -E).
tap_like() {
    if printf '%s\n' "$1" | grep -Eq -- "$2"; then
        pass "$3"
    else
        fail "$3" "got:      '$1'" "expected to match: /$2/"
    fi
}

# Printable form of a command line.
cmdline() {
    local out="" a
    for a in "$@"; do
        out+="$(printf '%q' "$a") "
    done
    printf '%s' "${out% }"
}

TAP_TIMEOUT=${QED_TEST_TIMEOUT:-60}

# run CMD... — runs a command (external ones under a timeout) with stdout in $OUT, stderr in
# $ERR (files) and the exit status in $RC.  Never fails.
OUT= ERR= RC=0
run() {
    OUT=$T/.out ERR=$T/.err
    if declare -F "$1" >/dev/null; then
        "$@" >"$OUT" 2>"$ERR" </dev/null
    else
        timeout -k 5 "$TAP_TIMEOUT" "$@" >"$OUT" 2>"$ERR" </dev/null
    fi
    RC=$?
    return 0
}

_run_diag() {
    local lines=(
        "command: $(cmdline "$@")"
        "exit status: $RC$([ "$RC" -eq 124 ] && echo ' (timed out)')"
    )
    if [ -s "$ERR" ]; then
        lines+=("stderr: $(head -c 2000 "$ERR")")
    fi
    if [ -s "$OUT" ]; then
        lines+=("stdout: $(head -c 2000 "$OUT")")
    fi
    diag "${lines[@]}"
}

# tap_cmd NAME CMD... — runs CMD; passes when it exits 0.
tap_cmd() {
    local name=$1
    shift
    run "$@"
    if [ "$RC" -eq 0 ]; then
        pass "$name"
        return 0
    fi
    fail "$name"
    _run_diag "$@"
    return 1
}

# tap_cmd_rc WANT NAME CMD... — runs CMD; passes when it exits with WANT.
tap_cmd_rc() {
    local want=$1 name=$2
    shift 2
    run "$@"
    if [ "$RC" -eq "$want" ]; then
        pass "$name"
        return 0
    fi
    fail "$name" "expected exit status $want"
    _run_diag "$@"
    return 1
}

# done_testing — prints the plan; the exit status says whether all passed.
done_testing() {
    if [ "$_tap_n" -eq 0 ]; then
        echo "1..0 # SKIP no tests run"
        exit 0
    fi
    echo "1..$_tap_n"
    if [ "$_tap_failed" -gt 0 ]; then
        printf '# %d of %d tests failed\n' "$_tap_failed" "$_tap_n" >&2
        exit 1
    fi
    exit 0
}

# skip_all REASON — the whole script is skipped (must come before any test).
skip_all() {
    echo "1..0 # SKIP $*"
    exit 0
}

# BAIL_OUT REASON — stops the whole run.
bail_out() {
    echo "Bail out! $*"
    exit 255
}

require_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || skip_all "$c is not installed"
    done
}

# ---- environment -------------------------------------------------------------

_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "${QED:-}" ]; then
    QED=$_lib_dir/../../build/qed
fi
case $QED in
/*) ;;
*) QED=$PWD/$QED ;;
esac
export QED

T=$(mktemp -d "${TMPDIR:-/tmp}/qed-interop-$(basename "$0" .sh).XXXXXX") ||
    bail_out "cannot create a temporary directory"
_cleanup() {
    cd / || return
    if [ "${QED_TEST_KEEP:-0}" = 1 ]; then
        echo "# kept $T" >&2
    else
        rm -rf "$T"
    fi
}
trap _cleanup EXIT
# Signals end the script through exit, so the EXIT trap cleans up.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM
cd "$T" || bail_out "cannot cd to $T"

# require_qed — skips the script when the qed binary is not built.
require_qed() {
    [ -x "$QED" ] || skip_all "qed is not built ($QED)"
}

# ---- sizes, files ----------------------------------------------------------

KiB=1024
MiB=$((1024 * 1024))
GiB=$((1024 * 1024 * 1024))

file_size() { stat -c %s "$1"; }

# lock_bytes FILE — the image lock bytes (QEMU's 100..103, 200..203) locked
# on FILE by any process, sorted, one line: "100 101 103 201 203".  A byte
# two open files lock is listed twice.
lock_bytes() {
    local dev ino id
    dev=$((0x$(stat -c %D "$1"))) && ino=$(stat -c %i "$1") || return 1
    # /proc/locks names a file MAJOR:MINOR:INODE (device numbers in hex).
    id=$(printf '%02x:%02x:%s' $(((dev >> 8) & 0xfff)) \
        $(((dev & 0xff) | ((dev >> 12) & 0xfff00))) "$ino")
    awk -v id="$id" '$0 !~ /->/ && $6 == id {
        for (b = $7; b <= $8; b++)
            if ((b >= 100 && b <= 103) || (b >= 200 && b <= 203)) print b }' \
        /proc/locks | sort -n | paste -sd' '
}

# wait_unlocked FILE [SECONDS] — waits (default up to 5 s) until no process
# holds a lock byte on FILE: the kernel finishes tearing down a SIGKILLed
# process's open files (its writes in flight, then its locks) a little
# after wait(1) returns.  Fails when the locks are still there.
wait_unlocked() {
    local i n=$((${2:-5} * 100))
    [ -r /proc/locks ] || return 0
    for ((i = 0; i < n; i++)); do
        [ -z "$(lock_bytes "$1")" ] && return 0
        sleep 0.01
    done
    return 1
}

# poke_le FILE OFFSET WIDTH VALUE — writes an unsigned little-endian integer
# (WIDTH 1, 2, 4 or 8 bytes) at OFFSET without truncating the file.
poke_le() {
    perl -e '
        my ($f, $off, $w, $v) = @ARGV;
        my %fmt = (1 => "C", 2 => "v", 4 => "V", 8 => "Q<");
        $v = oct($v) if $v =~ /^0/;
        open(my $fh, "+<", $f) or die "$f: $!\n";
        binmode $fh;
        seek($fh, $off, 0) or die "seek: $!\n";
        print $fh pack($fmt{$w}, $v) or die "write: $!\n";
        close($fh) or die "close: $!\n";
    ' "$@"
}

# peek_le FILE OFFSET WIDTH — prints the little-endian integer at OFFSET.
peek_le() {
    perl -e '
        my ($f, $off, $w) = @ARGV;
        my %fmt = (1 => "C", 2 => "v", 4 => "V", 8 => "Q<");
        open(my $fh, "<", $f) or die "$f: $!\n";
        binmode $fh;
        seek($fh, $off, 0) or die "seek: $!\n";
        read($fh, my $buf, $w) == $w or die "short read\n";
        print unpack($fmt{$w}, $buf), "\n";
    ' "$@"
}

# QED header fields (byte offsets in the header).
HDR_CLUSTER_SIZE=4      # u32
HDR_TABLE_SIZE=8        # u32
HDR_HEADER_SIZE=12      # u32
HDR_FEATURES=16         # u64
HDR_COMPAT_FEATURES=24  # u64
HDR_AUTOCLEAR=32        # u64
HDR_L1_OFFSET=40        # u64
HDR_IMAGE_SIZE=48       # u64
HDR_BACKING_OFFSET=56   # u32
HDR_BACKING_SIZE=60     # u32

# same_raw NAME A B — the two raw files have the same size and content.  Large
# files are compared with qemu-img compare (which skips holes) instead of cmp.
same_raw() {
    local name=$1 a=$2 b=$3 sa sb
    if [ ! -f "$a" ] || [ ! -f "$b" ]; then
        fail "$name" "missing file: $([ -f "$a" ] || echo "$a") $([ -f "$b" ] || echo "$b")"
        return 1
    fi
    sa=$(file_size "$a")
    sb=$(file_size "$b")
    if [ "$sa" != "$sb" ]; then
        fail "$name" "$a is $sa bytes, $b is $sb bytes"
        return 1
    fi
    if [ "$sa" -le $((256 * MiB)) ]; then
        run cmp "$a" "$b"
    else
        run qemu-img compare -f raw -F raw "$a" "$b"
    fi
    if [ "$RC" -eq 0 ]; then
        pass "$name"
        return 0
    fi
    fail "$name"
    _run_diag cmp "$a" "$b"
    return 1
}

# ---- JSON (JSON::PP is in perl core) -------------------------------------------

_json_pl='
use strict;
use warnings;
use JSON::PP;

sub load {
    my ($f) = @_;
    open(my $fh, "<", $f) or die "$f: $!\n";
    local $/;
    my $text = <$fh>;
    my $data = eval { JSON::PP->new->allow_nonref->decode($text) };
    die "$f: not valid JSON: $@" if $@;
    return $data;
}

sub show {
    my ($v) = @_;
    return "<absent>" if !defined $v;
    return JSON::PP->new->canonical->allow_nonref->encode($v);
}

sub plain {
    my ($v) = @_;
    return "null" if !defined $v;
    return show($v) if ref $v;
    return "$v";
}

my @map_keys = qw(start length depth present zero data offset);

my $mode = shift @ARGV;
if ($mode eq "canon") {
    print show(load($ARGV[0])), "\n";
} elsif ($mode eq "get") {
    my ($f, $path) = @ARGV;
    my $v = load($f);
    for my $k (grep { length } split /\//, $path) {
        if (ref $v eq "ARRAY" && $k =~ /^\d+$/) {
            exit 2 if $k >= @$v;
            $v = $v->[$k];
        } elsif (ref $v eq "HASH") {
            exit 2 if !exists $v->{$k};
            $v = $v->{$k};
        } else {
            exit 2;
        }
    }
    print plain($v), "\n";
} elsif ($mode eq "type") {
    my $v = load($ARGV[0]);
    print ref($v) eq "ARRAY" ? "array" : ref($v) eq "HASH" ? "object" : "scalar", "\n";
} elsif ($mode eq "maplines") {
    # One line per map entry, keys in a fixed order, absent keys omitted.
    my $v = load($ARGV[0]);
    die "$ARGV[0]: map output is not an array\n" if ref $v ne "ARRAY";
    for my $e (@$v) {
        die "$ARGV[0]: map entry is not an object\n" if ref $e ne "HASH";
        my %seen;
        my @parts;
        for my $k (@map_keys, sort keys %$e) {
            next if $seen{$k}++ || !exists $e->{$k};
            push @parts, "$k=" . show($e->{$k});
        }
        print join(" ", @parts), "\n";
    }
} elsif ($mode eq "infocmp") {
    # infocmp QEMU.json QED.json [EXTRA-KEY...]: every key QEMU prints must be
    # printed by qed with the same value; qed may add only the EXTRA keys.
    my ($qf, $mf, @extra) = @ARGV;
    my %extra = map { $_ => 1 } @extra;
    my ($q, $m) = (load($qf), load($mf));
    my @bad;
    my @pairs;
    if (ref $q eq "ARRAY") {
        if (ref $m ne "ARRAY") {
            print "qemu-img printed an array, qed did not\n";
            exit 1;
        }
        push @bad, sprintf("qemu-img printed %d objects, qed %d", scalar @$q, scalar @$m)
            if @$q != @$m;
        for my $i (0 .. $#$q) {
            push @pairs, ["[$i] ", $q->[$i], $m->[$i] // {}];
        }
    } else {
        @pairs = (["", $q, $m]);
    }
    for my $p (@pairs) {
        my ($tag, $qo, $mo) = @$p;
        if (ref $mo ne "HASH") {
            push @bad, "${tag}qed did not print an object";
            next;
        }
        for my $k (sort keys %$qo) {
            my ($a, $b) = (show($qo->{$k}), exists $mo->{$k} ? show($mo->{$k}) : "<absent>");
            push @bad, "${tag}$k: qemu-img $a, qed $b" if $a ne $b;
        }
        for my $k (sort keys %$mo) {
            next if exists $qo->{$k} || $extra{$k};
            push @bad, "${tag}$k: qemu-img <absent>, qed " . show($mo->{$k});
        }
    }
    print "$_\n" for @bad;
    exit(@bad ? 1 : 0);
} else {
    die "unknown mode $mode\n";
}
'

# json_get FILE PATH — prints the value at PATH ("0/format", "dirty-flag",
# "format-specific/type"): strings bare, true/false, numbers, objects as
# canonical JSON.  Exit status 2 when the path does not exist.
json_get() { perl -e "$_json_pl" get "$@"; }

# json_type FILE — array, object or scalar.
json_type() { perl -e "$_json_pl" type "$@"; }

# json_canon FILE — canonical JSON (sorted keys, no spaces).
json_canon() { perl -e "$_json_pl" canon "$@"; }

# json_maplines FILE — one normalised line per map entry.
json_maplines() { perl -e "$_json_pl" maplines "$@"; }

# tap_json_field FILE PATH EXPECTED NAME
tap_json_field() {
    local got
    got=$(json_get "$1" "$2" 2>&1)
    case $? in
    0) ;;
    2) got="<absent>" ;;
    *) got="<error: $got>" ;;
    esac
    tap_is "$got" "$3" "$4"
}

# map_covers FILE SIZE — the map entries in FILE are contiguous from 0 and
# cover exactly SIZE bytes; prints the first problem.
map_covers() {
    json_maplines "$1" | awk -v size="$2" -v pos=0 '
        { split($1, a, "="); split($2, b, "=");
          if (a[2] != pos) { print "entry " NR " starts at " a[2] ", expected " pos; bad = 1; exit 1 }
          pos += b[2] }
        END { if (!bad && pos != size) { print "entries cover " pos " bytes, expected " size; exit 1 } }
    '
}

# map_agrees NAME IMG [ARGS...] — qed map --output=json and qemu-img map
# --output=json print the same entries for IMG.
map_agrees() {
    local name=$1 img=$2
    shift 2
    local qj=$T/.qemu-map.json mj=$T/.qed-map.json
    if ! qemu-img map --output=json "$@" "$img" >"$qj" 2>"$T/.qemu-map.err"; then
        fail "$name" "qemu-img map failed: $(cat "$T/.qemu-map.err")"
        return 1
    fi
    run "$QED" map --output=json "$@" "$img"
    if [ "$RC" -ne 0 ]; then
        fail "$name"
        _run_diag "$QED" map --output=json "$@" "$img"
        return 1
    fi
    cp "$OUT" "$mj"
    local ql ml
    ql=$(json_maplines "$qj" 2>&1) || { fail "$name" "qemu-img map: $ql"; return 1; }
    ml=$(json_maplines "$mj" 2>&1) || { fail "$name" "qed map: $ml" "output: $(head -c 2000 "$mj")"; return 1; }
    if [ "$ql" == "$ml" ]; then
        pass "$name"
        return 0
    fi
    fail "$name" "diff (- qemu-img map, + qed map):" \
        "$(diff -U1 <(printf '%s\n' "$ql") <(printf '%s\n' "$ml") | tail -n +3 | head -60)"
    return 1
}

# Fields qed info may print that qemu-img info does not.
INFO_ALLOWED_EXTRAS=(format-specific)

# info_agrees NAME IMG [ARGS...] — qed info --output=json prints every field
# qemu-img info --output=json prints, with the same value; qed may add the
# fields in INFO_ALLOWED_EXTRAS and nothing else.
info_agrees() {
    local name=$1 img=$2
    shift 2
    local qj=$T/.qemu-info.json mj=$T/.qed-info.json res
    if ! qemu-img info --output=json "$@" "$img" >"$qj" 2>"$T/.qemu-info.err"; then
        fail "$name" "qemu-img info failed: $(cat "$T/.qemu-info.err")"
        return 1
    fi
    run "$QED" info --output=json "$@" "$img"
    if [ "$RC" -ne 0 ]; then
        fail "$name"
        _run_diag "$QED" info --output=json "$@" "$img"
        return 1
    fi
    cp "$OUT" "$mj"
    res=$(perl -e "$_json_pl" infocmp "$qj" "$mj" "${INFO_ALLOWED_EXTRAS[@]}" 2>&1)
    if [ $? -eq 0 ]; then
        pass "$name"
        return 0
    fi
    fail "$name" "$res" "qed printed: $(head -c 3000 "$mj")"
    return 1
}

# ---- consistency ---------------------------------------------------------------

# qed_walk IMG — an independent consistency check of a QED file: prints
# "clusters=N leaks=L corruptions=C" (and one line per problem) and exits 0
# when there is neither.  Every cluster of the file past the header must be the
# L1 table, an L2 table or a data cluster, referenced once.
qed_walk() {
    perl -e '
        use strict;
        my $f = shift;
        open(my $fh, "<", $f) or die "$f: $!\n";
        binmode $fh;
        sub rd { my ($o, $n) = @_; seek($fh, $o, 0) or die "seek\n"; my $got = read($fh, my $b, $n); die "short read at $o\n" if $got != $n; $b }
        my ($magic, $cs, $ts, $hs, $feat) = unpack("VVVVQ<", rd(0, 24));
        my $l1 = unpack("Q<", rd(40, 8));
        die "bad magic\n" if $magic != 0x00444551;
        die "bad cluster size $cs\n" if $cs < 4096 || ($cs & ($cs - 1));
        die "bad table size $ts\n" if $ts < 1 || $ts > 16 || ($ts & ($ts - 1));
        my $size = -s $f;
        my $n = int(($size + $cs - 1) / $cs);
        my @problems;
        my %ref;
        my $corrupt = 0;
        my $use = sub {
            my ($off, $count, $what) = @_;
            if ($off % $cs || $off < $hs * $cs || $off + $count * $cs > $n * $cs) {
                push @problems, "$what at $off is misaligned or outside the file";
                $corrupt++;
                return 0;
            }
            for my $c ($off / $cs .. $off / $cs + $count - 1) {
                if ($ref{$c}) { push @problems, "cluster $c referenced twice ($ref{$c}, $what)"; $corrupt++; }
                $ref{$c} = $what;
            }
            return 1;
        };
        $use->($l1, $ts, "L1 table") or die "L1 table outside the file\n";
        my $nelems = $ts * $cs / 8;
        my @l1e = unpack("Q<*", rd($l1, $ts * $cs));
        for my $i (0 .. $#l1e) {
            my $o = $l1e[$i];
            next if !$o;
            $use->($o, $ts, "L2 table $i") or next;
            my @l2e = unpack("Q<*", rd($o, $ts * $cs));
            for my $j (0 .. $#l2e) {
                my $d = $l2e[$j];
                next if $d <= 1;
                $use->($d, 1, "data $i/$j");
            }
        }
        my $leaks = 0;
        for my $c ($hs .. $n - 1) {
            next if $ref{$c};
            $leaks++;
            push @problems, "cluster $c (offset " . $c * $cs . ") is not referenced" if $leaks <= 10;
        }
        print "clusters=$n leaks=$leaks corruptions=$corrupt\n";
        print "$_\n" for @problems[0 .. ($#problems < 20 ? $#problems : 19)];
        exit(($leaks || $corrupt) ? 1 : 0);
    ' "$1"
}

# qemu_false_leaks IMG — how many leaks qemu-img check (QEMU 7.2) reports for
# a consistent QED file.  QEMU's qed_bytes_to_clusters() divides by
# cluster_size - 1, so a file of N clusters is scanned as N*cs/(cs-1) clusters
# and the surplus shows up as leaks: 1 per 4095 clusters with 4 KiB clusters
# (files over ~16 MiB), 1 per 65535 clusters with 64 KiB clusters.
qemu_false_leaks() {
    local cs n
    cs=$(peek_le "$1" "$HDR_CLUSTER_SIZE" 4)
    n=$(($(file_size "$1") / cs))
    echo $((n * cs / (cs - 1) - n))
}

# qemu_check NAME IMG — qemu-img check finds no problem in IMG: exit 0, or
# exit 3 with exactly QEMU's false leaks (see qemu_false_leaks) when the
# independent qed_walk finds no leak and no corruption.
qemu_check() {
    local name=$1 img=$2 leaks corr errs expect walk
    run qemu-img check --output=json "$img"
    if [ "$RC" -eq 0 ]; then
        pass "$name"
        return 0
    fi
    if [ "$RC" -eq 3 ]; then
        cp "$OUT" "$T/.check.json"
        leaks=$(json_get "$T/.check.json" leaks 2>/dev/null || echo 0)
        corr=$(json_get "$T/.check.json" corruptions 2>/dev/null || echo 0)
        errs=$(json_get "$T/.check.json" check-errors 2>/dev/null || echo 0)
        expect=$(qemu_false_leaks "$img")
        walk=$(qed_walk "$img" 2>&1)
        if [ $? -eq 0 ] && [ "$corr" = 0 ] && [ "$errs" = 0 ] && [ "$leaks" = "$expect" ]; then
            pass "$name (QEMU's $leaks false leak(s) for a file of this size)"
            return 0
        fi
        fail "$name" "qemu-img check --output=json: $(tr -d '\n' <"$T/.check.json")" \
            "false leaks expected from QEMU's cluster arithmetic: $expect" "independent walk: $walk"
        return 1
    fi
    fail "$name"
    _run_diag qemu-img check --output=json "$img"
    return 1
}

# ---- image building (QEMU side) ------------------------------------------------

# qemu_io ARGS... -- COMMANDS... — runs qemu-io ARGS with one -c per command
# (output in $OUT/$ERR, status in $RC); succeeds when every command did.
# Usage: qemu_io -f qed img.qed -- "write 0 4k" "write -z 8k 4k"
qemu_io() {
    local args=() cmds=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        args+=("$1")
        shift
    done
    shift
    local c
    for c in "$@"; do
        cmds+=(-c "$c")
    done
    run qemu-io "${cmds[@]}" "${args[@]}"
    # qemu-io reports some failures only in its output.
    if [ "$RC" -eq 0 ] && grep -Eq 'failed|verification' "$OUT" "$ERR"; then
        RC=1
    fi
    [ "$RC" -eq 0 ]
}

# std_writes CS SIZE [TS] — prints (one per line) qemu-io commands that write
# a mix of patterns to an image with cluster size CS and virtual size SIZE:
# sector-sized, unaligned, cluster-straddling, whole-cluster, write -z over
# unallocated clusters, a partial write into a zero cluster, a partial write -z
# into a data cluster, a write across an L2 table boundary (when the image has
# two L2 tables; TS = table size) and a write ending at the end of the image.
std_writes() {
    local cs=$1 size=$2 ts=${3:-4}
    local l2=$((cs * (ts * cs / 8)))
    echo "write -P 0x11 0 512"
    echo "write -P 0x22 $((cs - 100)) 300"
    echo "write -P 0x33 $((3 * cs + 7)) $((cs + 13))"
    echo "write -P 0x44 $((6 * cs)) $((2 * cs))"
    echo "write -z $((9 * cs)) $((2 * cs))"
    echo "write -P 0x55 $((9 * cs + 1000)) 100"
    echo "write -z $((6 * cs + 10)) 20"
    echo "write -P 0x66 $((12 * cs + 4096)) 1"
    if [ $((l2 + 3000)) -le "$size" ]; then
        echo "write -P 0x77 $((l2 - 1000)) 3000"
    fi
    echo "write -P 0x88 $((size - 700)) 700"
}

# make_raw_ref REF SIZE CMDS-FILE — a raw file of SIZE (sparse) with the
# commands in CMDS-FILE applied by qemu-io -f raw.
make_raw_ref() {
    local ref=$1 size=$2 cmdfile=$3 cmds=()
    rm -f "$ref"
    truncate -s "$size" "$ref"
    mapfile -t cmds <"$cmdfile"
    [ ${#cmds[@]} -eq 0 ] || qemu_io -f raw "$ref" -- "${cmds[@]}"
}

# ---- image builders -------------------------------------------------------------
#
# Each builder makes a set of images with qemu-img/qemu-io and reports one test
# point, "QEMU builds ...": the QEMU side of every test is checked as it runs.

_bfail=0 _bdiag=()
_build_begin() { _bfail=0; _bdiag=(); }
# b CMD... — one build step (an external command).
b() {
    [ "$_bfail" -eq 0 ] || return 1
    run "$@"
    if [ "$RC" -ne 0 ]; then
        _bfail=1
        _bdiag=("step failed: $(cmdline "$@")" "exit status $RC" "$(head -c 2000 "$ERR")")
        return 1
    fi
}
# bio FMT IMG CMD... — one qemu-io step.
bio() {
    [ "$_bfail" -eq 0 ] || return 1
    local fmt=$1 img=$2
    shift 2
    if ! qemu_io -f "$fmt" "$img" -- "$@"; then
        _bfail=1
        _bdiag=("qemu-io -f $fmt $img failed: $(cmdline "$@")" "exit status $RC"
            "$(head -c 2000 "$OUT")" "$(head -c 2000 "$ERR")")
        return 1
    fi
}
_build_end() {
    if [ "$_bfail" -eq 0 ]; then
        pass "QEMU builds $1"
        return 0
    fi
    fail "QEMU builds $1" "${_bdiag[@]}"
    return 1
}

# Cluster size:table size pairs QEMU can open (table_size=1 it cannot; 2M
# clusters with table_size=16 it refuses to create: its maximum-size
# computation, cluster_size * entries^2 = 2^65, overflows).
QEMU_GEOMETRIES="4096:2 4096:4 4096:8 4096:16 65536:2 65536:4 65536:16 1048576:2 1048576:8 2097152:4 2097152:8"

# geometry_size CS TS — the virtual size used for that geometry: two L2 tables
# and half a cluster when that is at most ~2 GiB, else 16.5 clusters.
geometry_size() {
    local cs=$1 ts=$2 l2
    l2=$((cs * (ts * cs / 8)))
    if [ $((2 * l2)) -le $((2 * GiB)) ]; then
        echo $((2 * l2 + cs / 2))
    else
        echo $((16 * cs + cs / 2))
    fi
}

# build_std_image IMG CS TS — qemu-img create + std_writes by qemu-io; also
# writes IMG.cmds (the commands) and IMG.size.
build_std_image() {
    local img=$1 cs=$2 ts=$3 size cmds=()
    size=$(geometry_size "$cs" "$ts")
    std_writes "$cs" "$size" "$ts" >"$img.cmds"
    echo "$size" >"$img.size"
    mapfile -t cmds <"$img.cmds"
    _build_begin
    rm -f "$img"
    b qemu-img create -q -f qed -o "cluster_size=$cs,table_size=$ts" "$img" "$size"
    bio qed "$img" "${cmds[@]}"
    _build_end "$img (cluster_size=$cs, table_size=$ts, size $size)"
}

# build_raw_backed DIR — DIR/top.qed (4k clusters, 6 MiB) over DIR/base.raw
# (4 MiB + 1536 bytes, -F raw): partial-cluster COW, whole clusters, zero
# clusters over backing data, a cluster straddling the backing end, data past
# the backing end.
build_raw_backed() {
    local d=$1
    mkdir -p "$d"
    _build_begin
    rm -f "$d/base.raw" "$d/top.qed"
    b truncate -s $((4 * MiB + 1536)) "$d/base.raw"
    bio raw "$d/base.raw" "write -P 0xa1 0 256k" "write -P 0xa2 $((MiB + 3)) 5000" \
        "write -P 0xa3 $((4 * MiB)) 1536"
    b qemu-img create -q -f qed -o cluster_size=4k -b base.raw -F raw "$d/top.qed" 6M
    bio qed "$d/top.qed" "write -P 0x11 1000 100" "write -P 0x12 64k 8k" \
        "write -z 300k 8k" "write -z 128k 8k" "write -P 0x13 $((4 * MiB + 100)) 200" \
        "write -P 0x14 5M 4k"
    _build_end "$d/top.qed over a shorter raw backing file"
}

# build_qed_chain DIR — DIR/top.qed (16k clusters, table_size 2, 4 MiB) over
# DIR/mid.qed (4k, 3 MiB) over DIR/base.qed (64k, 2 MiB), all -F qed.
build_qed_chain() {
    local d=$1
    mkdir -p "$d"
    _build_begin
    rm -f "$d/base.qed" "$d/mid.qed" "$d/top.qed"
    b qemu-img create -q -f qed -o cluster_size=64k "$d/base.qed" 2M
    bio qed "$d/base.qed" "write -P 0xb1 0 192k" "write -P 0xb2 1M 64k" "write -z 512k 128k"
    b qemu-img create -q -f qed -o cluster_size=4k -b base.qed -F qed "$d/mid.qed" 3M
    bio qed "$d/mid.qed" "write -P 0xc1 4k 8k" "write -P 0xc2 $((64 * KiB - 100)) 200" \
        "write -z $((MiB + 4 * KiB)) 4k" "write -P 0xc3 $((2 * MiB + 512)) 512"
    b qemu-img create -q -f qed -o cluster_size=16k,table_size=2 -b mid.qed -F qed "$d/top.qed" 4M
    bio qed "$d/top.qed" "write -P 0xd1 0 1000" "write -P 0xd2 160k 16k" \
        "write -P 0xd3 $((3 * MiB + 16 * KiB - 10)) 20" "write -z 512k 16k"
    _build_end "a 3-deep QED chain $d/top.qed -> mid.qed -> base.qed"
}

# build_qed_pair DIR — DIR/top.qed over DIR/base.qed, same geometry and size.
build_qed_pair() {
    local d=$1
    mkdir -p "$d"
    _build_begin
    rm -f "$d/base.qed" "$d/top.qed"
    b qemu-img create -q -f qed -o cluster_size=4k "$d/base.qed" 1M
    bio qed "$d/base.qed" "write -P 0xe1 0 64k" "write -P 0xe2 512k 12k"
    b qemu-img create -q -f qed -o cluster_size=4k -b base.qed -F qed "$d/top.qed" 1M
    bio qed "$d/top.qed" "write -P 0xe3 8k 4k" "write -P 0xe4 $((512 * KiB + 2000)) 100" "write -z 16k 8k"
    _build_end "a 2-deep QED chain $d/top.qed -> base.qed"
}

# build_relative DIR — backing names relative to the image's directory:
# DIR/images/top.qed -> "mid.qed" -> "../base/disk.raw" (-F raw), and
# DIR/images/abs.qed -> absolute path of DIR/images/mid.qed.
build_relative() {
    local d=$1
    mkdir -p "$d/base" "$d/images/sub"
    _build_begin
    rm -f "$d/base/disk.raw" "$d/images/mid.qed" "$d/images/top.qed" "$d/images/abs.qed"
    b truncate -s 2M "$d/base/disk.raw"
    bio raw "$d/base/disk.raw" "write -P 0xf1 0 64k" "write -P 0xf2 1M 4k"
    b qemu-img create -q -f qed -o cluster_size=4k -b ../base/disk.raw -F raw "$d/images/mid.qed" 2M
    bio qed "$d/images/mid.qed" "write -P 0xf3 32k 64k"
    b qemu-img create -q -f qed -o cluster_size=4k -b mid.qed -F qed "$d/images/top.qed" 2M
    bio qed "$d/images/top.qed" "write -P 0xf4 40k 4k"
    b qemu-img create -q -f qed -o cluster_size=4k -b "$(cd "$d/images" && pwd)/mid.qed" -F qed \
        "$d/images/abs.qed" 2M
    bio qed "$d/images/abs.qed" "write -P 0xf5 1M 4k"
    _build_end "relative and absolute backing names under $d"
}

# build_probed_raw_backing DIR — DIR/top.qed over DIR/base.raw with the
# backing format left to probing (QED_F_BACKING_FORMAT_NO_PROBE cleared).
build_probed_raw_backing() {
    local d=$1
    mkdir -p "$d"
    _build_begin
    rm -f "$d/base.raw" "$d/top.qed"
    b truncate -s 1M "$d/base.raw"
    bio raw "$d/base.raw" "write -P 0xa1 4k 64k"
    b qemu-img create -q -f qed -o cluster_size=4k -b base.raw -F raw "$d/top.qed" 2M
    bio qed "$d/top.qed" "write -P 0x21 1000 100"
    b poke_le "$d/top.qed" "$HDR_FEATURES" 8 1
    _build_end "$d/top.qed over a raw backing file whose format is probed"
}

# ---- self-test (when executed, not sourced) ------------------------------------

if [ "${BASH_SOURCE[0]}" == "$0" ]; then
    tap_is "$(cmdline printf '%s' 'a b')" "printf %s a\\ b" "cmdline quotes arguments"
    run sh -c 'echo out; echo err >&2; exit 3'
    tap_is "$RC/$(cat "$OUT")/$(cat "$ERR")" "3/out/err" "run captures status, stdout and stderr"
    printf '[{"b": 1, "a": [true, null]}]' >j.json
    tap_is "$(json_canon j.json)" '[{"a":[true,null],"b":1}]' "json_canon sorts keys"
    tap_is "$(json_get j.json 0/a/0)" "true" "json_get reads nested values"
    json_get j.json 0/c >/dev/null
    tap_is "$?" 2 "json_get reports a missing key with status 2"
    printf '[{"zero": false, "start": 0, "length": 512, "offset": 8, "x": 1}]' >m.json
    tap_is "$(json_maplines m.json)" 'start=0 length=512 zero=false offset=8 x=1' \
        "json_maplines orders known keys first"
    printf '{"a": 1, "b": "x"}' >q.json
    printf '{"a": 1, "b": "x", "format-specific": {}}' >m1.json
    printf '{"a": 2, "c": 0}' >m2.json
    perl -e "$_json_pl" infocmp q.json m1.json format-specific >/dev/null
    ok $? "infocmp accepts equal fields plus allowed extras"
    tap_is "$(perl -e "$_json_pl" infocmp q.json m2.json format-specific)" \
        "$(printf '%s\n' 'a: qemu-img 1, qed 2' 'b: qemu-img "x", qed <absent>' 'c: qemu-img <absent>, qed 0')" \
        "infocmp lists differing, missing and unexpected fields"
    head -c 64 /dev/zero >h.bin
    poke_le h.bin 16 8 0x102
    tap_is "$(peek_le h.bin 16 8)/$(peek_le h.bin 17 1)/$(file_size h.bin)" "258/1/64" \
        "poke_le writes little-endian in place"
    tap_is "$(std_writes 4096 $((8 * MiB)) 2 | wc -l)" 10 "std_writes includes the L2-crossing write when it fits"
    done_testing
fi
