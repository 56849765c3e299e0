#!/usr/bin/perl
# SPDX-License-Identifier: MIT
# Runs the test programs and scripts through TAP::Harness (the engine behind
# prove) and ends with the line CI reads: "N passed, N failed", counting test
# points; a test file that dies or breaks its plan counts as one more failure.
use strict;
use warnings;
use TAP::Harness;

my $jobs = $ENV{TEST_JOBS} // 2;
my $harness = TAP::Harness->new({
    jobs      => $jobs,
    verbosity => ($ENV{TEST_VERBOSE} ? 1 : 0),
    timer     => 1,
    exec      => sub {
        my ($h, $file) = @_;
        return [ 'bash', $file ] if $file =~ /\.sh$/;
        return [ $file ];
    },
});
my $agg = $harness->runtests(@ARGV);
my $failed = scalar($agg->failed);
my $broken = 0;
for my $file ($agg->descriptions) {
    my ($parser) = $agg->parsers($file);
    $broken++ if $parser->has_problems && !$parser->failed;
}
printf "%d passed, %d failed\n", scalar($agg->passed), $failed + $broken;
exit(($failed + $broken) ? 1 : 0);
