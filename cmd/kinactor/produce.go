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
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/stream"
)

// runProduce implements `kinactor produce`: it creates the stream if it is
// missing and writes --records records round-robin over --keys partition
// keys k0..k{K-1}; record i goes to key k(i mod K) with data exactly
// {"pk":"k7","n":12}, n counting per key from --start.
//
// Per-key order: entries a PutRecords call reports as failed are resent
// alone, in order, until they succeed, before the next batch. A later entry
// of the same key that succeeded in that call is then ahead of the failed
// one; to rule that out, use --batch at most --keys (round-robin then puts
// at most one entry per key in a call).
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
	if err := ensureStream(ctx, kc, *streamName, int32(*shards)); err != nil {
		return fmt.Errorf("produce: %w", err)
	}

	size := *batch
	if *rate > 0 && float64(size) > *rate/10 {
		size = max(1, int(*rate/10)) // about ten calls a second
	}
	next := make([]int, *keys)
	for k := range next {
		next[k] = *start
	}
	written := make([]int, *keys)
	began := time.Now()
	for i := 0; i < *records; {
		var entries []types.PutRecordsRequestEntry
		for ; i < *records && len(entries) < size; i++ {
			k := i % *keys
			pk := fmt.Sprintf("k%d", k)
			entries = append(entries, types.PutRecordsRequestEntry{
				PartitionKey: aws.String(pk),
				Data:         fmt.Appendf(nil, `{"pk":%q,"n":%d}`, pk, next[k]),
			})
			next[k]++
		}
		out := entries
		if *aggregate > 0 {
			if out, err = aggregateByKey(entries, *aggregate); err != nil {
				return fmt.Errorf("produce: %w", err)
			}
		}
		if err := putAll(ctx, kc, *streamName, out); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		for _, e := range entries {
			var k int
			fmt.Sscanf(aws.ToString(e.PartitionKey), "k%d", &k)
			written[k]++
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
	for k, n := range written {
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

// putAll writes entries with PutRecords, resending the failed ones alone,
// in order, until every entry is written (or 20 attempts).
func putAll(ctx context.Context, kc *kinesis.Client, streamName string, entries []types.PutRecordsRequestEntry) error {
	for attempt := 1; len(entries) > 0; attempt++ {
		out, err := kc.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(streamName), Records: entries})
		if err != nil {
			return fmt.Errorf("PutRecords: %w", err)
		}
		var failed []types.PutRecordsRequestEntry
		var why string
		for i, r := range out.Records {
			if r.ErrorCode != nil {
				failed = append(failed, entries[i])
				why = aws.ToString(r.ErrorCode) + ": " + aws.ToString(r.ErrorMessage)
			}
		}
		if len(failed) > 0 {
			if attempt == 20 {
				return fmt.Errorf("PutRecords: %d records still failing after %d attempts (%s)", len(failed), attempt, why)
			}
			if err := backoff.Sleep(ctx, min(time.Duration(attempt)*100*time.Millisecond, 2*time.Second)); err != nil {
				return err
			}
		}
		entries = failed
	}
	return nil
}

// ensureStream creates the stream with shards shards if it does not exist,
// and waits until it is ACTIVE.
func ensureStream(ctx context.Context, kc *kinesis.Client, name string, shards int32) error {
	_, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
	var nf *types.ResourceNotFoundException
	if errors.As(err, &nf) {
		_, err = kc.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(shards)})
		var inUse *types.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) {
			return fmt.Errorf("creating stream %s: %w", name, err)
		}
	} else if err != nil {
		return fmt.Errorf("stream %s: %w", name, err)
	}
	return waitActive(ctx, kc, name, 60*time.Second)
}

// waitActive polls until the stream is ACTIVE.
func waitActive(ctx context.Context, kc *kinesis.Client, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		out, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err == nil && out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive {
			return nil
		}
		if serr := backoff.Sleep(ctx, 100*time.Millisecond); serr != nil {
			if err == nil {
				err = fmt.Errorf("status %s", out.StreamDescriptionSummary.StreamStatus)
			}
			return fmt.Errorf("stream %s not ACTIVE within %s: %w", name, timeout, errors.Join(err, serr))
		}
	}
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
