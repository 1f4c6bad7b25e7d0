package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kinactor/kinactor/internal/awswait"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// benchResult is what failover-bench reports (--json prints it).
type benchResult struct {
	Nodes            int                `json:"nodes"`
	Shards           int                `json:"shards"`
	Rate             float64            `json:"rate"`
	Seed             uint64             `json:"seed"`
	DurationSec      float64            `json:"duration_sec"`
	Kills            int                `json:"kills"`
	KillIdle         statsJSON          `json:"idle_after_kill"`
	GracefulStops    int                `json:"graceful_stops"`
	TermIdle         statsJSON          `json:"idle_after_graceful_stop"`
	GracefulMoves    int                `json:"graceful_moves"`
	DupPerGraceful   float64            `json:"duplicates_per_graceful_move"`
	DupAfterTerms    int                `json:"duplicates_after_graceful_stops"`
	DupAfterKills    int                `json:"duplicates_after_kills"`
	KillMoves        int                `json:"kill_moves"`
	DupPerKillMove   float64            `json:"duplicates_per_kill_move"`
	DupMedianKill    int                `json:"duplicates_per_kill_move_median"`
	DupMaxKill       int                `json:"duplicates_per_kill_move_max"`
	DupTimeKill      statsJSON          `json:"duplicates_per_kill_move_sec_of_records"`
	EarlyDetection   bool               `json:"early_detection"`
	SettleSec        float64            `json:"settle_sec"`
	WorstMoves       []string           `json:"costliest_kill_moves"`
	DupOther         int                `json:"duplicates_other"`
	DupAfterJoins    int                `json:"duplicates_after_joins"`
	Lost             int                `json:"lost"`
	OrderViolations  int                `json:"order_violations"`
	Produced         int                `json:"produced"`
	Processed        int                `json:"processed"`
	LeaseWrites      float64            `json:"lease_writes"`
	LeaseWritesByOp  map[string]float64 `json:"lease_writes_by_op"`
	LeaseWritesPerSH float64            `json:"lease_writes_per_shard_hour"`
	MetricsMissed    int                `json:"metrics_missed"`
}

type statsJSON struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_sec"`
	P99 float64 `json:"p99_sec"`
	Max float64 `json:"max_sec"`
}

func toStatsJSON(s clusterrun.Stats) statsJSON {
	return statsJSON{s.N, s.P50.Seconds(), s.P99.Seconds(), s.Max.Seconds()}
}

