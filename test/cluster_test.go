package test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/shardfsm"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/messages"
)

// clusterNode starts a clustered node on loopback gossip that joins seeds.
func clusterNode(t *testing.T, env *localaws.Env, streamName, app, name string, seeds []string, led *ledger, tweak func(*kinactor.Config)) *kinactor.Node {
	t.Helper()
	cfg := nodeConfig(t, env, streamName, app, name)
	cfg.LeaseRenewInterval = 2 * time.Second
	cfg.FollowerSyncInterval = 2 * time.Second
	// Gossip timings more tolerant than the defaults: the whole suite runs
	// on 2 cores, and a starved node must not be declared dead here (these
	// tests are about handoffs and partitions, not detection speed).
	cfg.Cluster = &cluster.Config{BindAddr: "127.0.0.1:0", Join: seeds, RejoinInterval: time.Second, ProbeInterval: 500 * time.Millisecond, ProbeTimeout: 400 * time.Millisecond, SuspicionMult: 4}
	if tweak != nil {
		tweak(&cfg)
	}
	return runNode(t, cfg, func(_ context.Context, b messages.Batch) error {
		led.record(b)
		return nil
	})
}

// owned returns how many shards each node runs in the Processing state,
// and an error unless every node runs exactly want[i] and nothing else.
func balanced(nodes []*kinactor.Node, want int) error {
	total := 0
	for _, n := range nodes {
		st, err := n.Status(context.Background())
		if err != nil {
			return err
		}
		processing := 0
		var states []string
		for _, s := range st.Shards {
			if s.State == shardfsm.Processing.String() {
				processing++
			}
			states = append(states, s.ShardID+"="+s.State)
		}
		if processing != want || len(st.Shards) != want {
			return fmt.Errorf("%s runs %d shards (%d processing: %v), want %d", st.Node, len(st.Shards), processing, states, want)
		}
		total += processing
	}
	return nil
}

// flow writes records in the background until stopped.
func flow(t *testing.T, p *producer) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				p.put(t, 10)
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// Three nodes share twelve shards evenly; a fourth joins and a node leaves
// while records flow. Every move is a graceful handoff: no record is
// processed twice, and every record is processed.
func TestClusterJoinAndLeaveAreGraceful(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, localaws.Dynalite)
	kc := env.KinesisClient()
	const name = "cluster"
	localaws.CreateStreamT(t, kc, name, 12)
	p := newProducer(kc, name, 48)
	p.put(t, 500)
	led := newLedger()

	n1 := clusterNode(t, env, name, "cluster-app", "node-1", nil, led, nil)
	seeds := []string{n1.GossipAddr()}
	n2 := clusterNode(t, env, name, "cluster-app", "node-2", seeds, led, nil)
	n3 := clusterNode(t, env, name, "cluster-app", "node-3", seeds, led, nil)
	checkFor(t, 60*time.Second, func() error { return balanced([]*kinactor.Node{n1, n2, n3}, 4) })
	t.Log("3 nodes own 4 shards each")

	stop := flow(t, p)
	defer stop()
	joined := time.Now()
	n4 := clusterNode(t, env, name, "cluster-app", "node-4", seeds, led, nil)
	checkFor(t, 60*time.Second, func() error { return balanced([]*kinactor.Node{n1, n2, n3, n4}, 3) })
	t.Logf("a 4th node joined: rebalanced to 3 shards each in %v", time.Since(joined).Round(time.Millisecond))

	left := time.Now()
	stopNode(t, n2)
	checkFor(t, 60*time.Second, func() error { return balanced([]*kinactor.Node{n1, n3, n4}, 4) })
	t.Logf("node-2 left: rebalanced to 4 shards each in %v", time.Since(left).Round(time.Millisecond))
	stop()

	total := p.produced()
	checkFor(t, 60*time.Second, func() error {
		if u := led.unique(); u < total {
			return fmt.Errorf("processed %d of %d", u, total)
		}
		return nil
	})
	led.verify(t, total) // exactly once: graceful moves duplicate nothing
	for _, n := range []*kinactor.Node{n1, n2, n3, n4} {
		c, s := scrape(t, n).Hist("kinactor_handoff_duration_seconds")
		if c > 0 {
			t.Logf("%s handed off %d shards, mean %.0f ms from request to release", n.WorkerID(), c, 1000*s/float64(c))
		}
	}
}
