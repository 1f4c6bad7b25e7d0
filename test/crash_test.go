package test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/messages"
)

// errCrashed is what a crashed node's AWS calls get: it is gone.
var errCrashed = errors.New("test: this node crashed")

// crashSwitch is a node's power: once off, its DynamoDB and Kinesis calls
// fail at once and its processor neither records nor acknowledges.
type crashSwitch struct{ off atomic.Bool }

// gate runs call unless the switch is off (then the node is gone).
func gate[T any](sw *crashSwitch, call func() (T, error)) (T, error) {
	if sw.off.Load() {
		var zero T
		return zero, errCrashed
	}
	return call()
}

type crashDynamo struct {
	kinactor.DynamoDBAPI
	sw *crashSwitch
}

func (c crashDynamo) GetItem(ctx context.Context, in *dynamodb.GetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	return gate(c.sw, func() (*dynamodb.GetItemOutput, error) { return c.DynamoDBAPI.GetItem(ctx, in, o...) })
}

func (c crashDynamo) PutItem(ctx context.Context, in *dynamodb.PutItemInput, o ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	return gate(c.sw, func() (*dynamodb.PutItemOutput, error) { return c.DynamoDBAPI.PutItem(ctx, in, o...) })
}

func (c crashDynamo) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, o ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	return gate(c.sw, func() (*dynamodb.UpdateItemOutput, error) { return c.DynamoDBAPI.UpdateItem(ctx, in, o...) })
}

func (c crashDynamo) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, o ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	return gate(c.sw, func() (*dynamodb.DeleteItemOutput, error) { return c.DynamoDBAPI.DeleteItem(ctx, in, o...) })
}

func (c crashDynamo) Scan(ctx context.Context, in *dynamodb.ScanInput, o ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	return gate(c.sw, func() (*dynamodb.ScanOutput, error) { return c.DynamoDBAPI.Scan(ctx, in, o...) })
}

type crashKinesis struct {
	kinactor.KinesisAPI
	sw *crashSwitch
}

func (c crashKinesis) ListShards(ctx context.Context, in *kinesis.ListShardsInput, o ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	return gate(c.sw, func() (*kinesis.ListShardsOutput, error) { return c.KinesisAPI.ListShards(ctx, in, o...) })
}

func (c crashKinesis) GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, o ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	return gate(c.sw, func() (*kinesis.GetShardIteratorOutput, error) { return c.KinesisAPI.GetShardIterator(ctx, in, o...) })
}

func (c crashKinesis) GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, o ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	return gate(c.sw, func() (*kinesis.GetRecordsOutput, error) { return c.KinesisAPI.GetRecords(ctx, in, o...) })
}

// delivery is one record handed to a processor.
type delivery struct {
	node, shard, rec string
	at               time.Time
}

type deliveryLog struct {
	mu sync.Mutex
	ds []delivery
}

func (l *deliveryLog) add(node string, b messages.Batch) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range b.Records {
		l.ds = append(l.ds, delivery{node: node, shard: b.ShardID, rec: r.SequenceNumber + "/" + strconv.FormatInt(r.SubSequenceNumber, 10), at: now})
	}
}

func (l *deliveryLog) snapshot() []delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]delivery(nil), l.ds...)
}

