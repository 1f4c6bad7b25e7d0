package test

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/messages"
)

// Three generations of resharding (kinesis-mock): a shard is split, its two
// children are merged, and the grandchild is split again. Once a generation
// is finished its rows are deleted, and ListShards still lists it (for the
// retention period). A finished ancestor must not get a new row: that
// would read it again from TRIM_HORIZON and process every record of it a
// second time. The chaos soak found exactly that (a split shard replayed
// 272 s after its grandchildren were cleaned up).
func TestFinishedAncestorsAreNotReadAgain(t *testing.T) {
	env := localaws.StartT(t, localaws.KinesisMock, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	const name = "lineage"
	localaws.CreateStreamT(t, kc, name, 1)
	p := newProducer(kc, name, 16)
	store := lease.NewDynamoStore(env.DynamoDBClient(), "lineage-app")
	led := newLedger()
	cfg := nodeConfig(t, env, name, "lineage-app", "node-l")
	cfg.ShardSyncInterval = 300 * time.Millisecond
	runNode(t, cfg, func(_ context.Context, b messages.Batch) error {
		led.record(b)
		return nil
	})
	sc := stream.NewClient(kc, name, "")
	ctx := context.Background()

	processAll := func() {
		t.Helper()
		want := p.produced()
		checkFor(t, 60*time.Second, func() error {
			if u := led.unique(); u < want {
				return fmt.Errorf("processed %d of %d", u, want)
			}
			return nil
		})
	}
	noRows := func(ids ...string) error {
		for _, id := range ids {
			l, err := store.Get(ctx, id)
			if errors.Is(err, lease.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("%s has a row: checkpoint %q", id, l.Checkpoint.SequenceNumber)
		}
		return nil
	}
	open := func() []stream.Shard {
		t.Helper()
		all, err := sc.ListShards(ctx)
		requireNoError(t, err, "ListShards")
		var out []stream.Shard
		for _, s := range all {
			if !s.Closed() {
				out = append(out, s)
			}
		}
		return out
	}
	split := func(s stream.Shard) {
		t.Helper()
		lo, _ := new(big.Int).SetString(s.StartingHashKey, 10)
		hi, _ := new(big.Int).SetString(s.EndingHashKey, 10)
		mid := new(big.Int).Rsh(new(big.Int).Add(lo, hi), 1)
		_, err := kc.SplitShard(ctx, &kinesis.SplitShardInput{
			StreamName: aws.String(name), ShardToSplit: aws.String(s.ID), NewStartingHashKey: aws.String(mid.String()),
		})
		requireNoError(t, err, "SplitShard")
		localaws.WaitStreamT(t, kc, name)
	}

	p.put(t, 60)
	processAll()
	root := open()[0]

	// Generation 1: split the root.
	split(root)
	gen1 := open()
	if len(gen1) != 2 {
		t.Fatalf("%d open shards after the split, want 2", len(gen1))
	}
	p.put(t, 60)
	processAll()

	// Generation 2: merge the two children back into one.
	_, err := kc.MergeShards(ctx, &kinesis.MergeShardsInput{
		StreamName: aws.String(name), ShardToMerge: aws.String(gen1[0].ID), AdjacentShardToMerge: aws.String(gen1[1].ID),
	})
	requireNoError(t, err, "MergeShards")
	localaws.WaitStreamT(t, kc, name)
	gen2 := open()
	if len(gen2) != 1 {
		t.Fatalf("%d open shards after the merge, want 1", len(gen2))
	}
	p.put(t, 60)
	processAll()
	// The root and generation 1 are finished and cleaned up.
	checkFor(t, 30*time.Second, func() error { return noRows(root.ID, gen1[0].ID, gen1[1].ID) })

	// Generation 3: split the grandchild. Its children's rows are created
	// by a sync that runs after the cleanup above; the old rule re-created
	// the root's row in that same pass (its direct children had no rows).
	split(gen2[0])
	gen3 := open()
	if len(gen3) != 2 {
		t.Fatalf("%d open shards after the second split, want 2", len(gen3))
	}
	checkFor(t, 30*time.Second, func() error {
		for _, s := range gen3 {
			if _, err := store.Get(ctx, s.ID); err != nil {
				return fmt.Errorf("no row for %s yet: %v", s.ID, err)
			}
		}
		return nil
	})
	if err := noRows(root.ID, gen1[0].ID, gen1[1].ID); err != nil {
		t.Fatalf("a finished ancestor got a new row: %v", err)
	}
	p.put(t, 60)
	processAll()
	led.verify(t, p.produced())
	t.Logf("%d records over three generations of resharding", p.produced())
}
