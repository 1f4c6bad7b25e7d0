package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// What the demos and failover-bench share: local servers, and waits on a
// cluster of `kinactor node` processes read from their ledgers.

// startLocalEnv starts kinesalite and a DynamoDB server of kind dynamo
// (DynamoDB Local or dynalite) in parallel; serverLog receives their output
// (nil discards it).
func startLocalEnv(ctx context.Context, dir string, dynamo localaws.Kind, serverLog io.Writer) (*localaws.Env, error) {
	opts := localaws.Options{Dir: dir, Log: serverLog}
	env, err := localaws.StartEnv(ctx, localaws.Kinesalite, opts, dynamo, opts)
	if err != nil {
		return nil, fmt.Errorf("starting local servers (install them with `make deps`; run from the repository or pass --dir): %w", err)
	}
	return env, nil
}

// waitFlowing polls the ledgers until each of shards has a record
// processed by a node other than victim after at.
func waitFlowing(ctx context.Context, c *clusterrun.Cluster, victim string, shards []string, at time.Time, timeout time.Duration) error {
	return pollFor(ctx, timeout, func() error {
		es, err := ledger.ReadDir(c.LedgerDir())
		if err != nil {
			return err
		}
		again := map[string]bool{}
		for _, e := range es {
			if e.Node != victim && e.TS > at.UnixMilli() {
				again[e.Shard] = true
			}
		}
		for _, s := range shards {
			if !again[s] {
				return fmt.Errorf("no record of %s processed by another node since %s stopped", s, victim)
			}
		}
		return nil
	})
}

// waitAllProcessed polls the ledgers until every produced record is in
// one, and returns the analysis.
func waitAllProcessed(ctx context.Context, c *clusterrun.Cluster, produced map[string]int, timeout time.Duration) (clusterrun.Report, error) {
	var rep clusterrun.Report
	err := pollFor(ctx, timeout, func() error {
		es, err := ledger.ReadDir(c.LedgerDir())
		if err != nil {
			return err
		}
		rep = clusterrun.Analyze(es, produced, c.Events())
		if rep.Lost > 0 {
			return fmt.Errorf("%d of %d records in no ledger, e.g. %v", rep.Lost, rep.Produced, rep.LostSamples)
		}
		return nil
	})
	return rep, err
}

// pollFor calls f every 100ms until it returns nil, ctx is done or timeout
// passes (then the last error is returned).
func pollFor(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-t.C:
		}
	}
}

// shardsOf returns the shards p owns, from its /status.
func shardsOf(ctx context.Context, c *clusterrun.Cluster, p *clusterrun.Proc) ([]string, error) {
	st, err := c.Status(ctx, p)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range st.Shards {
		ids = append(ids, s.LeaseKey())
	}
	return ids, nil
}

// procNames is the names of ps, space-separated.
func procNames(ps []*clusterrun.Proc) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Name)
	}
	return strings.Join(s, " ")
}
