package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/kinactor/kinactor/internal/migrate"
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
	force := fs.Bool("force", false, "copy even when some old leases have not timed out yet")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound on the whole command")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: kinactor migrate --from vmware-go-kcl --table OLD --to NEW [--force]

Copies each shard's checkpoint from a vmware-go-kcl table into a new kinactor
lease table, as free leases; rows already in the new table are left alone, so
it may be run again. It refuses while a lease of the old table is live (stop
the vmware-go-kcl workers first) unless --force. Then run the nodes with
Config.TableName (or --app) set to NEW.

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
	if *timeout <= 0 {
		return fmt.Errorf("migrate: invalid --timeout %s (must be positive)", *timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("migrate: loading AWS config: %w", err)
	}
	ddb := dynamodb.NewFromConfig(awsCfg, func(o *dynamodb.Options) {
		// Local DynamoDB servers omit the CRC32 header; real AWS sends it.
		if os.Getenv("AWS_ENDPOINT_URL_DYNAMODB") != "" || os.Getenv("AWS_ENDPOINT_URL") != "" {
			o.DisableValidateResponseChecksum = true
		}
	})
	_, err = migrate.FromVMware(ctx, ddb, *table, *to, migrate.Options{Force: *force, Out: stdout})
	if errors.Is(err, migrate.ErrLiveLeases) {
		return fmt.Errorf("%w; rerun with --force to copy anyway", err)
	}
	return err
}
