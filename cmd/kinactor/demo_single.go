package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/examples/funcprocessor"
	"github.com/kinactor/kinactor/internal/awswait"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/putrecords"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// The single-process demo, `kinactor demo --single`.
const (
	demoKeys        = 16
	putBatch        = 500 // PutRecords' limit
	consumeDeadline = 60 * time.Second
)

// runSingleDemo implements `kinactor demo --single`: it starts kinesalite
// and DynamoDB Local, creates a stream, writes records to it, consumes them
// with one in-process kinactor node running the examples/funcprocessor processor, prints a
// summary and returns nil only if every record was processed exactly once.
//
// The node finds the servers the way it would find AWS: through the SDK's
// environment (AWS_ENDPOINT_URL_KINESIS, AWS_ENDPOINT_URL_DYNAMODB,
// AWS_REGION and credentials), which the demo sets in its own process.
func runSingleDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo --single", flag.ContinueOnError)
	fs.SetOutput(stderr)
	records := fs.Int("records", 2000, "records to produce")
	shards := fs.Int("shards", 4, "shards of the demo stream")
	dir := fs.String("dir", "", "tools/localaws directory (default: $"+localaws.EnvDir+", else found from the working directory's module)")
	verbose := fs.Bool("verbose", false, "log the node at INFO (default WARN) and show the servers' output")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kinactor demo --single [flags]\n\n"+
			"Starts kinesalite and DynamoDB Local (installed by `make deps`), writes records\n"+
			"to a stream %q and consumes them with a kinactor node. Exits 0 only if\n"+
			"every record was processed exactly once.\n\nflags:\n", demoStream)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("demo: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *records < 1 {
		return fmt.Errorf("demo: invalid --records %d (want at least 1)", *records)
	}
	if *shards < 1 || *shards > 100 {
		return fmt.Errorf("demo: invalid --shards %d (want 1..100)", *shards)
	}
	level := slog.LevelWarn
	var serverLog io.Writer
	if *verbose {
		level, serverLog = slog.LevelInfo, stderr
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	step := newDemoLog(stdout).step

	// 1. Servers, both at once.
	step("starting kinesalite and DynamoDB Local")
	env, err := startLocalEnv(ctx, *dir, localaws.DynamoDBLocal, serverLog)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer env.Stop()
	step("kinesalite at %s, DynamoDB Local at %s", env.Kinesis.Endpoint, env.DynamoDB.Endpoint)

	// 2. Point the SDK at them through its environment, as a user would.
	for _, kv := range env.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if v == "" {
			_ = os.Unsetenv(k)
		} else if err := os.Setenv(k, v); err != nil {
			return fmt.Errorf("demo: setenv %s: %w", k, err)
		}
	}
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("demo: loading AWS config: %w", err)
	}
	kc := kinesis.NewFromConfig(awsCfg)

	// 3. Stream.
	if _, err := awswait.EnsureStream(ctx, kc, demoStream, int32(*shards), time.Minute); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	step("stream %s is ACTIVE with %d shards", demoStream, *shards)

	// 4. Records.
	produced, err := produce(ctx, kc, *records)
	if err != nil {
		return err
	}
	step("produced %d records over %d partition keys", *records, demoKeys)

	// 5. The node.
	counter, fn := funcprocessor.New()
	node, err := kinactor.NewNode(kinactor.Config{
		StreamName:         demoStream,
		ApplicationName:    demoApplication,
		InitialPosition:    kinactor.TrimHorizon,
		CheckpointInterval: time.Second,
		ShardSyncInterval:  2 * time.Second,
		Logger:             logger,
	}, actors.FuncProcessor(fn))
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := node.Start(ctx); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	step("node %s started", node.WorkerID())

	// 6. Wait until every record is processed (or the deadline, or ^C).
	deadline := time.NewTimer(consumeDeadline)
	defer deadline.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	var waitErr error
