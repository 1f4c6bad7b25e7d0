package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/examples/funcprocessor"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

const (
	demoStream      = "kinactor-demo"
	demoApplication = "kinactor-demo"
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
	began := time.Now()
	step := func(format string, a ...any) {
		fmt.Fprintf(stdout, "[%5.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, a...))
	}

	// 1. Servers, both at once.
	step("starting kinesalite and DynamoDB Local")
	var (
		wg         sync.WaitGroup
		kin, ddb   *localaws.Server
		kErr, dErr error
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		kin, kErr = localaws.Start(ctx, localaws.Kinesalite, localaws.Options{Dir: *dir, Log: serverLog})
	}()
	go func() {
		defer wg.Done()
		ddb, dErr = localaws.Start(ctx, localaws.DynamoDBLocal, localaws.Options{Dir: *dir, Log: serverLog})
	}()
	wg.Wait()
	defer func() { _ = errors.Join(kin.Stop(), ddb.Stop()) }() // Stop is nil-safe
	if err := errors.Join(kErr, dErr); err != nil {
		return fmt.Errorf("demo: starting local servers (install them with `make deps`; run from the repository or pass --dir): %w", err)
	}
	step("kinesalite at %s, DynamoDB Local at %s", kin.Endpoint, ddb.Endpoint)

	// 2. Point the SDK at them through its environment, as a user would.
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_KINESIS":  kin.Endpoint,
		"AWS_ENDPOINT_URL_DYNAMODB": ddb.Endpoint,
		"AWS_REGION":                "us-east-1",
		"AWS_ACCESS_KEY_ID":         "local",
		"AWS_SECRET_ACCESS_KEY":     "local",
		"AWS_EC2_METADATA_DISABLED": "true",
	} {
		if err := os.Setenv(k, v); err != nil {
			return fmt.Errorf("demo: setenv %s: %w", k, err)
		}
	}
	for _, k := range []string{"AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"} {
		_ = os.Unsetenv(k)
	}
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("demo: loading AWS config: %w", err)
	}
	kc := kinesis.NewFromConfig(awsCfg)

	// 3. Stream.
	if err := createStream(ctx, kc, int32(*shards)); err != nil {
		return err
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

// createStream creates the demo stream and waits until it is ACTIVE.
func createStream(ctx context.Context, kc *kinesis.Client, shards int32) error {
	_, err := kc.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(demoStream), ShardCount: aws.Int32(shards)})
	if err != nil {
		return fmt.Errorf("demo: creating stream %s: %w", demoStream, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		out, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(demoStream)})
		if err == nil && out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("status %s", out.StreamDescriptionSummary.StreamStatus)
			}
			return fmt.Errorf("demo: stream %s not ACTIVE in time: %w", demoStream, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// produce writes n records over demoKeys partition keys with PutRecords,
// retrying the entries a call reports as failed. It returns how many
// records went to each shard.
func produce(ctx context.Context, kc *kinesis.Client, n int) (map[string]int, error) {
	perShard := map[string]int{}
	perKey := make([]int, demoKeys)
	for start := 0; start < n; start += putBatch {
		var entries []types.PutRecordsRequestEntry
		for i := start; i < n && i < start+putBatch; i++ {
			k := i % demoKeys
			perKey[k]++
			pk := fmt.Sprintf("k%d", k)
			entries = append(entries, types.PutRecordsRequestEntry{
				PartitionKey: aws.String(pk),
				Data:         fmt.Appendf(nil, `{"pk":%q,"n":%d}`, pk, perKey[k]),
			})
		}
		for attempt := 1; len(entries) > 0; attempt++ {
			out, err := kc.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(demoStream), Records: entries})
			if err != nil {
				return nil, fmt.Errorf("demo: PutRecords: %w", err)
			}
			var failed []types.PutRecordsRequestEntry
			for i, r := range out.Records {
				if r.ErrorCode != nil {
					failed = append(failed, entries[i])
					continue
				}
				perShard[aws.ToString(r.ShardId)]++
			}
			if len(failed) > 0 && attempt == 10 {
				return nil, fmt.Errorf("demo: PutRecords: %d records still failing after %d attempts", len(failed), attempt)
			}
			if len(failed) > 0 {
				time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
			}
			entries = failed
		}
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
	sort.Strings(ids)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "shard\tproduced\tprocessed\tfirst sequence\tlast sequence")
	prodTotal := 0
	for _, id := range ids {
		s := stats[id]
		prodTotal += produced[id]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", id, produced[id], s.Records, dash(s.FirstSeq), dash(s.LastSeq))
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
	sort.Slice(leases, func(i, j int) bool { return leases[i].Key < leases[j].Key })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "lease\towner\tcounter\tcheckpoint")
	var errs []error
	for _, l := range leases {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", l.Key, dash(l.Owner), l.Counter, l.Checkpoint.SequenceNumber)
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

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// runDemo implements `kinactor demo`, the cluster demo: local servers, an
// 8-shard stream, three `kinactor node` processes and a producer, with a
// table every second of who owns which shard and how far it is. It
// SIGKILLs a node, shows its shards move, starts a new node, shows the
// rebalance, then stops the producer, waits for the ledgers to hold every
// record, SIGTERMs every node and prints a summary. It fails if a record
// was lost. `kinactor demo --single` runs the single-process demo.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	for i, a := range args {
		if a == "--single" || a == "-single" {
			return runSingleDemo(ctx, append(append([]string(nil), args[:i]...), args[i+1:]...), stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	shards := fs.Int("shards", 8, "shards of the demo stream")
	nodes := fs.Int("nodes", 3, "node processes")
	rate := fs.Float64("rate", 50, "records per second")
	phase := fs.Duration("phase", 30*time.Second, "how long each phase runs: steady, after the kill, after the join")
	dir := fs.String("dir", "", "tools/localaws directory (default: $"+localaws.EnvDir+", else found from the working directory's module)")
	workDir := fs.String("work-dir", "", "directory for ledgers and node logs (default: a temporary directory, removed afterwards)")
	fs.Bool("single", false, "run the single-process demo instead (its flags: kinactor demo --single -h)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kinactor demo [flags]\n\n"+
			"Starts kinesalite and DynamoDB Local (installed by `make deps`), a stream\n"+
			"%q and a cluster of `kinactor node` processes, produces records, kills a\n"+
			"node, adds a new one and stops them all, showing every second who owns\n"+
			"which shard. Exits 0 only if no record was lost.\n\nflags:\n", demoStream)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("demo: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	case *shards < 1 || *shards > 100:
		return fmt.Errorf("demo: invalid --shards %d (want 1..100)", *shards)
	case *nodes < 2:
		return fmt.Errorf("demo: invalid --nodes %d (want at least 2)", *nodes)
	case *rate <= 0:
		return fmt.Errorf("demo: invalid --rate %g", *rate)
	case *phase <= 0:
		return fmt.Errorf("demo: invalid --phase %s", *phase)
	}
	began := time.Now()
	var outMu sync.Mutex
	step := func(format string, a ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(stdout, "[%5.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, a...))
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	wd := *workDir
	if wd == "" {
		if wd, err = os.MkdirTemp("", "kinactor-demo-"); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer os.RemoveAll(wd)
	}

	step("starting kinesalite and DynamoDB Local")
	env, err := startLocalEnv(ctx, *dir, false, nil)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer env.stop()
	if err := ensureStream(ctx, env.kc, demoStream, int32(*shards)); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	step("kinesalite at %s, DynamoDB Local at %s; stream %s is ACTIVE with %d shards", env.kin.Endpoint, env.ddb.Endpoint, demoStream, *shards)

	c, err := clusterrun.Start(ctx, clusterrun.Options{Bin: bin, Dir: wd, App: demoApplication, Stream: demoStream, Env: env.env, Nodes: 1})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer c.Close()
	failed := func(err error) error {
		if *workDir != "" {
			return fmt.Errorf("demo: %w (node logs in %s)", err, filepath.Join(wd, "logs"))
		}
		return fmt.Errorf("demo: %w (pass --work-dir to keep the node logs)", err)
	}
	// The first node creates the lease rows alone; then the others join.
	if err := c.Grow(ctx, *nodes, *shards, 60*time.Second); err != nil {
		return failed(err)
	}
	step("nodes %s started (logs in %s)", procNames(c.Nodes()), filepath.Join(wd, "logs"))

	prod := clusterrun.StartProducer(env.kc, demoStream, 64, *rate)
	defer prod.Stop()
	produceStart := time.Now()
	step("producing %g records/s over 64 partition keys", *rate)

	// The live table, every second, until stopped.
	tableCtx, stopTable := context.WithCancel(ctx)
	tableDone := make(chan struct{})
	go func() {
		defer close(tableDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-tableCtx.Done():
				return
			case <-t.C:
			}
			table := demoTable(tableCtx, c, prod, *shards)
			outMu.Lock()
			fmt.Fprintf(stdout, "[%5.1fs] %s", time.Since(began).Seconds(), table)
			outMu.Unlock()
		}
	}()
	defer func() {
		stopTable()
		<-tableDone
	}()
	wait := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("demo: interrupted: %w", ctx.Err())
		}
	}

	// Steady state, then a kill.
	if err := wait(*phase); err != nil {
		return err
	}
	live := c.Nodes()
	victim := live[len(live)/2]
	st, err := c.Status(ctx, victim)
	if err != nil {
		return failed(err)
	}
	var vs []string
	for _, s := range st.Shards {
		vs = append(vs, s.ShardID)
	}
	killedAt := time.Now()
	if err := c.Kill(victim); err != nil {
		return failed(err)
	}
	step("SIGKILL %s, which owned %s", victim.Name, strings.Join(vs, " "))
	if err := waitFlowing(ctx, c, victim.Name, vs, killedAt, 60*time.Second); err != nil {
		return failed(err)
	}
	step("%s's shards are processed by the survivors again, %.2fs after the kill", victim.Name, time.Since(killedAt).Seconds())
	if err := wait(*phase); err != nil {
		return err
	}

	// A new node joins and takes its share.
	p, err := c.AddNode(ctx)
	if err != nil {
		return failed(err)
	}
	joined := time.Now()
	step("started %s", p.Name)
	if _, err := c.WaitBalanced(ctx, *shards, 60*time.Second); err != nil {
		return failed(err)
	}
	step("rebalanced %.2fs after %s was ready", time.Since(joined).Seconds(), p.Name)
	if err := wait(*phase); err != nil {
		return err
	}

	// Stop producing, drain, stop every node.
	produced, err := prod.Stop()
	if err != nil {
		return failed(err)
	}
	produceEnd := time.Now()
	step("producer stopped; waiting until the ledgers hold every record")
	rep, waitErr := waitAllProcessed(ctx, c, produced, 60*time.Second)
	stopTable()
	<-tableDone
	step("%s", demoTable(ctx, c, prod, *shards))
	var stopErrs []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	termStart := time.Now()
	for _, p := range c.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Term(p); err != nil {
				mu.Lock()
				stopErrs = append(stopErrs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	step("SIGTERM to every node; all exited in %.2fs", time.Since(termStart).Seconds())
	// Read the ledgers once more: the graceful stops may have appended.
	if es, err := ledger.ReadDir(c.LedgerDir()); err == nil {
		rep = clusterrun.Analyze(es, produced, c.Events())
	}
	gap, gapShard := longestGap(c.LedgerDir(), produceStart, produceEnd)

	fmt.Fprintf(stdout, "\nsummary (%.0fs)\n", time.Since(began).Seconds())
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  records produced\t%d\n", rep.Produced)
	fmt.Fprintf(tw, "  records processed\t%d\t(distinct; %d ledger lines)\n", rep.Processed, rep.Lines)
	fmt.Fprintf(tw, "  duplicates\t%d\t(%d after the kill, %d after graceful stops, %d other; %d of them after a node joined)\n",
		rep.Duplicates, rep.DupAfterKills, rep.DupAfterTerms, rep.DupUnattributed, rep.DupByLastEvent[clusterrun.EventStart])
	fmt.Fprintf(tw, "  lost\t%d\t\n", rep.Lost)
	fmt.Fprintf(tw, "  per-key order violations\t%d\t\n", rep.OrderViolations)
	fmt.Fprintf(tw, "  idle after the kill\t%.2fs\t(longest of the %d shards that moved)\n", rep.KillIdle.Max.Seconds(), rep.KillIdle.N)
	fmt.Fprintf(tw, "  longest idle shard\t%.2fs\t(%s: longest gap between processed batches while producing)\n", gap.Seconds(), dash(gapShard))
	_ = tw.Flush()
	if rep.Lost > 0 || rep.OrderViolations > 0 {
		return fmt.Errorf("demo: %d records lost, %d per-key order violations", rep.Lost, rep.OrderViolations)
	}
	return failedIf(waitErr, errors.Join(stopErrs...))
}

func failedIf(errs ...error) error {
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}

func procNames(ps []*clusterrun.Proc) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Name)
	}
	return strings.Join(s, " ")
}

