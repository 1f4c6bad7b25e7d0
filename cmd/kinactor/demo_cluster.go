package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/kinactor/kinactor/internal/awswait"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// clusterDemo is the cluster demo, `kinactor demo`, with its flags.
type clusterDemo struct {
	shards, nodes int
	rate          float64
	phase         time.Duration // each of steady state, after the kill, after the join
	dir           string        // tools/localaws
	workDir       string        // "": a temporary one
}

// run runs the demo: servers, stream, nodes, producer, the live table, a
// kill, a join, the drain, the graceful stops and the summary.
func (d clusterDemo) run(ctx context.Context, out *demoLog) error {
	step := out.step
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	wd := d.workDir
	if wd == "" {
		if wd, err = os.MkdirTemp("", "kinactor-demo-"); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer os.RemoveAll(wd)
	}

	step("starting kinesalite and DynamoDB Local")
	env, err := startLocalEnv(ctx, d.dir, localaws.DynamoDBLocal, nil)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer env.Stop()
	kc := env.KinesisClient()
	if _, err := awswait.EnsureStream(ctx, kc, demoStream, int32(d.shards), time.Minute); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	step("kinesalite at %s, DynamoDB Local at %s; stream %s is ACTIVE with %d shards", env.Kinesis.Endpoint, env.DynamoDB.Endpoint, demoStream, d.shards)

	c, err := clusterrun.Start(ctx, clusterrun.Options{Bin: bin, Dir: wd, App: demoApplication, Stream: demoStream, Env: env.Environ(), Nodes: 1})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer c.Close()
	failed := func(err error) error {
		if d.workDir != "" {
			return fmt.Errorf("demo: %w (node logs in %s)", err, filepath.Join(wd, "logs"))
		}
		return fmt.Errorf("demo: %w (pass --work-dir to keep the node logs)", err)
	}
	// The first node creates the lease rows alone; then the others join.
	if err := c.Grow(ctx, d.nodes, d.shards, 60*time.Second); err != nil {
		return failed(err)
	}
	step("nodes %s started (logs in %s)", procNames(c.Nodes()), filepath.Join(wd, "logs"))

	prod := clusterrun.StartProducer(kc, demoStream, 64, d.rate)
	defer prod.Stop()
	produceStart := time.Now()
	step("producing %g records/s over 64 partition keys", d.rate)

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
			out.print(demoTable(tableCtx, c, prod, d.shards))
		}
	}()
	defer func() {
		stopTable()
		<-tableDone
	}()
	wait := func(d time.Duration) error {
		if err := backoff.Sleep(ctx, d); err != nil {
			return fmt.Errorf("demo: interrupted: %w", err)
		}
		return nil
	}

	// Steady state, then a kill.
	if err := wait(d.phase); err != nil {
		return err
	}
	live := c.Nodes()
	victim := live[len(live)/2]
	vs, err := shardsOf(ctx, c, victim)
	if err != nil {
		return failed(err)
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
	if err := wait(d.phase); err != nil {
		return err
	}

	// A new node joins and takes its share.
	p, err := c.AddNode(ctx)
	if err != nil {
		return failed(err)
	}
	joined := time.Now()
	step("started %s", p.Name)
	if _, err := c.WaitBalanced(ctx, d.shards, 60*time.Second); err != nil {
		return failed(err)
	}
	step("rebalanced %.2fs after %s was ready", time.Since(joined).Seconds(), p.Name)
	if err := wait(d.phase); err != nil {
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
	step("%s", demoTable(ctx, c, prod, d.shards))
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
	printClusterSummary(out.w, time.Since(out.began), rep, gap, gapShard)
	if rep.Lost > 0 || rep.OrderViolations > 0 {
		return fmt.Errorf("demo: %d records lost, %d per-key order violations", rep.Lost, rep.OrderViolations)
	}
	return failedIf(waitErr, errors.Join(stopErrs...))
}

// printClusterSummary prints the demo's outcome from the ledgers (rep) and
// how long it took: records, duplicates by cause, losses, per-key order,
// idle time.
func printClusterSummary(w io.Writer, took time.Duration, rep clusterrun.Report, gap time.Duration, gapShard string) {
	fmt.Fprintf(w, "\nsummary (%.0fs)\n", took.Seconds())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  records produced\t%d\n", rep.Produced)
	fmt.Fprintf(tw, "  records processed\t%d\t(distinct; %d ledger lines)\n", rep.Processed, rep.Lines)
	fmt.Fprintf(tw, "  duplicates\t%d\t(%d after the kill, %d after graceful stops, %d after pauses, %d other; %d of them after a node joined)\n",
		rep.Duplicates, rep.DupAfterKills, rep.DupAfterTerms, rep.DupAfterPauses, rep.DupUnattributed, rep.DupByLastEvent[clusterrun.EventStart])
	if rep.Kills > 0 {
		fmt.Fprintf(tw, "  duplicates per kill\t%.1f\t(%d kills)\n", float64(rep.DupAfterKills)/float64(rep.Kills), rep.Kills)
	}
	if len(rep.KillDups) > 0 {
		fmt.Fprintf(tw, "  duplicates per shard moved by the kill\t%d\t(median; max %d, over %d shards; median %.2fs of that shard's records)\n",
			clusterrun.MedianInt(rep.KillDups), slices.Max(rep.KillDups), len(rep.KillDups), rep.KillDupTime.P50.Seconds())
	}
	if rep.Pauses > 0 {
		fmt.Fprintf(tw, "  duplicates per pause\t%.1f\t(%d pauses)\n", float64(rep.DupAfterPauses)/float64(rep.Pauses), rep.Pauses)
	}
	fmt.Fprintf(tw, "  lost\t%d\t\n", rep.Lost)
	fmt.Fprintf(tw, "  per-key order violations\t%d\t\n", rep.OrderViolations)
	fmt.Fprintf(tw, "  idle after the kill\t%.2fs\t(longest of the %d shards that moved)\n", rep.KillIdle.Max.Seconds(), rep.KillIdle.N)
	fmt.Fprintf(tw, "  longest idle shard\t%.2fs\t(%s: longest gap between processed batches while producing)\n", gap.Seconds(), dashIfEmpty(gapShard))
	_ = tw.Flush()
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
			fmt.Fprintf(tw, "  %s\t%s\t0\t-\t-\n", id, dashIfEmpty(owner))
			continue
		}
		lag := 0
		for pk := range si.keys {
			lag += max(0, produced[pk]-done[pk])
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%.1fs ago\n", id, dashIfEmpty(owner), si.processed, lag, float64(now-si.last)/1000)
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
		slices.Sort(ts)
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
