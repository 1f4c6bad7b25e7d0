package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/awswait"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/putrecords"
	"github.com/kinactor/kinactor/internal/stream"
)

// runProduce implements `kinactor produce`: it creates the stream if it is
// missing and writes --records records round-robin over --keys partition
// keys k0..k{K-1}; record i goes to key k(i mod K) with data exactly
// {"pk":"k7","n":12}, n counting per key from --start.
//
// Per-key order: entries a PutRecords call reports as failed are resent
// alone, in order, until they succeed, before the next batch
// (putrecords.Writer). A later entry of the same key that succeeded in that
// call is then ahead of the failed one; to rule that out, use --batch at
// most --keys (round-robin then puts at most one entry per key in a call).
func runProduce(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("produce", flag.ContinueOnError)
	fs.SetOutput(stderr)
	streamName := fs.String("stream", "", "Kinesis stream name (required); created if missing")
	records := fs.Int("records", 0, "records to write (required, at least 1)")
	keys := fs.Int("keys", 16, "partition keys k0..k{N-1}, written round-robin")
	rate := fs.Float64("rate", 0, "at most this many records per second (0 = as fast as possible)")
	shards := fs.Int("shards", 4, "shards when creating the stream")
	start := fs.Int("start", 1, "first n of every key (continue an earlier run with its last n + 1)")
	batch := fs.Int("batch", 500, "records per PutRecords call, 1..500")
	aggregate := fs.Int("aggregate", 0, "pack up to N records of one partition key into each Kinesis record, in the KPL aggregated format (0 = plain records)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kinactor produce --stream NAME --records N [flags]\n\n"+
			"Writes N records {\"pk\":\"kK\",\"n\":N} round-robin over the partition keys,\n"+
			"n counting from --start per key, and prints the records written per key.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("produce: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	switch {
	case *streamName == "":
		return errors.New("produce: --stream is required")
	case *records < 1:
		return fmt.Errorf("produce: invalid --records %d (want at least 1)", *records)
	case *keys < 1:
		return fmt.Errorf("produce: invalid --keys %d (want at least 1)", *keys)
	case *rate < 0:
		return fmt.Errorf("produce: invalid --rate %g (want 0 or more)", *rate)
	case *shards < 1:
		return fmt.Errorf("produce: invalid --shards %d (want at least 1)", *shards)
	case *start < 0:
		return fmt.Errorf("produce: invalid --start %d (want 0 or more)", *start)
	case *batch < 1 || *batch > 500:
		return fmt.Errorf("produce: invalid --batch %d (want 1..500)", *batch)
	case *aggregate < 0:
		return fmt.Errorf("produce: invalid --aggregate %d (want 0 or more)", *aggregate)
	}
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("produce: loading AWS config: %w", err)
	}
	kc := stream.NewSDKClient(awsCfg)
	if _, err := awswait.EnsureStream(ctx, kc, *streamName, int32(*shards), time.Minute); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	w := putrecords.Writer{Client: kc, Stream: *streamName}

	size := *batch
	if *rate > 0 && float64(size) > *rate/10 {
		size = max(1, int(*rate/10)) // about ten calls a second
	}
	gen := putrecords.NewNumbered(*keys, *start)
	began := time.Now()
	for i := 0; i < *records; {
		entries := gen.Next(min(size, *records-i))
		i += len(entries)
		if *aggregate > 0 {
			if entries, err = aggregateByKey(entries, *aggregate); err != nil {
				return fmt.Errorf("produce: %w", err)
			}
		}
		if _, err := w.Put(ctx, entries); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		if *rate > 0 && i < *records {
			due := began.Add(time.Duration(float64(i) / *rate * float64(time.Second)))
			if err := backoff.Sleep(ctx, time.Until(due)); err != nil {
				return fmt.Errorf("produce: interrupted after %d records: %w", i, err)
			}
		}
	}

	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "key\trecords\tfirst n\tlast n")
	total := 0
	for k, n := range gen.Made() { // all written: a failed Put returned above
		total += n
		if n > 0 {
			fmt.Fprintf(tw, "k%d\t%d\t%d\t%d\n", k, n, *start, *start+n-1)
		}
	}
	fmt.Fprintf(tw, "total\t%d\t\t\n", total)
	_ = tw.Flush()
	fmt.Fprintf(stdout, "wrote %d records to %s in %s\n", total, *streamName, time.Since(began).Round(time.Millisecond))
	return nil
}

// aggregateByKey packs the entries of each partition key, in order, into
// KPL aggregates of up to n records. Grouping by key keeps every record of a
// key on its shard, so per-key order survives aggregation.
func aggregateByKey(entries []types.PutRecordsRequestEntry, n int) ([]types.PutRecordsRequestEntry, error) {
	var order []string
	byKey := map[string][]types.PutRecordsRequestEntry{}
	for _, e := range entries {
		pk := aws.ToString(e.PartitionKey)
		if _, ok := byKey[pk]; !ok {
			order = append(order, pk)
		}
		byKey[pk] = append(byKey[pk], e)
	}
	var out []types.PutRecordsRequestEntry
	for _, pk := range order {
		agg, err := aggregateEntries(byKey[pk], n)
		if err != nil {
			return nil, err
		}
		out = append(out, agg...)
	}
	return out, nil
}
