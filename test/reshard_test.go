package test

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/shardfsm"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/messages"
)

// Split one shard and merge two others while records flow (kinesis-mock):
// child shards start only after their parents (both, for a merge) are
// checkpointed at SHARD_END, every record is processed exactly once, and
// every partition key's records are processed in the order written.
func TestReshardWhileRecordsFlow(t *testing.T) {
	env := localaws.StartT(t, localaws.KinesisMock, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	const name = "reshard"
	localaws.CreateStreamT(t, kc, name, 3)
	p := newProducer(kc, name, 24)
	p.put(t, 200)

	store := lease.NewDynamoStore(env.DynamoDBClient(), "reshard-app")
	led := newLedger()
	var mu sync.Mutex
	started := map[string]bool{}
	var violations []string
	var gate chan struct{} // while set, the original shards wait on it
	original := map[string]bool{}
	fn := func(ctx context.Context, b messages.Batch) error {
		mu.Lock()
		g := gate
		hold := original[b.ShardID]
		mu.Unlock()
		if g != nil && hold {
			select {
			case <-g:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		mu.Lock()
		first := !started[b.ShardID]
		started[b.ShardID] = true
		mu.Unlock()
		if first {
			// The first batch of a shard: its parents must be finished.
			row, err := store.Get(ctx, b.ShardID)
			if err != nil {
				return err
			}
			for _, parent := range row.ParentShardIDs {
				pr, err := store.Get(ctx, parent)
				if errors.Is(err, lease.ErrNotFound) {
					continue // cleaned up: it was finished and its children had moved on
				}
				if err != nil {
					return err
				}
				if !pr.Checkpoint.IsShardEnd() {
					mu.Lock()
					violations = append(violations, fmt.Sprintf("%s started while parent %s was at %q", b.ShardID, parent, pr.Checkpoint.SequenceNumber))
					mu.Unlock()
				}
			}
		}
		led.record(b)
		return nil
	}
	cfg := nodeConfig(t, env, name, "reshard-app", "node-r")
	cfg.MaxRecords = 50
	cfg.ShardSyncInterval = 500 * time.Millisecond
	node := runNode(t, cfg, fn)

	// records keep flowing in the background while we reshard
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				p.put(t, 10)
			}
		}
	}()
	checkFor(t, 60*time.Second, func() error {
		if u := led.unique(); u < 200 {
			return fmt.Errorf("processed %d of the first 200", u)
		}
		return nil
	})

	sc := stream.NewClient(kc, name, "")
	shards, err := sc.ListShards(context.Background())
	requireNoError(t, err, "ListShards")
	if len(shards) != 3 {
		t.Fatalf("%d shards", len(shards))
	}
	// Hold the parents back: their last records stay unprocessed, so they
	// cannot reach SHARD_END until the gate opens.
	mu.Lock()
	gate = make(chan struct{})
	for _, s := range shards {
		original[s.ID] = true
	}
	mu.Unlock()
	// split shard 0 at the middle of its range
	lo, _ := new(big.Int).SetString(shards[0].StartingHashKey, 10)
	hi, _ := new(big.Int).SetString(shards[0].EndingHashKey, 10)
	mid := new(big.Int).Rsh(new(big.Int).Add(lo, hi), 1)
	_, err = kc.SplitShard(context.Background(), &kinesis.SplitShardInput{
		StreamName: aws.String(name), ShardToSplit: aws.String(shards[0].ID), NewStartingHashKey: aws.String(mid.String()),
	})
	requireNoError(t, err, "SplitShard")
	localaws.WaitStreamT(t, kc, name)
	p.put(t, 100)
	// merge shards 1 and 2 (adjacent)
	_, err = kc.MergeShards(context.Background(), &kinesis.MergeShardsInput{
		StreamName: aws.String(name), ShardToMerge: aws.String(shards[1].ID), AdjacentShardToMerge: aws.String(shards[2].ID),
	})
	requireNoError(t, err, "MergeShards")
	localaws.WaitStreamT(t, kc, name)
	p.put(t, 100)
	close(stop)
	wg.Wait()
	total := p.produced()

	// The children are owned and waiting on their parents, not processing.
	checkFor(t, 30*time.Second, func() error {
		st, err := node.Status(context.Background())
		if err != nil {
			return err
		}
		waiting := 0
		for _, s := range st.Shards {
			if !original[s.ShardID] {
				if s.State != shardfsm.WaitingOnParentShards.String() {
					return fmt.Errorf("child %s is %s while its parents are held back", s.ShardID, s.State)
				}
				waiting++
			}
		}
		if waiting != 3 {
			return fmt.Errorf("%d children waiting, want 3", waiting)
		}
		return nil
	})
	mu.Lock()
	close(gate)
	mu.Unlock()

	checkFor(t, 90*time.Second, func() error {
		if u := led.unique(); u < total {
			return fmt.Errorf("processed %d of %d", u, total)
		}
		return nil
	})
	led.verify(t, total)

	after, err := sc.ListShards(context.Background())
	requireNoError(t, err, "ListShards")
	if len(after) != 6 {
		t.Fatalf("%d shards after split and merge, want 6", len(after))
	}
	// Parents finish at SHARD_END with their children recorded, and their
	// rows are cleaned up once every child has checkpointed past its start
	// (the children have: all records were processed). They are not
	// re-created although ListShards still lists them.
	checkFor(t, 30*time.Second, func() error {
		for _, s := range shards {
			l, err := store.Get(context.Background(), s.ID)
			if errors.Is(err, lease.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("parent %s still has a row: checkpoint %q, children %v", s.ID, l.Checkpoint.SequenceNumber, l.ChildShardIDs)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for _, v := range violations {
		t.Error(v)
	}
	children := 0
	for _, s := range after {
		if len(s.Parents()) > 0 && started[s.ID] {
			children++
		}
	}
	if children != 3 {
		t.Errorf("%d child shards processed records, want 3 (two from the split, one from the merge)", children)
	}
	t.Logf("%d records across a split and a merge", total)
}
