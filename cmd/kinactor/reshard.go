package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/awswait"
	"github.com/kinactor/kinactor/internal/stream"
)

// runReshard implements `kinactor reshard`: exactly one of --split SHARD
// (at the middle of its hash range), --merge SHARD,SHARD (two adjacent
// shards) or --count N (UpdateShardCount, UNIFORM_SCALING); then it waits
// until the stream is ACTIVE with the new shards listed and prints them.
func runReshard(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reshard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	streamName := fs.String("stream", "", "Kinesis stream name (required)")
	split := fs.String("split", "", "shard id to split at the middle of its hash range")
	merge := fs.String("merge", "", "two adjacent shard ids, comma-separated, to merge")
	count := fs.Int("count", 0, "target open shard count (UpdateShardCount, UNIFORM_SCALING)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the stream to be ACTIVE again")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kinactor reshard --stream NAME (--split SHARD | --merge SHARD,SHARD | --count N)\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("reshard: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *streamName == "" {
		return errors.New("reshard: --stream is required")
	}
	ops := 0
	for _, set := range []bool{*split != "", *merge != "", *count != 0} {
		if set {
			ops++
		}
	}
	if ops != 1 {
		return errors.New("reshard: give exactly one of --split, --merge and --count")
	}
	var mergeIDs []string
	if *merge != "" {
		mergeIDs = strings.Split(*merge, ",")
		if len(mergeIDs) != 2 || mergeIDs[0] == "" || mergeIDs[1] == "" || mergeIDs[0] == mergeIDs[1] {
			return fmt.Errorf("reshard: invalid --merge %q (want two different shard ids, SHARD,SHARD)", *merge)
		}
	}
	if *count < 0 {
		return fmt.Errorf("reshard: invalid --count %d (want at least 1)", *count)
	}
	if *timeout <= 0 {
		return fmt.Errorf("reshard: invalid --timeout %s (must be positive)", *timeout)
	}
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("reshard: loading AWS config: %w", err)
	}
	kc := stream.NewSDKClient(awsCfg)
	sc := stream.NewClient(kc, *streamName, "")
	before, err := sc.ListShards(ctx)
	if err != nil {
		return fmt.Errorf("reshard: stream %s: %w", *streamName, err)
	}
	find := func(flag, id string) (stream.Shard, error) {
		for _, s := range before {
			if s.ID == id {
				if s.Closed() {
					return s, fmt.Errorf("reshard: %s %q: shard is closed", flag, id)
				}
				return s, nil
			}
		}
		return stream.Shard{}, fmt.Errorf("reshard: %s %q: no such shard in stream %s", flag, id, *streamName)
	}
	switch {
	case *split != "":
		s, err := find("--split", *split)
		if err != nil {
			return err
		}
		lo, ok1 := new(big.Int).SetString(s.StartingHashKey, 10)
		hi, ok2 := new(big.Int).SetString(s.EndingHashKey, 10)
		if !ok1 || !ok2 || hi.Cmp(lo) <= 0 {
			return fmt.Errorf("reshard: --split %q: hash range %s..%s cannot be split", *split, s.StartingHashKey, s.EndingHashKey)
		}
		// The new child starts at the middle, rounded up: lo < mid <= hi.
		mid := new(big.Int).Add(lo, hi)
		mid.Add(mid, big.NewInt(1)).Rsh(mid, 1)
		_, err = kc.SplitShard(ctx, &kinesis.SplitShardInput{StreamName: aws.String(*streamName), ShardToSplit: aws.String(s.ID), NewStartingHashKey: aws.String(mid.String())})
		if err != nil {
			return fmt.Errorf("reshard: SplitShard %s: %w", s.ID, err)
		}
	case *merge != "":
		a, err := find("--merge", mergeIDs[0])
		if err != nil {
			return err
		}
		b, err := find("--merge", mergeIDs[1])
		if err != nil {
			return err
		}
		if !adjacent(a, b) {
			return fmt.Errorf("reshard: --merge %q: hash ranges %s..%s and %s..%s are not adjacent", *merge, a.StartingHashKey, a.EndingHashKey, b.StartingHashKey, b.EndingHashKey)
		}
		_, err = kc.MergeShards(ctx, &kinesis.MergeShardsInput{StreamName: aws.String(*streamName), ShardToMerge: aws.String(a.ID), AdjacentShardToMerge: aws.String(b.ID)})
		if err != nil {
			return fmt.Errorf("reshard: MergeShards %s %s: %w", a.ID, b.ID, err)
		}
	default:
		_, err := kc.UpdateShardCount(ctx, &kinesis.UpdateShardCountInput{StreamName: aws.String(*streamName), TargetShardCount: aws.Int32(int32(*count)), ScalingType: types.ScalingTypeUniformScaling})
		if err != nil {
			return fmt.Errorf("reshard: UpdateShardCount %d: %w", *count, err)
		}
	}

	// Wait until ACTIVE with the new shards listed (right after the call the
	// stream may still report ACTIVE and the old shards).
	after, err := awswait.Shards(ctx, kc, sc, *streamName, *timeout, func(after []stream.Shard) bool { return len(after) > len(before) })
	if err != nil {
		return fmt.Errorf("reshard: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "shard\tstate\tparents\tstarting hash key\tending hash key")
	for _, s := range after {
		state := "open"
		if s.Closed() {
			state = "closed"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, state, joinOrDash(s.Parents()), s.StartingHashKey, s.EndingHashKey)
	}
	return tw.Flush()
}

// adjacent reports whether two hash ranges touch.
func adjacent(a, b stream.Shard) bool {
	aLo, _ := new(big.Int).SetString(a.StartingHashKey, 10)
	aHi, _ := new(big.Int).SetString(a.EndingHashKey, 10)
	bLo, _ := new(big.Int).SetString(b.StartingHashKey, 10)
	bHi, _ := new(big.Int).SetString(b.EndingHashKey, 10)
	if aLo == nil || aHi == nil || bLo == nil || bHi == nil {
		return false
	}
	one := big.NewInt(1)
	return new(big.Int).Add(aHi, one).Cmp(bLo) == 0 || new(big.Int).Add(bHi, one).Cmp(aLo) == 0
}
