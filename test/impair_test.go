package test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/testenv/chaos"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// The partial-failure tests: a small chaos scenario (3 `kinactor node`
// processes, 6 shards, 60 records/s, kinesalite and dynalite started by the
// chaos runner) with one fault that impairs one node while it keeps
// running. They assert what the verifier found: nothing lost, no shard
// stalled longer than max_stall (LeaseExpiry 9s + StallTimeout 10s + 10s),
// and the fault's own contract. The recovery times are logged, not
// asserted (BENCHMARKS.md measures them).

// impairNodeArgs are short timings, so that a fault resolves within a test.
var impairNodeArgs = []string{"--sync-interval", "2s", "--renew-interval", "3s", "--checkpoint-interval", "3s",
	"--stall-timeout", "10s", "--stop-timeout", "20s"}

func impairScenario(duration time.Duration, f chaos.Fault) chaos.Scenario {
	return chaos.Scenario{Nodes: 3, Shards: 6, Rate: 60, Keys: 24, Duration: chaos.Duration(duration), Seed: 1,
		Drain: chaos.Duration(90 * time.Second), NodeArgs: impairNodeArgs, Faults: []chaos.Fault{f}}
}

// runChaos builds the binary, runs s within limit, logs the report and
// fails the test when a fault could not be done. The run's processes are
// all stopped when it returns; their logs are shown if the test failed.
func runChaos(t *testing.T, s chaos.Scenario, limit time.Duration) chaos.Report {
	t.Helper()
	localaws.SkipShort(t) // builds and starts node processes too
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	bin, err := clusterrun.Build(ctx, t.TempDir())
	requireNoError(t, err, "build")
	work := t.TempDir()
	rep, err := chaos.Run(ctx, s, chaos.Options{Bin: bin, WorkDir: work, Progress: tWriter{t}})
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, filepath.Join(work, "logs"))
		}
	})
	requireNoError(t, err, "chaos run")
	var b strings.Builder
	rep.WriteTable(&b)
	t.Logf("report:\n%s", b.String())
	for _, d := range rep.Faults {
		if d.Err != "" {
			t.Fatalf("the fault could not be done: %s: %s", d.Kind, d.Err)
		}
	}
	return rep
}

// runImpair runs s (one impairing fault) and returns the report with its
// one impairment.
func runImpair(t *testing.T, s chaos.Scenario) (chaos.Report, chaos.Impair) {
	t.Helper()
	rep := runChaos(t, s, 6*time.Minute)
	if len(rep.Impairs) != 1 || len(rep.Impairs[0].Shards) == 0 {
		t.Fatalf("want one impairment of a node that owned shards, got %+v", rep.Impairs)
	}
	im := rep.Impairs[0]
	var moved []string
	for _, s := range im.Shards {
		if d, ok := im.Moved[s]; ok {
			moved = append(moved, s+" "+time.Duration(d*float64(time.Second)).Round(time.Millisecond).String())
		}
	}
	t.Logf("recovery: %s of %s: %d shards moved, the last %.3fs after the fault began (%s); not moved during it: %v; longest stall after it %.3fs (max_stall %.1fs)",
		im.Kind, im.Node, len(im.Moved), im.RecoverySec, strings.Join(moved, ", "), im.NotMoved, im.StallSec, rep.MaxStallSec)
	return rep, im
}

// checkFlowed asserts what every partial fault must leave: nothing lost, no
// stall over max_stall.
func checkFlowed(t *testing.T, rep chaos.Report) {
	t.Helper()
	if rep.Lost > 0 {
		t.Errorf("%d of %d records lost, e.g. %v", rep.Lost, rep.Produced, rep.LostSamples)
	}
	if rep.StallsOverMax > 0 || rep.LongestStallSec > rep.MaxStallSec {
		t.Errorf("%d stalls over max_stall %.1fs; the longest: %v", rep.StallsOverMax, rep.MaxStallSec, rep.LongestStall)
	}
	if rep.Produced < 1000 {
		t.Errorf("only %d records produced", rep.Produced)
	}
}

func logTails(t *testing.T, dir string) {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	sort.Strings(paths)
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		t.Logf("log of %s (tail):\n%s", filepath.Base(p), b)
	}
}

// One node of three cut off from DynamoDB for 35 s (past max_stall): its
// shards flow on other nodes, and it delivers nothing later than
// LeaseExpiry after its last lease write known to succeed.
func TestImpairCutDynamoDB(t *testing.T) {
	rep, im := runImpair(t, impairScenario(60*time.Second,
		chaos.Fault{At: chaos.Duration(10 * time.Second), Kind: chaos.Cut, Target: "dynamodb", For: chaos.Duration(35 * time.Second)}))
	checkFlowed(t, rep)
	t.Logf("last good write of %s %.3fs before the cut; %d records delivered after it + lease expiry",
		im.Node, im.At.Sub(im.LastWrite).Seconds(), im.Late)
	if im.LastWrite.IsZero() {
		t.Fatal("no last good write recorded: the write log of the node's proxy is empty")
	}
	if im.Late > 0 || rep.CutLate > 0 {
		t.Errorf("the cut node delivered %d records later than LeaseExpiry after its last good write, e.g. %v", im.Late, im.LateSamples)
	}
	if !rep.OK {
		t.Errorf("verifier: %v", rep.Failures)
	}
}

// One node of three cut off from Kinesis for 35 s: its shards flow on
// other nodes.
func TestImpairCutKinesis(t *testing.T) {
	rep, _ := runImpair(t, impairScenario(60*time.Second,
		chaos.Fault{At: chaos.Duration(10 * time.Second), Kind: chaos.Cut, Target: "kinesis", For: chaos.Duration(35 * time.Second)}))
	checkFlowed(t, rep)
	if !rep.OK {
		t.Errorf("verifier: %v", rep.Failures)
	}
}

// One node of three stopped (SIGSTOP) for 20 s, past LeaseExpiry, then
// resumed: the others take its shards; once awake it delivers at most the
// batch it had in flight on each shard it lost and checkpoints none.
func TestImpairPause(t *testing.T) {
	rep, im := runImpair(t, impairScenario(50*time.Second,
		chaos.Fault{At: chaos.Duration(10 * time.Second), Kind: chaos.Pause, For: chaos.Duration(20 * time.Second)}))
	checkFlowed(t, rep)
	t.Logf("after waking, on the %d shards %s lost: batches %v, records %v, checkpoints %v",
		len(im.Lost), im.Node, im.WokeBatches, im.WokeRecords, im.WokeCheckpoints)
	if len(im.Lost) == 0 {
		t.Fatalf("%s lost none of its shards %v while stopped past LeaseExpiry: the test shows nothing", im.Node, im.Shards)
	}
	for _, s := range im.Lost {
		if n := im.WokeBatches[s]; n > 1 {
			t.Errorf("%s delivered %d batches (%d records) on %s after waking; at most the one in flight", im.Node, n, im.WokeRecords[s], s)
		}
		if n := im.WokeCheckpoints[s]; n > 0 {
			t.Errorf("%s wrote %d checkpoints on %s after waking, which another node had taken", im.Node, n, s)
		}
	}
	if !rep.OK {
		t.Errorf("verifier: %v", rep.Failures)
	}
}