wait:
	for {
		select {
		case <-poll.C:
			if counter.Unique() >= *records {
				break wait
			}
		case <-tick.C:
			step("processed %d / %d (duplicates %d)", counter.Unique(), *records, counter.Duplicates())
		case <-deadline.C:
			waitErr = fmt.Errorf("demo: only %d of %d records processed after %s", counter.Unique(), *records, consumeDeadline)
			break wait
		case <-ctx.Done():
			waitErr = fmt.Errorf("demo: interrupted with %d of %d records processed", counter.Unique(), *records)
			break wait
		}
	}
	step("processed %d / %d (duplicates %d); stopping the node", counter.Unique(), *records, counter.Duplicates())

	// 7. Graceful stop (bounded, so a hang is reported rather than waited out).
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	stopStart := time.Now()
	stopErr := node.Stop(stopCtx)
	cancel()
	if stopErr != nil {
		stopErr = fmt.Errorf("demo: stopping the node: %w", stopErr)
	}
	step("node stopped in %s", time.Since(stopStart).Round(time.Millisecond))

	// 8. Summary, and what the stop left in the lease table.
	printSummary(stdout, counter, produced)
	// A fresh context: the lease table is worth reading after an interrupt too.
	readCtx, cancelRead := context.WithTimeout(context.Background(), 10*time.Second)
	leaseErr := checkLeases(readCtx, stdout, awsCfg, counter)
	cancelRead()
	total, unique, dups := counter.Total(), counter.Unique(), counter.Duplicates()
	var checkErr error
	switch {
	case unique != *records:
		checkErr = fmt.Errorf("demo: %d of %d records processed", unique, *records)
	case dups != 0 || total != unique:
		checkErr = fmt.Errorf("demo: %d records processed more than once (%d deliveries for %d records)", dups, total, unique)
	}
	if err := errors.Join(waitErr, stopErr, checkErr, leaseErr); err != nil {
		return err
	}
	step("every record was processed exactly once")
	return nil
}

// produce writes n records over demoKeys partition keys with PutRecords
// (putrecords.Writer: the entries a call reports as failed are resent). It
// returns how many records went to each shard.
func produce(ctx context.Context, kc *kinesis.Client, n int) (map[string]int, error) {
	w := putrecords.Writer{Client: kc, Stream: demoStream}
	records := putrecords.NewNumbered(demoKeys, 1)
	perShard := map[string]int{}
	for done := 0; done < n; {
		entries := records.Next(min(putBatch, n-done))
		results, err := w.Put(ctx, entries)
		if err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		for _, r := range results {
			perShard[aws.ToString(r.ShardId)]++
		}
		done += len(entries)
	}
	return perShard, nil
}

func printSummary(w io.Writer, c *funcprocessor.Counter, produced map[string]int) {
	stats := map[string]funcprocessor.ShardStats{}
	ids := []string{}
	for _, s := range c.Shards() {
		stats[s.ShardID] = s
		ids = append(ids, s.ShardID)
	}
	for id := range produced {
		if _, ok := stats[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "shard\tproduced\tprocessed\tfirst sequence\tlast sequence")
	prodTotal := 0
	for _, id := range ids {
		s := stats[id]
		prodTotal += produced[id]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", id, produced[id], s.Records, dashIfEmpty(s.FirstSeq), dashIfEmpty(s.LastSeq))
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t\t\n", prodTotal, c.Total())
	_ = tw.Flush()
	fmt.Fprintf(w, "\nrecords processed: %d distinct, %d deliveries; duplicates: %d; partition keys: %d\n\n",
		c.Unique(), c.Total(), c.Duplicates(), len(c.Keys()))
}

// checkLeases prints the lease table and checks that the graceful stop left
// every shard released with its checkpoint at the last record processed.
func checkLeases(ctx context.Context, w io.Writer, awsCfg aws.Config, c *funcprocessor.Counter) error {
	ddb := dynamodb.NewFromConfig(awsCfg, func(o *dynamodb.Options) {
		o.DisableValidateResponseChecksum = true // DynamoDB Local omits the CRC32 header
	})
	leases, err := lease.NewDynamoStore(ddb, demoApplication).List(ctx)
	if err != nil {
		return fmt.Errorf("demo: reading the lease table: %w", err)
	}
	last := map[string]string{}
	for _, s := range c.Shards() {
		last[s.ShardID] = s.LastSeq
	}
	slices.SortFunc(leases, func(a, b lease.Lease) int { return strings.Compare(a.Key, b.Key) })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "lease\towner\tcounter\tcheckpoint")
	var errs []error
	for _, l := range leases {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", l.Key, dashIfEmpty(l.Owner), l.Counter, l.Checkpoint.SequenceNumber)
		if l.Owner != "" {
			errs = append(errs, fmt.Errorf("lease %s still owned by %s after a graceful stop", l.Key, l.Owner))
		}
		if want := last[l.Key]; want != "" && l.Checkpoint.SequenceNumber != want {
			errs = append(errs, fmt.Errorf("lease %s checkpoint %s, want the last record processed %s", l.Key, l.Checkpoint.SequenceNumber, want))
		}
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	if len(errs) > 0 {
		return fmt.Errorf("demo: lease table after stop: %w", errors.Join(errs...))
	}
	return nil
}
