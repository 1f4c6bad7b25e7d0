package test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	kledger "github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// TestProcessFailover runs three real `kinactor node` processes on an
// 8-shard stream with a producer writing ~50 records/s, SIGKILLs one, and
// checks that the survivors take its shards, that nothing is lost and that
// per-key order holds; it logs how long each of the victim's shards was
// idle.
func TestProcessFailover(t *testing.T) {
	began := time.Now()
	ctx := context.Background()
	dir := t.TempDir()
	bin, env := buildWithServers(t, dir, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	const streamName, app, shards = "process-failover", "process-failover", 8
	localaws.CreateStreamT(t, kc, streamName, shards)

	c, err := clusterrun.Start(ctx, clusterrun.Options{
		Bin: bin, Dir: dir, App: app, Stream: streamName, Nodes: 1,
		Env: []string{
			"AWS_ENDPOINT_URL_KINESIS=" + env.Kinesis.Endpoint,
			"AWS_ENDPOINT_URL_DYNAMODB=" + env.DynamoDB.Endpoint,
			"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local",
		},
	})
	requireNoError(t, err, "starting the cluster")
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, p := range c.All() {
				t.Logf("log of %s (tail):\n%s", p.Name, p.LogTail(3000))
			}
		}
	})
	// The first node alone creates the lease rows; then two more join.
	_, err = c.WaitBalanced(ctx, shards, 30*time.Second)
	requireNoError(t, err, "first node")
	for i := 0; i < 2; i++ {
		_, err := c.AddNode(ctx)
		requireNoError(t, err, "adding a node")
	}
	prod := clusterrun.StartProducer(kc, streamName, 64, 50)
	t.Cleanup(func() { _, _ = prod.Stop() })
	// Every node owns shards and every shard is owned once.
	owners, err := c.WaitBalanced(ctx, shards, 30*time.Second)
	requireNoError(t, err, "3 nodes")
	t.Logf("cluster of 3 balanced after %s: %v", time.Since(began).Round(time.Millisecond), owners)
	nodes := c.Nodes()

	victim := nodes[1]
	st, err := c.Status(ctx, victim)
	requireNoError(t, err, "victim status")
	var victimShards []string
	for _, s := range st.Shards {
		victimShards = append(victimShards, s.ShardID)
	}
	// The victim processes records before it dies; the producer runs ~3s.
	waitProduced := func(n int) {
		t.Helper()
		checkFor(t, 30*time.Second, func() error {
			if _, total := prod.Produced(); total < n {
				return fmt.Errorf("%d of %d records produced", total, n)
			}
			return nil
		})
	}
	_, before := prod.Produced()
	waitProduced(before + 150)
	checkFor(t, 30*time.Second, func() error {
		es, err := kledger.ReadDir(c.LedgerDir())
		if err != nil {
			return err
		}
		for _, e := range es {
			if e.Node == victim.Name {
				return nil
			}
		}
		return fmt.Errorf("no ledger line of %s yet", victim.Name)
	})
	requireNoError(t, c.Kill(victim), "kill")
	killedAt := time.Now()
	t.Logf("killed %s (shards %v) at +%s", victim.Name, victimShards, time.Since(began).Round(time.Millisecond))

	// The survivors own every shard and process the victim's shards again.
	checkFor(t, 30*time.Second, func() error {
		owners, err := c.Owners(ctx)
		if err != nil {
			return err
		}
		for _, s := range victimShards {
			if len(owners[s]) == 0 {
				return fmt.Errorf("shard %s unowned: %v", s, owners)
			}
		}
		es, err := kledger.ReadDir(c.LedgerDir())
		if err != nil {
			return err
		}
		again := map[string]bool{}
		for _, e := range es {
			if e.Node != victim.Name && e.TS > killedAt.UnixMilli() {
				again[e.Shard] = true
			}
		}
		for _, s := range victimShards {
			if !again[s] {
				return fmt.Errorf("no record of shard %s processed since the kill", s)
			}
		}
		return nil
	})
	t.Logf("victim's shards flowing again %s after the kill", time.Since(killedAt).Round(time.Millisecond))

	_, before = prod.Produced()
	waitProduced(before + 150)
	produced, err := prod.Stop()
	requireNoError(t, err, "producer")
	var rep clusterrun.Report
	checkFor(t, 30*time.Second, func() error {
		es, err := kledger.ReadDir(c.LedgerDir())
		if err != nil {
			return err
		}
		rep = clusterrun.Analyze(es, produced, c.Events())
		if rep.Lost > 0 {
			return fmt.Errorf("%d of %d records not in any ledger yet, e.g. %v", rep.Lost, rep.Produced, rep.LostSamples)
		}
		return nil
	})
	t.Logf("report:\n%s", rep)
	sort.Slice(rep.Moves, func(i, j int) bool { return rep.Moves[i].Shard < rep.Moves[j].Shard })
	for _, m := range rep.Moves {
		t.Logf("after the %s of %s: %s idle %s, then %s", m.Kind, m.From, m.Shard, m.Idle, m.To)
	}
	if rep.OrderViolations > 0 {
		t.Errorf("per-key order violated: %v", rep.OrderSamples)
	}
	if rep.Unexpected > 0 || rep.Unparsed > 0 {
		t.Errorf("%d unexpected records, %d unparsable ledger lines", rep.Unexpected, rep.Unparsed)
	}
	if rep.Produced < 300 {
		t.Errorf("only %d records produced", rep.Produced)
	}

	// The survivors leave gracefully.
	for _, p := range c.Nodes() {
		requireNoError(t, c.Term(p), "graceful stop")
	}
	t.Logf("done after %s", time.Since(began).Round(time.Millisecond))
}