// runFailoverBench implements `kinactor failover-bench`.
func runFailoverBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("failover-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kills := fs.Int("kills", 20, "SIGKILLs to do (every 5th round is a graceful SIGTERM in addition)")
	nodes := fs.Int("nodes", 3, "node processes")
	shards := fs.Int("shards", 8, "shards of the stream")
	rate := fs.Float64("rate", 50, "records per second produced during the run")
	keys := fs.Int("keys", 64, "partition keys")
	seed := fs.Uint64("seed", 1, "seed for picking victims")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	dynalite := fs.Bool("dynalite", false, "use dynalite instead of DynamoDB Local")
	early := fs.Bool("early-detection", true, "run the nodes with early crash detection (false: gossip's probes alone)")
	settle := fs.Duration("settle", 0, "let records flow this long after each rebalance before the next stop (0: stop at once; a crash right after a join is the hardest case)")
	nodeBin := fs.String("node-bin", "", "the kinactor binary the nodes run (default: this one), e.g. an older build to compare")
	dir := fs.String("dir", "", "tools/localaws directory (default: $"+localaws.EnvDir+", else found from the working directory's module)")
	workDir := fs.String("work-dir", "", "directory for ledgers and node logs (default: a temporary directory, removed afterwards)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kinactor failover-bench [flags]\n\n"+
			"Starts local servers and a cluster of `kinactor node` processes, produces\n"+
			"records, and repeatedly SIGKILLs a random node (every 5th round a graceful\n"+
			"SIGTERM), waits until its shards are processed again, starts a replacement\n"+
			"and waits for the rebalance. Prints how long shards were idle, duplicates\n"+
			"and losses (exit status 1 if a record was lost).\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("failover-bench: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	case *kills < 0:
		return fmt.Errorf("failover-bench: invalid --kills %d", *kills)
	case *nodes < 2:
		return fmt.Errorf("failover-bench: invalid --nodes %d (want at least 2)", *nodes)
	case *shards < 1 || *shards > 100:
		return fmt.Errorf("failover-bench: invalid --shards %d (want 1..100)", *shards)
	case *rate <= 0:
		return fmt.Errorf("failover-bench: invalid --rate %g", *rate)
	case *keys < 1:
		return fmt.Errorf("failover-bench: invalid --keys %d", *keys)
	}
	began := time.Now()
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "[%6.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, a...))
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("failover-bench: %w", err)
	}
	if *nodeBin != "" {
		bin = *nodeBin
	}
	wd := *workDir
	if wd == "" {
		if wd, err = os.MkdirTemp("", "kinactor-failover-bench-"); err != nil {
			return fmt.Errorf("failover-bench: %w", err)
		}
		defer os.RemoveAll(wd)
	}

	dynamo := localaws.DynamoDBLocal
	if *dynalite {
		dynamo = localaws.Dynalite
	}
	env, err := startLocalEnv(ctx, *dir, dynamo, nil)
	if err != nil {
		return fmt.Errorf("failover-bench: %w", err)
	}
	defer env.Stop()
	kc := env.KinesisClient()
	const name = "kinactor-failover-bench"
	if _, err := awswait.EnsureStream(ctx, kc, name, int32(*shards), time.Minute); err != nil {
		return fmt.Errorf("failover-bench: %w", err)
	}
	logf("servers up, stream %s with %d shards", name, *shards)

	var earlyArgs []string
	if !*early {
		earlyArgs = []string{"--early-detection=false"}
	}
	// One node creates the lease rows, then the others join.
	c, err := clusterrun.Start(ctx, clusterrun.Options{Bin: bin, Dir: wd, App: name, Stream: name, Env: env.Environ(), Nodes: 1,
		ExtraArgs: earlyArgs})
	if err != nil {
		return fmt.Errorf("failover-bench: %w", err)
	}
	defer c.Close()
	failed := func(err error) error {
		return fmt.Errorf("failover-bench: %w (node logs in %s)", err, filepath.Join(wd, "logs"))
	}
	if *workDir == "" {
		failed = func(err error) error {
			return fmt.Errorf("failover-bench: %w (pass --work-dir to keep the node logs)", err)
		}
	}
	if err := c.Grow(ctx, *nodes, *shards, 60*time.Second); err != nil {
		return failed(err)
	}
	runStart := time.Now()
	prod := clusterrun.StartProducer(kc, name, *keys, *rate)
	defer prod.Stop()
	logf("%d nodes balanced; producing %g records/s", *nodes, *rate)
	if err := waitProduced(ctx, prod, int(2**rate)); err != nil {
		return failed(err)
	}

	var leaseWrites float64
	writesByOp := map[string]float64{}
	metricsMissed := 0
	collect := func(p *clusterrun.Proc) {
		m, err := c.Metrics(ctx, p)
		if err != nil {
			metricsMissed++
			logf("metrics of %s: %v", p.Name, err)
			return
		}
		leaseWrites += m.Sum("kinactor_lease_writes_total")
		for k, v := range m.SumBy("kinactor_lease_writes_total", "op") {
			writesByOp[k] += v
		}
	}

	rng := rand.New(rand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15))
	done := 0
	for round := 1; done < *kills; round++ {
		graceful := round%5 == 0
		live := c.Nodes()
		victim := live[rng.IntN(len(live))]
		vs, err := shardsOf(ctx, c, victim)
		if err != nil {
			return failed(err)
		}
		collect(victim)
		var at time.Time
		how := "SIGKILL"
		if graceful {
			how = "SIGTERM"
			at = time.Now()
			if err := c.Term(victim); err != nil {
				return failed(err)
			}
		} else {
			at = time.Now()
			if err := c.Kill(victim); err != nil {
				return failed(err)
			}
			done++
		}
		if err := waitFlowing(ctx, c, victim.Name, vs, at, 30*time.Second); err != nil {
			return failed(err)
		}
		flowing := time.Since(at)
		p, err := c.AddNode(ctx)
		if err != nil {
			return failed(err)
		}
		joined := time.Now()
		if _, err := c.WaitBalanced(ctx, *shards, 60*time.Second); err != nil {
			return failed(err)
		}
		logf("round %d: %s %s (%d shards), all flowing again after %.2fs; %s joined, balanced after %.2fs",
			round, how, victim.Name, len(vs), flowing.Seconds(), p.Name, time.Since(joined).Seconds())
		if *settle > 0 {
			if err := backoff.Sleep(ctx, *settle); err != nil {
				return failed(err)
			}
		}
	}

	produced, err := prod.Stop()
	if err != nil {
		return failed(err)
	}
	rep, err := waitAllProcessed(ctx, c, produced, 60*time.Second)
	if err != nil {
		logf("%v", err)
	}
	for _, p := range c.Nodes() {
		collect(p)
	}
	runHours := time.Since(runStart).Hours()
	for _, p := range c.Nodes() {
		if err := c.Term(p); err != nil {
			logf("%v", err)
		}
	}

	res := benchResult{
		Nodes: *nodes, Shards: *shards, Rate: *rate, Seed: *seed, DurationSec: time.Since(began).Seconds(),
		Kills: rep.Kills, KillIdle: toStatsJSON(rep.KillIdle),
		GracefulStops: rep.Terms, TermIdle: toStatsJSON(rep.TermIdle), GracefulMoves: rep.TermIdle.N,
		DupAfterTerms: rep.DupAfterTerms, DupAfterKills: rep.DupAfterKills, DupOther: rep.DupUnattributed,
		DupAfterJoins: rep.DupByLastEvent[clusterrun.EventStart],
		Lost:          rep.Lost, OrderViolations: rep.OrderViolations, Produced: rep.Produced, Processed: rep.Processed,
		LeaseWrites: leaseWrites, LeaseWritesByOp: writesByOp, MetricsMissed: metricsMissed,
	}
	if res.GracefulMoves > 0 {
		res.DupPerGraceful = float64(rep.DupAfterTerms) / float64(res.GracefulMoves)
	}
	res.EarlyDetection, res.SettleSec = *early, settle.Seconds()
	res.KillMoves = len(rep.KillDups)
	if res.KillMoves > 0 {
		total := 0
		for _, d := range rep.KillDups {
			total += d
		}
		res.DupPerKillMove = float64(total) / float64(res.KillMoves)
		res.DupMedianKill, res.DupMaxKill = clusterrun.MedianInt(rep.KillDups), slices.Max(rep.KillDups)
		res.DupTimeKill = toStatsJSON(rep.KillDupTime)
	}
	res.WorstMoves = worstKillMoves(rep, c.Events(), 3)
	if runHours > 0 {
		res.LeaseWritesPerSH = leaseWrites / float64(*shards) / runHours
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		printBench(stdout, res)
	}
	if rep.Lost > 0 || rep.OrderViolations > 0 {
		return fmt.Errorf("failover-bench: %d records lost, %d per-key order violations", rep.Lost, rep.OrderViolations)
	}
	return nil
}