// demoTable renders who owns each shard (from the nodes' /status), how
// many records each shard has processed (distinct, from the ledgers),
// its lag (records produced for the shard's keys not yet processed) and
// how long ago it last processed a batch.
func demoTable(ctx context.Context, c *clusterrun.Cluster, prod *clusterrun.Producer, shards int) string {
	owners, _ := c.Owners(ctx)
	produced, total := prod.Produced()
	es, _ := ledger.ReadDir(c.LedgerDir())
	type shardInfo struct {
		processed int
		last      int64
		keys      map[string]bool
	}
	info := map[string]*shardInfo{}
	seen := map[string]bool{}
	done := map[string]int{} // pk → distinct processed
	for _, e := range es {
		si := info[e.Shard]
		if si == nil {
			si = &shardInfo{keys: map[string]bool{}}
			info[e.Shard] = si
		}
		si.last = max(si.last, e.TS)
		si.keys[e.PK] = true
		id := e.PK + "/" + string(e.Data)
		if !seen[id] {
			seen[id] = true
			si.processed++
			done[e.PK]++
		}
	}
	var ids []string
	for i := 0; i < shards; i++ {
		ids = append(ids, fmt.Sprintf("shardId-%012d", i))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "members %s; produced %d, processed %d\n", procNames(c.Nodes()), total, len(seen))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  shard\towner\tprocessed\tlag\tlast batch")
	now := time.Now().UnixMilli()
	for _, id := range ids {
		owner := strings.Join(owners[id], ",")
		si := info[id]
		if si == nil {
			fmt.Fprintf(tw, "  %s\t%s\t0\t-\t-\n", id, dash(owner))
			continue
		}
		lag := 0
		for pk := range si.keys {
			lag += max(0, produced[pk]-done[pk])
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%.1fs ago\n", id, dash(owner), si.processed, lag, float64(now-si.last)/1000)
	}
	_ = tw.Flush()
	return b.String()
}

// longestGap returns the longest time between consecutive processed
// batches of any shard between from and to.
func longestGap(dir string, from, to time.Time) (time.Duration, string) {
	es, err := ledger.ReadDir(dir)
	if err != nil {
		return 0, ""
	}
	byShard := map[string][]int64{}
	for _, e := range es {
		byShard[e.Shard] = append(byShard[e.Shard], e.TS)
	}
	var longest int64
	var which string
	for s, ts := range byShard {
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		for i := 1; i < len(ts); i++ {
			if ts[i-1] < from.UnixMilli() || ts[i] > to.UnixMilli() {
				continue
			}
			if g := ts[i] - ts[i-1]; g > longest {
				longest, which = g, s
			}
		}
	}
	return time.Duration(longest) * time.Millisecond, which
}
