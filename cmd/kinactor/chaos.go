package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kinactor/kinactor/internal/testenv/chaos"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// runChaos implements `kinactor chaos`: a chaos scenario against a local
// cluster of `kinactor node` processes, then the verifier's report.
func runChaos(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenario := fs.String("scenario", "", "scenario file (JSON); the flags below override its fields")
	nodes := fs.Int("nodes", 5, "node processes at the start")
	shards := fs.Int("shards", 16, "shards of the stream")
	duration := fs.Duration("duration", 3*time.Minute, "how long the producer runs (faults happen meanwhile)")
	seed := fs.Uint64("seed", 1, "seed of the fault schedule, victims and proxies (the same seed gives the same schedule)")
	faults := fs.String("faults", "kill,restart,stop,partition,throttle,errors,latency", "random mix of these fault kinds: "+strings.Join(kindNames(), ","))
	count := fs.Int("count", 0, "faults in the random mix (default one per 15s)")
	rate := fs.Float64("rate", 20, "records per second produced")
	keys := fs.Int("keys", 32, "partition keys")
	asJSON := fs.Bool("json", false, "no progress; print the report as one JSON object on the last line")
	keepDir := fs.Bool("keep-dir", false, "keep the work directory (ledgers, node logs) and print its path")
	workDir := fs.String("work-dir", "", "work directory (default: a temporary one, removed unless --keep-dir)")
	useEnv := fs.Bool("use-env", false, "use the servers at AWS_ENDPOINT_URL_KINESIS and AWS_ENDPOINT_URL_DYNAMODB instead of starting local ones")
	dir := fs.String("dir", "", "tools/localaws directory (default: $"+localaws.EnvDir+", else found from the working directory's module)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kinactor chaos [--scenario FILE] [--nodes N --shards S --duration D --seed X --faults LIST --rate R] [--json] [--keep-dir]\n\n"+
			"Starts local servers, a cluster of `kinactor node` processes each behind its own\n"+
			"fault-injecting proxies, produces records while doing the scenario's faults, then\n"+
			"verifies the ledgers: nothing lost, per-key order held, no checkpoint moved\n"+
			"backwards, no shard stalled longer than max_stall, nothing delivered by a node cut\n"+
			"off from DynamoDB past its lease, no stale batches or checkpoints from a woken\n"+
			"paused node (exit status 0 only then); duplicates by fault, idle time after kills\n"+
			"and stops, the longest stall, lease writes per shard-hour.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("chaos: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var s chaos.Scenario
	if *scenario != "" {
		var err error
		if s, err = chaos.Load(*scenario); err != nil {
			return err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	over := func(name string, apply func()) {
		if *scenario == "" || set[name] {
			apply()
		}
	}
	over("nodes", func() { s.Nodes = *nodes })
	over("shards", func() { s.Shards = *shards })
	over("duration", func() { s.Duration = chaos.Duration(*duration) })
	over("seed", func() { s.Seed = *seed })
	over("rate", func() { s.Rate = *rate })
	over("keys", func() { s.Keys = *keys })
	over("count", func() { s.Count = *count })
	if *scenario == "" || set["faults"] {
		ks, err := chaos.ParseKinds(*faults)
		if err != nil {
			return fmt.Errorf("chaos: --faults: %w", err)
		}
		s.Mix, s.Faults = ks, nil
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	wd := *workDir
	if wd == "" {
		if wd, err = os.MkdirTemp("", "kinactor-chaos-"); err != nil {
			return fmt.Errorf("chaos: %w", err)
		}
		if !*keepDir {
			defer os.RemoveAll(wd)
		}
	}
	var progress io.Writer = stderr
	if *asJSON {
		progress = nil
	}
	// Nothing of a chaos run should reach the standard logger (the fault
	// proxies discard their own logs); keep stray lines out of the report.
	log.SetOutput(io.Discard)
	defer log.SetOutput(os.Stderr)
	rep, err := chaos.Run(ctx, s, chaos.Options{Bin: bin, WorkDir: wd, ToolsDir: *dir, UseEnv: *useEnv, Progress: progress})
	if *keepDir || *workDir != "" {
		fmt.Fprintf(stderr, "chaos: ledgers and node logs in %s\n", wd)
	}
	if err != nil {
		if !*keepDir && *workDir == "" {
			return fmt.Errorf("%w (pass --keep-dir to keep the node logs)", err)
		}
		return fmt.Errorf("%w (node logs in %s)", err, filepath.Join(wd, "logs"))
	}
	if *asJSON {
		b, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		rep.WriteTable(stdout)
	}
	if !rep.OK {
		return fmt.Errorf("chaos: FAIL: %s", strings.Join(rep.Failures, "; "))
	}
	return nil
}

func kindNames() []string {
	var ns []string
	for _, k := range chaos.Kinds {
		ns = append(ns, string(k))
	}
	return ns
}