func waitProduced(ctx context.Context, prod *clusterrun.Producer, n int) error {
	return pollFor(ctx, time.Minute, func() error {
		if _, total := prod.Produced(); total < n {
			if errs, err := prod.Errors(); errs > 0 {
				return fmt.Errorf("%d of %d records produced (%d failed calls, last: %v)", total, n, errs, err)
			}
			return fmt.Errorf("%d of %d records produced", total, n)
		}
		return nil
	})
}

// worstKillMoves describes the n moves after kills with the most
// duplicates (none without duplicates).
func worstKillMoves(rep clusterrun.Report, events []clusterrun.Event, n int) []string {
	var ms []clusterrun.Move
	for _, m := range rep.Moves {
		if m.Kind == clusterrun.EventKill && m.Dups > 0 {
			ms = append(ms, m)
		}
	}
	slices.SortStableFunc(ms, func(a, b clusterrun.Move) int { return b.Dups - a.Dups })
	var out []string
	for _, m := range ms[:min(n, len(ms))] {
		at := ""
		if m.Event < len(events) {
			at = events[m.Event].At.Format("15:04:05.000") + " "
		}
		out = append(out, fmt.Sprintf("%skill of %s: %s to %s, %d duplicates (%.2fs of its records), idle %.2fs",
			at, m.From, m.Shard, m.To, m.Dups, m.DupTime.Seconds(), m.Idle.Seconds()))
	}
	return out
}

