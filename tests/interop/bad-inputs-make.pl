#!/usr/bin/perl
# SPDX-License-Identifier: MIT
# Crafts QED files for tests/interop/bad-inputs.sh, byte by byte, without
# going through any QED writer (so that the header can say anything).
#
#   bad-inputs-make.pl new FILE key=value...
#       Writes a fresh file: a header cluster (or header_size of them), an
#       all-zero L1 table at l1_table_offset, and nothing else.  Keys (all
#       optional): magic cluster_size table_size header_size features
#       compat_features autoclear_features l1_table_offset image_size
#       backing_filename_offset backing_filename_size backing (the name,
#       written at backing_filename_offset, default 64, with
#       QED_F_BACKING_FILE set), file_size (default: just past the L1
#       table).  Defaults: 4 KiB clusters, table_size 4, header_size 1, L1
#       right after the header, 1 MiB.  Values take 0x... and a k/M/G/T
#       suffix (powers of 1024).  The file is sparse.
#
#   bad-inputs-make.pl set FILE field=value...
#       Rewrites header fields of an existing file in place.
#
#   bad-inputs-make.pl l1 FILE INDEX VALUE | l2 FILE L1INDEX INDEX VALUE
#       Writes an L1 entry / an entry of the L2 table an L1 entry names.
#
#   bad-inputs-make.pl get FILE (l1 INDEX | l2 L1INDEX INDEX | FIELD)
#       Prints an entry or a header field.
use strict;
use warnings;
no warnings "portable";

my %off = (
    magic => [0, 4], cluster_size => [4, 4], table_size => [8, 4],
    header_size => [12, 4], features => [16, 8], compat_features => [24, 8],
    autoclear_features => [32, 8], l1_table_offset => [40, 8],
    image_size => [48, 8], backing_filename_offset => [56, 4],
    backing_filename_size => [60, 4],
);

sub num {
    my ($v) = @_;
    my %mul = (k => 1 << 10, K => 1 << 10, M => 1 << 20, G => 1 << 30,
               T => 1 << 40);
    return hex($1) if $v =~ /^0x([0-9a-fA-F]+)$/;
    return $1 * $mul{$2} if $v =~ /^(\d+)([kKMGT])$/;
    die "not a number: $v\n" if $v !~ /^\d+$/;
    return $v + 0;
}

sub put {
    my ($fh, $offset, $bytes) = @_;
    seek($fh, $offset, 0) or die "seek: $!\n";
    print $fh $bytes or die "write: $!\n";
}

sub get {
    my ($fh, $offset, $len) = @_;
    seek($fh, $offset, 0) or die "seek: $!\n";
    my $got = read($fh, my $buf, $len);
    die "short read at $offset\n" if !defined $got || $got != $len;
    return $buf;
}

sub field_bytes {
    my ($name, $value) = @_;
    my $f = $off{$name} or die "unknown field $name\n";
    return pack($f->[1] == 4 ? "V" : "Q<", $value);
}

sub open_rw {
    my ($file) = @_;
    open(my $fh, "+<:raw", $file) or die "$file: $!\n";
    return $fh;
}

sub l2_of {
    my ($fh, $l1i) = @_;
    my $l1 = unpack("Q<", get($fh, 40, 8));
    return unpack("Q<", get($fh, $l1 + 8 * $l1i, 8));
}

my $cmd = shift @ARGV or die "usage: see the top of $0\n";
my $file = shift @ARGV or die "no file\n";

if ($cmd eq "new") {
    my %h = (magic => 0x00444551, cluster_size => 4096, table_size => 4,
             header_size => 1, image_size => 1 << 20);
    for (@ARGV) {
        my ($k, $v) = /^(\w+)=(.*)$/s or die "not key=value: $_\n";
        $h{$k} = $k eq "backing" ? $v : num($v);
    }
    $h{l1_table_offset} //= $h{header_size} * $h{cluster_size};
    if (defined $h{backing}) {
        $h{features} //= 1;
        $h{backing_filename_offset} //= 64;
        $h{backing_filename_size} //= length $h{backing};
    }
    my $end = $h{file_size} // $h{l1_table_offset} + $h{table_size} * $h{cluster_size};
    open(my $fh, ">:raw", $file) or die "$file: $!\n";
    for my $k (keys %off) {
        put($fh, $off{$k}[0], field_bytes($k, $h{$k} // 0));
    }
    put($fh, $h{backing_filename_offset}, $h{backing}) if defined $h{backing};
    truncate($fh, $end) or die "truncate: $!\n";
    close($fh) or die "$file: $!\n";
} elsif ($cmd eq "set") {
    my $fh = open_rw($file);
    for (@ARGV) {
        my ($k, $v) = /^(\w+)=(.*)$/ or die "not key=value: $_\n";
        put($fh, $off{$k}[0], field_bytes($k, num($v)));
    }
    close($fh) or die "$file: $!\n";
} elsif ($cmd eq "l1") {
    my ($i, $v) = @ARGV;
    my $fh = open_rw($file);
    my $l1 = unpack("Q<", get($fh, 40, 8));
    put($fh, $l1 + 8 * $i, pack("Q<", num($v)));
    close($fh) or die "$file: $!\n";
} elsif ($cmd eq "l2") {
    my ($l1i, $i, $v) = @ARGV;
    my $fh = open_rw($file);
    my $l2 = l2_of($fh, $l1i) or die "L1 entry $l1i is empty\n";
    put($fh, $l2 + 8 * $i, pack("Q<", num($v)));
    close($fh) or die "$file: $!\n";
} elsif ($cmd eq "get") {
    open(my $fh, "<:raw", $file) or die "$file: $!\n";
    my $what = shift @ARGV;
    if ($what eq "l1") {
        print l2_of($fh, $ARGV[0]), "\n";
    } elsif ($what eq "l2") {
        my $l2 = l2_of($fh, $ARGV[0]) or die "L1 entry $ARGV[0] is empty\n";
        print unpack("Q<", get($fh, $l2 + 8 * $ARGV[1], 8)), "\n";
    } else {
        my $f = $off{$what} or die "unknown field $what\n";
        print unpack($f->[1] == 4 ? "V" : "Q<", get($fh, $f->[0], $f->[1])), "\n";
    }
} else {
    die "unknown command $cmd\n";
}
