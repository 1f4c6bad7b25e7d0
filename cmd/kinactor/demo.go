package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// `kinactor demo` runs one of two demos on local servers it starts itself:
//
//   - the cluster demo (the default; demo_cluster.go): three `kinactor
//     node` processes and a producer, a kill, a join, a live ownership
//     table and a summary;
//   - the single-process demo (--single; demo_single.go): one in-process
//     node consuming what was produced, checked for exactly-once.

const (
	demoStream      = "kinactor-demo"
	demoApplication = "kinactor-demo"
)

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
	var d clusterDemo
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&d.shards, "shards", 8, "shards of the demo stream")
	fs.IntVar(&d.nodes, "nodes", 3, "node processes")
	fs.Float64Var(&d.rate, "rate", 50, "records per second")
	fs.DurationVar(&d.phase, "phase", 30*time.Second, "how long each phase runs: steady, after the kill, after the join")
	fs.StringVar(&d.dir, "dir", "", "tools/localaws directory (default: $"+localaws.EnvDir+", else found from the working directory's module)")
	fs.StringVar(&d.workDir, "work-dir", "", "directory for ledgers and node logs (default: a temporary directory, removed afterwards)")
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
	case d.shards < 1 || d.shards > 100:
		return fmt.Errorf("demo: invalid --shards %d (want 1..100)", d.shards)
	case d.nodes < 2:
		return fmt.Errorf("demo: invalid --nodes %d (want at least 2)", d.nodes)
	case d.rate <= 0:
		return fmt.Errorf("demo: invalid --rate %g", d.rate)
	case d.phase <= 0:
		return fmt.Errorf("demo: invalid --phase %s", d.phase)
	}
	return d.run(ctx, newDemoLog(stdout))
}

// demoLog prints a demo's lines, each after the seconds since the demo
// began; safe for concurrent use.
type demoLog struct {
	w     io.Writer
	began time.Time
	mu    sync.Mutex
}

func newDemoLog(w io.Writer) *demoLog { return &demoLog{w: w, began: time.Now()} }

// step prints one line.
func (l *demoLog) step(format string, a ...any) { l.print(fmt.Sprintf(format, a...) + "\n") }

// print prints s (which ends with its own newline).
func (l *demoLog) print(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "[%5.1fs] %s", time.Since(l.began).Seconds(), s)
}

func failedIf(errs ...error) error {
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}