func printBench(w io.Writer, r benchResult) {
	early := "on"
	if !r.EarlyDetection {
		early = "off"
	}
	fmt.Fprintf(w, "failover-bench: %d nodes, %d shards, %g records/s, seed %d, early detection %s, settle %gs, %.0fs\n\n", r.Nodes, r.Shards, r.Rate, r.Seed, early, r.SettleSec, r.DurationSec)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tcount\tshards moved\tidle p50 (s)\tidle p99 (s)\tidle max (s)\t")
	fmt.Fprintf(tw, "kills (SIGKILL)\t%d\t%d\t%.3f\t%.3f\t%.3f\t\n", r.Kills, r.KillIdle.N, r.KillIdle.P50, r.KillIdle.P99, r.KillIdle.Max)
	fmt.Fprintf(tw, "graceful stops (SIGTERM)\t%d\t%d\t%.3f\t%.3f\t%.3f\t\n", r.GracefulStops, r.TermIdle.N, r.TermIdle.P50, r.TermIdle.P99, r.TermIdle.Max)
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "duplicates per graceful move\t%.2f\t(%d duplicates after graceful stops, %d shards moved)\n", r.DupPerGraceful, r.DupAfterTerms, r.GracefulMoves)
	fmt.Fprintf(tw, "duplicates after kills\t%d\t(%d of them after the replacement joined and before the next stop)\n", r.DupAfterKills, r.DupAfterJoins)
	fmt.Fprintf(tw, "duplicates per shard moved by a kill\t%.2f\t(median %d, max %d over %d moves; median %.2fs of that shard's records, max %.2fs)\n",
		r.DupPerKillMove, r.DupMedianKill, r.DupMaxKill, r.KillMoves, r.DupTimeKill.P50, r.DupTimeKill.Max)
	if r.DupOther > 0 {
		fmt.Fprintf(tw, "duplicates before any stop\t%d\t\n", r.DupOther)
	}
	for i, m := range r.WorstMoves {
		what := ""
		if i == 0 {
			what = "costliest moves after kills"
		}
		fmt.Fprintf(tw, "%s\t\t%s\n", what, m)
	}
	fmt.Fprintf(tw, "lost\t%d\t(of %d produced; %d processed)\n", r.Lost, r.Produced, r.Processed)
	fmt.Fprintf(tw, "per-key order violations\t%d\t\n", r.OrderViolations)
	var ops []string
	for op, v := range r.LeaseWritesByOp {
		ops = append(ops, fmt.Sprintf("%s %.0f", op, v))
	}
	slices.Sort(ops)
	missed := ""
	if r.MetricsMissed > 0 {
		missed = fmt.Sprintf("; metrics of %d nodes missed", r.MetricsMissed)
	}
	fmt.Fprintf(tw, "lease writes per shard-hour\t%.0f\t(%.0f writes: %s; includes the run's churn%s)\n", r.LeaseWritesPerSH, r.LeaseWrites, strings.Join(ops, ", "), missed)
	_ = tw.Flush()
}
