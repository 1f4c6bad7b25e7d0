package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/multistream"
)

// runForget implements `kinactor forget`: it deletes the rows a
// multi-stream lease table keeps for a stream that left the application's
// set (nodes keep them, so that a stream that returns resumes where it
// was). Only released rows are deleted, and only if they are still
// released, at the same counter, after --settle: a row owned now, or
// written during the wait, means some node still consumes the stream, and
// nothing is deleted.
func runForget(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("forget", flag.ContinueOnError)
	fs.SetOutput(stderr)
	app := fs.String("app", "", "application name, i.e. the lease table (required)")
	streamName := fs.String("stream", "", "the stream whose rows go: every row of a stream of this name, whatever its account and creation time (required)")
	settle := fs.Duration("settle", 30*time.Second, "how long the rows must stay released and unwritten before they are deleted")
	dryRun := fs.Bool("dry-run", false, "print the rows that would go, delete nothing")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound on the whole command")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kinactor forget --app NAME --stream NAME [--settle D] [--dry-run]\n\n"+
			"Deletes the rows a multi-stream lease table keeps for a stream no node consumes any more.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("forget: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *app == "" {
		return errors.New("forget: --app is required")
	}
	if *streamName == "" {
		return errors.New("forget: --stream is required")
	}
	if !multistream.ValidName(*streamName) {
		return fmt.Errorf("forget: invalid --stream %q: not a stream name", *streamName)
	}
	if *settle < 0 {
		return fmt.Errorf("forget: invalid --settle %s (must not be negative)", *settle)
	}
	if *timeout <= *settle {
		return fmt.Errorf("forget: invalid --timeout %s (must be longer than --settle %s)", *timeout, *settle)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("forget: loading AWS config: %w", err)
	}
	ddb := dynamoClient(awsCfg)
	store := lease.NewDynamoStore(ddb, *app)
	list := func() ([]lease.Lease, error) {
		ls, err := store.List(ctx)
		if err != nil {
			return nil, fmt.Errorf("forget: lease table %s: %w", *app, err)
		}
		return ls, nil
	}
	first, err := list()
	if err != nil {
		return err
	}
	rows, err := rowsToForget(*app, *streamName, first)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		fmt.Fprintf(stdout, "no rows of stream %s in %s\n", *streamName, *app)
		return nil
	}
	if *dryRun {
		for _, l := range rows {
			fmt.Fprintln(stdout, l.Key)
		}
		fmt.Fprintf(stdout, "would delete %s of stream %s (dry run)\n", pluralCount(len(rows), "row"), *streamName)
		return nil
	}
	if *settle > 0 {
		t := time.NewTimer(*settle) // the rows must stay unwritten this long
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("forget: %w", ctx.Err())
		}
	}
	second, err := list()
	if err != nil {
		return err
	}
	if err := unchanged(*streamName, rows, second); err != nil {
		return err
	}
	for i, l := range rows {
		if err := store.Delete(ctx, l); err != nil {
			return fmt.Errorf("forget: deleting row %q (%d of %d deleted): %w", l.Key, i, len(rows), err)
		}
	}
	fmt.Fprintf(stdout, "deleted %s of stream %s from %s\n", pluralCount(len(rows), "row"), *streamName, *app)
	return nil
}

// rowsToForget returns the rows of the stream named name, in key order, or
// an error when the table is not a multi-stream table or when one of them
// is owned (the stream is still consumed).
func rowsToForget(table, name string, leases []lease.Lease) ([]lease.Lease, error) {
	if l, ok := plainRow(leases); ok {
		return nil, fmt.Errorf("forget: lease table %s is not a multi-stream table (row %q): its rows are the application's only stream", table, l)
	}
	var out []lease.Lease
	for _, l := range leases {
		if id, _, ok := multistream.ParseKey(l.Key); ok && id.Name == name {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b lease.Lease) int { return strings.Compare(a.Key, b.Key) })
	var owned []string
	for _, l := range out {
		if l.Owner != "" {
			owned = append(owned, fmt.Sprintf("%s (owner %s)", l.Key, l.Owner))
		}
	}
	if len(owned) > 0 {
		return nil, fmt.Errorf("forget: stream %s is still consumed: %s; remove it from every node's streams first, nothing deleted", name, strings.Join(owned, ", "))
	}
	return out, nil
}

// unchanged reports an error naming the first row of rows that the later
// listing shows taken or written (another counter), or a row of the
// stream that appeared in the meantime.
func unchanged(name string, rows, later []lease.Lease) error {
	was := map[string]lease.Lease{}
	for _, l := range rows {
		was[l.Key] = l
	}
	for _, l := range later {
		id, _, ok := multistream.ParseKey(l.Key)
		if !ok || id.Name != name {
			continue
		}
		w, seen := was[l.Key]
		switch {
		case !seen:
			return fmt.Errorf("forget: stream %s is still consumed: row %q appeared during --settle; nothing deleted", name, l.Key)
		case l.Owner != "" || l.Counter != w.Counter:
			return fmt.Errorf("forget: stream %s is still consumed: row %q was written during --settle (counter %d, then %d, owner %q); nothing deleted", name, l.Key, w.Counter, l.Counter, l.Owner)
		}
	}
	return nil
}
