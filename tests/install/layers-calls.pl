#!/usr/bin/perl
# SPDX-License-Identifier: MIT
# Run by layers.sh from the source root: layers-calls.pl BUILD LAYER...
# prints "LAYER: OBJECT calls SYMBOL of lib/OTHER" for every call into a
# layer above (or beside) the object's own; the last line counts objects.
use strict;
use warnings;
my ($B, @layers) = @ARGV;
my %below = (
    base => [], storage => ['base'], driver => ['base', 'storage'],
    qed => ['base', 'storage', 'driver'], raw => ['base', 'storage', 'driver'],
    core => ['base', 'storage', 'driver'],
    ops => ['base', 'storage', 'driver', 'core'],
);
my (%objs, %defined_in);
for my $l (@layers) {
    $objs{$l} = [map { my $o = $_; $o =~ s{^lib/}{$B/lib/}; $o =~ s{\.c$}{.o}; $o }
                 glob("lib/$l/*.c")];
    for my $o (@{$objs{$l}}) {
        die "missing $o\n" unless -f $o;
        for (`nm -g --defined-only $o`) {
            my @f = split;
            $defined_in{$f[2]} = $l if @f == 3;
        }
    }
}
my %count;
for my $l (@layers) {
    my %may = map { $_ => 1 } ($l, @{$below{$l}});
    for my $o (@{$objs{$l}}) {
        for (`nm -u $o`) {
            my $sym = (split)[-1];
            my $at = $defined_in{$sym} // next;
            next if $may{$at};
            next if ($l eq 'core' || $l eq 'ops') && $sym =~ /_format_driver$/;
            print "$l: $o calls $sym of lib/$at\n";
        }
        $count{$l}++;
    }
}
print "objects: ", join(' ', map { "$_=" . ($count{$_} // 0) } @layers), "\n";
