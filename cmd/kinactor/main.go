// Command kinactor is kinactor's command-line tool.
//
//	kinactor local   start local Kinesis and DynamoDB servers, print exports
//	kinactor demo    run a node end to end against local servers
//	kinactor node    run one cluster member (ledger or log processor)
//	kinactor produce write numbered records to a stream
//	kinactor status  print the lease table, shards and a node's view
//	kinactor forget  delete a removed stream's rows from a multi-stream table
//	kinactor reshard split or merge shards, or change the shard count
//	kinactor failover-bench  kill and replace nodes of a local cluster, measure
//	kinactor chaos   run a chaos scenario against a local cluster, verify the ledgers
//	kinactor migrate copy a vmware-go-kcl table's checkpoints to a lease table
//
// Errors are printed as "kinactor: <err>" and exit with status 1; a missing
// or unknown subcommand prints the usage and exits with status 2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand. run gets the arguments after the subcommand's
// name and a context cancelled on SIGINT/SIGTERM.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands lists the subcommands in usage order.
var commands = []command{
	{"local", "start local Kinesis and DynamoDB servers and print AWS exports for them", runLocal},
	{"demo", "produce records to a local stream and consume them with a node, checking exactly-once", runDemo},
	{"node", "run one cluster member consuming a stream until interrupted", runNode},
	{"produce", "write numbered JSON records over partition keys to a stream", runProduce},
	{"status", "print the lease table and shards, and a node's members and shards", runStatus},
	{"forget", "delete the rows a multi-stream lease table keeps for a stream no node consumes any more", runForget},
	{"reshard", "split or merge shards, or change the shard count, and wait until ACTIVE", runReshard},
	{"failover-bench", "kill and replace node processes of a local cluster repeatedly; report idle time, duplicates, losses", runFailoverBench},
	{"chaos", "run a chaos scenario (kills, partitions, throttling, resharding) against a local cluster and verify the ledgers", runChaos},
	{"migrate", "copy a vmware-go-kcl table's checkpoints into a kinactor lease table", runMigrate},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	}
	var cmd *command
	for i := range commands {
		if commands[i].name == args[0] {
			cmd = &commands[i]
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "kinactor: unknown subcommand %q\n\n", args[0])
		usage(stderr)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "kinactor: %v\n", err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: kinactor <subcommand> [flags]\n\nsubcommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun `kinactor <subcommand> -h` for its flags.\n")
}
