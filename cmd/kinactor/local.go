package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// runLocal implements `kinactor local`: it starts a local Kinesis server and a
// local DynamoDB server, prints shell exports pointing the AWS SDKs at them,
// and serves until ctx is done (the caller cancels it on SIGINT/SIGTERM), then
// stops both and returns nil.
//
//	kinactor local >local.env &   # then, once it has written them: . ./local.env
func runLocal(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kinesisKind := fs.String("kinesis", string(localaws.Kinesalite), "Kinesis server: kinesis-mock or kinesalite")
	dynamoKind := fs.String("dynamodb", string(localaws.DynamoDBLocal), "DynamoDB server: dynamodb-local or dynalite")
	kinesisPort := fs.Int("kinesis-port", 0, "loopback port for the Kinesis server (0 = a free port)")
	dynamoPort := fs.Int("dynamodb-port", 0, "loopback port for the DynamoDB server (0 = a free port)")
	dir := fs.String("dir", "", "tools/localaws directory (default: $"+localaws.EnvDir+", else found from the working directory's module)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kinactor local [flags]\n\n"+
			"Starts local Kinesis and DynamoDB servers (installed by `make deps`), prints\n"+
			"shell exports for them and serves until interrupted.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("local: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	kk, dk := localaws.Kind(*kinesisKind), localaws.Kind(*dynamoKind)
	if !kk.IsKinesis() {
		return fmt.Errorf("local: invalid --kinesis %q (want %s or %s)", *kinesisKind, localaws.KinesisMock, localaws.Kinesalite)
	}
	if !dk.IsDynamoDB() {
		return fmt.Errorf("local: invalid --dynamodb %q (want %s or %s)", *dynamoKind, localaws.DynamoDBLocal, localaws.Dynalite)
	}
	for _, p := range []struct {
		name string
		port int
	}{{"--kinesis-port", *kinesisPort}, {"--dynamodb-port", *dynamoPort}} {
		if p.port < 0 || p.port > 65535 {
			return fmt.Errorf("local: invalid %s %d (want 0..65535, 0 = a free port)", p.name, p.port)
		}
	}
	if *kinesisPort != 0 && *kinesisPort == *dynamoPort {
		return fmt.Errorf("local: --kinesis-port and --dynamodb-port are both %d", *kinesisPort)
	}

	// Start both in parallel; server output goes to stderr so stdout stays
	// eval-able.
	env, err := localaws.StartEnv(ctx, kk, localaws.Options{Port: *kinesisPort, Dir: *dir, Log: stderr},
		dk, localaws.Options{Port: *dynamoPort, Dir: *dir, Log: stderr})
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting: not a failure
		}
		return err
	}
	kin, ddb := env.Kinesis, env.DynamoDB

	fmt.Fprintf(stdout, "export AWS_ENDPOINT_URL_KINESIS=%s\n", kin.Endpoint)
	fmt.Fprintf(stdout, "export AWS_ENDPOINT_URL_DYNAMODB=%s\n", ddb.Endpoint)
	fmt.Fprintf(stdout, "export AWS_REGION=us-east-1\n")
	fmt.Fprintf(stdout, "export AWS_ACCESS_KEY_ID=local\n")
	fmt.Fprintf(stdout, "export AWS_SECRET_ACCESS_KEY=local\n")
	fmt.Fprintf(stderr, "kinactor local: %s at %s, %s at %s; interrupt to stop\n", kk, kin.Endpoint, dk, ddb.Endpoint)

	select {
	case <-ctx.Done():
		return env.Stop()
	case <-kin.Exited():
		return errors.Join(fmt.Errorf("local: %s exited unexpectedly (%v); log tail:\n%s", kk, kin.ExitErr(), kin.LogTail()), env.Stop())
	case <-ddb.Exited():
		return errors.Join(fmt.Errorf("local: %s exited unexpectedly (%v); log tail:\n%s", dk, ddb.ExitErr(), ddb.LogTail()), env.Stop())
	}
}
