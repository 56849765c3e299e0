#!/usr/bin/perl
# SPDX-License-Identifier: MIT
# Run by layers.sh from the source root: prints every include that leaves
# its layer the wrong way, and any cycle among the layers; exits 1 then.
# The last line counts the files read.
use strict;
use warnings;
# layer => the layers below it that it may include
my %below = (
    'include'     => [],
    'lib/base'    => ['include'],
    'lib/storage' => ['include', 'lib/base'],
    'lib/driver'  => ['include', 'lib/base', 'lib/storage'],
    'lib/qed'     => ['include', 'lib/base', 'lib/storage', 'lib/driver'],
    'lib/raw'     => ['include', 'lib/base', 'lib/storage', 'lib/driver'],
    'lib/core'    => ['include', 'lib/base', 'lib/storage', 'lib/driver'],
    'lib/ops'     => ['include', 'lib/base', 'lib/storage', 'lib/driver', 'lib/core'],
    'nbd'         => ['include'],
    'fuse'        => ['include'],
    'tools'       => ['include', 'nbd', 'fuse'],
);
my %face = ('include' => 'qed.h', 'lib/base' => 'base.h',
            'lib/storage' => 'storage.h', 'lib/driver' => 'driver.h',
            'lib/core' => 'core.h', 'lib/ops' => 'ops.h', 'nbd' => 'nbd.h',
            'fuse' => 'mount.h');
my @layers = sort keys %below;
my ($bad, $files, %edge) = (0, 0);
for my $layer (@layers) {
    for my $f (glob("$layer/*.c $layer/*.h")) {
        $files++;
        open my $fh, '<', $f or die "$f: $!";
        while (<$fh>) {
            next unless /^\s*#\s*include\s+"([^"]+)"/;
            my $inc = $1;
            my ($to) = grep { -f "$_/$inc" } ($layer, @{$below{$layer}});
            if (!defined $to) {
                my @at = grep { -f "$_/$inc" } @layers;
                printf "%s:%d: includes \"%s\" (in %s): not its own layer or "
                     . "one below\n", $f, $., $inc, @at ? "@at" : 'no layer';
                $bad++;
                next;
            }
            next if $to eq $layer;
            if (($face{$to} // '') ne $inc) {
                printf "%s:%d: includes \"%s\" of %s, whose face is %s\n", $f,
                       $., $inc, $to, $face{$to} // 'none (nothing outside '
                       . 'may include it)';
                $bad++;
            }
            $edge{$layer}{$to} = 1;
        }
    }
}
my (%state, @cycle);
my $visit; $visit = sub {
    my ($n, @path) = @_;
    return if ($state{$n} // 0) == 2;
    if (($state{$n} // 0) == 1) { @cycle = (@path, $n) unless @cycle; return; }
    $state{$n} = 1;
    $visit->($_, @path, $n) for sort keys %{$edge{$n} || {}};
    $state{$n} = 2;
};
$visit->($_) for @layers;
if (@cycle) { print "include cycle between layers: @cycle\n"; $bad++; }
print "files: $files\n";
exit($bad ? 1 : 0);