// A node that dies without releasing anything (its DynamoDB, Kinesis and
// gossip go silent at once and its processor stops: the kill path, in
// process) costs only what it had not yet told its successors. The
// checkpoints in the table are as old as the run (CheckpointInterval 30 s),
// yet the new owners resume from the acknowledged progress the victim
// gossiped every 250 ms: every record delivered twice was first delivered
// by the victim in its last second (the target is the last ~0.5 s plus the
// batch in flight; the test allows twice that for a loaded 2-core
// machine), and nothing is lost.
func TestKilledNodesShardsResumeFromGossipedProgress(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	const name, shards = "crash-resume", 6
	localaws.CreateStreamT(t, kc, name, shards)
	p := newProducer(kc, name, 24)
	log := &deliveryLog{}

	names := []string{"ca", "cb", "cc"}
	trs, addrs := mockTransports(t, names...)
	switches := map[string]*crashSwitch{}
	nodes := map[string]*kinactor.Node{}
	var all []*kinactor.Node
	for _, n := range names {
		sw := &crashSwitch{}
		switches[n] = sw
		cfg := nodeConfig(t, env, name, "crash-resume-app", n)
		// The defaults: a renewal (which carries the checkpoint) and a
		// checkpoint every 30 s, so the table lags by up to 30 s.
		cfg.CheckpointInterval, cfg.LeaseRenewInterval = 30*time.Second, 30*time.Second
		cfg.ShutdownTimeout = 2 * time.Second // the victim's Stop at the end cannot release anything
		cfg.FollowerSyncInterval = 2 * time.Second
		cfg.DynamoDB = crashDynamo{DynamoDBAPI: env.DynamoDBClient(), sw: sw}
		cfg.Kinesis = crashKinesis{KinesisAPI: env.KinesisClient(), sw: sw}
		cfg.Cluster = &cluster.Config{Transport: trs[n], Join: []string{addrs["ca"]}, RejoinInterval: time.Second,
			ProbeInterval: 500 * time.Millisecond, ProbeTimeout: 400 * time.Millisecond, SuspicionMult: 4}
		node := n
		nodes[n] = runNode(t, cfg, func(_ context.Context, b messages.Batch) error {
			if sw.off.Load() {
				return errCrashed // a dead process delivers nothing and acknowledges nothing
			}
			log.add(node, b)
			return nil
		})
		all = append(all, nodes[n])
	}
	checkFor(t, 60*time.Second, func() error { return balanced(all, shards/len(names)) })
	stop := flow(t, p)
	defer stop()

	// Records flow for a few seconds: the table's checkpoints fall behind
	// what the processors acknowledged (and gossiped).
	victim := "cb"
	st, err := nodes[victim].Status(context.Background())
	requireNoError(t, err, "victim status")
	victimShards := map[string]bool{}
	for _, s := range st.Shards {
		victimShards[s.ShardID] = true
	}
	<-time.After(5 * time.Second) // the length of the run the table does not know about, not a wait for a condition
	checkFor(t, 30*time.Second, func() error {
		seen := map[string]bool{}
		for _, d := range log.snapshot() {
			if d.node == victim {
				seen[d.shard] = true
			}
		}
		if len(seen) < len(victimShards) {
			return fmt.Errorf("the victim processed %d of its %d shards", len(seen), len(victimShards))
		}
		return nil
	})

	// The crash: everything of the victim goes silent at the same moment.
	switches[victim].off.Store(true)
	crashed := time.Now()
	for _, n := range names {
		if n == victim {
			trs[n].Block(addrs["ca"], addrs["cc"])
		} else {
			trs[n].Block(addrs[victim])
		}
	}
	survivors := []*kinactor.Node{nodes["ca"], nodes["cc"]}
	checkFor(t, 60*time.Second, func() error { return balanced(survivors, shards/2) })
	t.Logf("the survivors run all %d shards %v after the crash", shards, time.Since(crashed).Round(time.Millisecond))
	<-time.After(time.Second) // records keep flowing on the moved shards
	stop()

	// Every record produced is processed.
	total := p.produced()
	var ds []delivery
	checkFor(t, 60*time.Second, func() error {
		ds = log.snapshot()
		seen := map[string]bool{}
		for _, d := range ds {
			seen[d.shard+"/"+d.rec] = true
		}
		if len(seen) < total {
			return fmt.Errorf("processed %d distinct records of %d", len(seen), total)
		}
		return nil
	})

	first := map[string]delivery{}
	dups := map[string]int{}
	var oldest time.Duration
	for _, d := range ds {
		k := d.shard + "/" + d.rec
		f, ok := first[k]
		if !ok {
			first[k] = d
			continue
		}
		dups[d.shard]++
		if f.node != victim || !victimShards[d.shard] || f.at.After(crashed) {
			t.Errorf("record %s delivered again by %s: first delivered by %s %v before the crash (not the victim's last batches)", k, d.node, f.node, crashed.Sub(f.at))
			continue
		}
		oldest = max(oldest, crashed.Sub(f.at))
	}
	perShard := map[string]int{}
	for _, d := range ds {
		if d.node == victim && victimShards[d.shard] {
			perShard[d.shard]++
		}
	}
	var moved []string
	for s := range victimShards {
		moved = append(moved, s)
	}
	sort.Strings(moved)
	for _, s := range moved {
		t.Logf("shard %s: %d records delivered by the victim, %d delivered again after the crash", s, perShard[s], dups[s])
	}
	t.Logf("%d records produced; the oldest record delivered again was first delivered %v before the crash", total, oldest.Round(time.Millisecond))
	if oldest > time.Second {
		t.Errorf("a record first delivered %v before the crash was delivered again: the new owner resumed from further back than the gossiped progress", oldest.Round(time.Millisecond))
	}
}
