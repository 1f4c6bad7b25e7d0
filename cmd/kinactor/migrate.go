package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/migrate"
	"github.com/kinactor/kinactor/internal/stream"
)

// migrateFromVMware is the only accepted value of --from.
const migrateFromVMware = "vmware-go-kcl"

// runMigrate implements `kinactor migrate`: copy the checkpoints of a
// vmware-go-kcl table into a new kinactor lease table (see package migrate).
func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "the library that wrote --table; only "+migrateFromVMware)
	table := fs.String("table", "", "the old table (vmware-go-kcl: its application name) (required)")
	to := fs.String("to", "", "the new kinactor lease table, created if missing (required)")
	streamName := fs.String("stream", "", "the Kinesis stream the old application consumed; its lineage (ListShards) gives each shard all its parents (required)")
	force := fs.Bool("force", false, "copy even when some old leases have not timed out yet")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound on the whole command")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: kinactor migrate --from vmware-go-kcl --table OLD --to NEW --stream NAME [--force]

Copies each shard's checkpoint from a vmware-go-kcl table into a new kinactor
lease table, as free leases; rows already in the new table are left alone, so
it may be run again. It refuses while a lease of the old table is live (stop
the vmware-go-kcl workers first) unless --force. Then run the nodes with
Config.TableName (or --app) set to NEW.

The old table records one parent per shard (ParentShardId); a shard made by
MergeShards has two. So each shard's parents are taken from the stream's
lineage (kinesis:ListShards on --stream), and from the old table only for
shards the stream no longer lists. It refuses when the old table's parents
contradict the stream's (the wrong --stream).

A Java KCL 2.x lease table needs no migration: kinactor reads it as it is.
Point TableName at it.

flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("migrate: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	switch *from {
	case migrateFromVMware:
	case "":
		return fmt.Errorf("migrate: --from is required (only %q is supported)", migrateFromVMware)
	default:
		hint := ""
		if l := strings.ToLower(*from); strings.Contains(l, "java") || strings.Contains(l, "kcl") || strings.Contains(l, "amazon") {
			hint = "; a Java KCL 2.x table needs no migration: set TableName to it"
		}
		return fmt.Errorf("migrate: unsupported --from %q (only %q is supported%s)", *from, migrateFromVMware, hint)
	}
	if *table == "" {
		return errors.New("migrate: --table is required")
	}
	if *to == "" {
		return errors.New("migrate: --to is required")
	}
	if *streamName == "" {
		return errors.New("migrate: --stream is required: the stream the old application consumed, whose lineage gives a merged shard both its parents (the old table records only one)")
	}
	if *timeout <= 0 {
		return fmt.Errorf("migrate: invalid --timeout %s (must be positive)", *timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("migrate: loading AWS config: %w", err)
	}
	ddb := dynamoClient(awsCfg)
	lineage := throttleRetrying{stream.NewClient(stream.NewSDKClient(awsCfg), *streamName, "")}
	_, err = migrate.FromVMware(ctx, ddb, *table, *to, migrate.Options{Force: *force, Out: stdout, Stream: lineage, StreamName: *streamName})
	if errors.Is(err, migrate.ErrLiveLeases) {
		return fmt.Errorf("%w; rerun with --force to copy anyway", err)
	}
	return err
}

// throttleRetrying lists a stream's shards, retrying throttled calls
// (stream.Client leaves that to its caller) until the context ends.
type throttleRetrying struct{ c *stream.Client }

func (r throttleRetrying) ListShards(ctx context.Context) ([]stream.Shard, error) {
	p := backoff.Policy{Base: 100 * time.Millisecond, Cap: 5 * time.Second}
	for attempt := 1; ; attempt++ {
		shards, err := r.c.ListShards(ctx)
		if !errors.Is(err, stream.ErrThrottled) {
			return shards, err
		}
		if serr := backoff.Sleep(ctx, p.Delay(attempt, nil)); serr != nil {
			return nil, errors.Join(err, serr)
		}
	}
}
