package test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	kledger "github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/ownership"
	"github.com/kinactor/kinactor/internal/putrecords"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// skewProducer writes, every 100 ms, the same number of records to every
// shard of a stream, each shard's records with keys of its own (pinned to
// it by ExplicitHashKey); the records of the hot shards carry hotBytes of
// payload, the others coldBytes. Data is {"pk":..,"n":..,"pad":..}, so the
// cluster's ledgers can be analyzed like any other run.
type skewProducer struct {
	mu       sync.Mutex
	produced map[string]int
	err      error
	cancel   context.CancelFunc
	done     chan struct{}
}

func startSkewProducer(kc *kinesis.Client, stream string, shards []types.Shard, hot map[string]bool, perShardPerSec, hotBytes, coldBytes int) *skewProducer {
	ctx, cancel := context.WithCancel(context.Background())
	p := &skewProducer{produced: map[string]int{}, cancel: cancel, done: make(chan struct{})}
	w := putrecords.Writer{Client: kc, Stream: stream, MaxAttempts: 50, RetryCalls: true, CallTimeout: 10 * time.Second}
	type key struct{ pk, hash, pad string }
	var keys []key
	for _, s := range shards {
		lo, _ := new(big.Int).SetString(aws.ToString(s.HashKeyRange.StartingHashKey), 10)
		hi, _ := new(big.Int).SetString(aws.ToString(s.HashKeyRange.EndingHashKey), 10)
		mid := new(big.Int).Rsh(new(big.Int).Add(lo, hi), 1)
		size := coldBytes
		if hot[aws.ToString(s.ShardId)] {
			size = hotBytes
		}
		for k := 0; k < 2; k++ {
			keys = append(keys, key{pk: fmt.Sprintf("%s-k%d", aws.ToString(s.ShardId), k), hash: mid.String(), pad: strings.Repeat("x", size)})
		}
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		began, sent := time.Now(), 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			due := int(time.Since(began).Seconds() * float64(perShardPerSec) / 2) // rounds of one record per key
			for ; sent < due; sent++ {
				var entries []types.PutRecordsRequestEntry
				p.mu.Lock()
				for _, k := range keys {
					p.produced[k.pk]++
					b, _ := json.Marshal(map[string]any{"pk": k.pk, "n": p.produced[k.pk], "pad": k.pad})
					entries = append(entries, types.PutRecordsRequestEntry{Data: b, PartitionKey: aws.String(k.pk), ExplicitHashKey: aws.String(k.hash)})
				}
				p.mu.Unlock()
				if _, err := w.Put(context.Background(), entries); err != nil {
					p.mu.Lock()
					p.err = err
					p.mu.Unlock()
					return
				}
			}
		}
	}()
	return p
}

func (p *skewProducer) stop() (map[string]int, error) {
	p.cancel()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return copyCounts(p.produced), p.err
}

func copyCounts(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// The skewed stream: every shard gets 10 records/s; the two hot shards'
// records are 13.6 KB, the others' 1 KB, so that with the processor's busy
// fraction (about 0.01 per shard with the ledger) each hot shard weighs
// about 5 cold ones: together they carry about half of the load (and 73 %
// of the bytes).
const hotRecordBytes, coldRecordBytes = 13600, 1000

// skewedHotShards picks as hot the two shards that the count-based
// assignment puts on one node of n1, n2, n3: without load-awareness that
// node would carry about 1.8 times the mean.
func skewedHotShards(t testing.TB, shards []types.Shard) map[string]bool {
	var ids []string
	for _, s := range shards {
		ids = append(ids, aws.ToString(s.ShardId))
	}
	a := ownership.Assign(ids, []ownership.Candidate{{Name: "n1", Weight: 1}, {Name: "n2", Weight: 1}, {Name: "n3", Weight: 1}})
	byNode := map[string][]string{}
	for _, id := range ids {
		byNode[a[id]] = append(byNode[a[id]], id)
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		if len(byNode[n]) >= 2 {
			return map[string]bool{byNode[n][0]: true, byNode[n][1]: true}
		}
	}
	t.Fatalf("no node gets two shards of %d from Assign: %v", len(ids), byNode)
	return nil
}

// nodeLoads sums each node's measured shard loads from /status; ok is false
// while some owned shard is not measured yet.
func nodeLoads(ctx context.Context, c *clusterrun.Cluster) (loads map[string]float64, owned map[string][]string, ok bool, err error) {
	loads, owned, ok = map[string]float64{}, map[string][]string{}, true
	for _, p := range c.Nodes() {
		st, err := c.Status(ctx, p)
		if err != nil {
			return nil, nil, false, err
		}
		loads[p.Name] += 0
		for _, s := range st.Shards {
			owned[p.Name] = append(owned[p.Name], s.ShardID)
			if !s.Load.Measured {
				ok = false
			}
			loads[p.Name] += s.Load.Weight
		}
	}
	return loads, owned, ok, nil
}

func maxOverMean(loads map[string]float64) float64 {
	sum, hi := 0.0, 0.0
	for _, l := range loads {
		sum += l
		hi = math.Max(hi, l)
	}
	if sum == 0 {
		return 0
	}
	return hi / (sum / float64(len(loads)))
}

// TestLoadAwareBalancing runs three real nodes with --balance load on a
// 12-shard stream where 2 shards carry half of the bytes. After
// convergence every node's measured load is within 15 % of the mean, the
// moves were graceful (no duplicate in the ledgers, nothing lost) and,
// once converged, nothing moves for a while.
func TestLoadAwareBalancing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bin, env := buildWithServers(t, dir, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	const streamName, app, nShards = "load-skew", "load-skew", 12
	localaws.CreateStreamT(t, kc, streamName, nShards)
	ls, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(streamName)})
	requireNoError(t, err, "listing shards")
	shards := ls.Shards
	slices.SortFunc(shards, func(a, b types.Shard) int { return strings.Compare(aws.ToString(a.ShardId), aws.ToString(b.ShardId)) })
	hot := skewedHotShards(t, shards)
	prod := startSkewProducer(kc, streamName, shards, hot, 10, hotRecordBytes, coldRecordBytes)
	t.Cleanup(func() { _, _ = prod.stop() })

	c, err := clusterrun.Start(ctx, clusterrun.Options{
		Bin: bin, Dir: dir, App: app, Stream: streamName, Nodes: 3,
		Env: []string{
			"AWS_ENDPOINT_URL_KINESIS=" + env.Kinesis.Endpoint,
			"AWS_ENDPOINT_URL_DYNAMODB=" + env.DynamoDB.Endpoint,
			"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local",
		},
		ExtraArgs: []string{"--balance", "load", "--rebalance-interval", "5s", "--load-cooldown", "60s"},
	})
	requireNoError(t, err, "starting the cluster")
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, p := range c.All() {
				t.Logf("log of %s (tail):\n%s", p.Name, p.LogTail(4000))
			}
		}
	})
	waitAllOwned(ctx, t, c, nShards)

	began := time.Now()
	var last map[string]float64
	var lastOwned map[string][]string
	checkFor(t, 180*time.Second, func() error {
		loads, owned, measured, err := nodeLoads(ctx, c)
		if err != nil {
			return err
		}
		last, lastOwned = loads, owned
		if !measured {
			return fmt.Errorf("not every shard measured yet: %v", loads)
		}
		if r := maxOverMean(loads); r > 1.15 {
			return fmt.Errorf("max node load / mean %.2f (loads %v, shards %v)", r, loads, owned)
		}
		for name, l := range loads {
			if mean := sumOf(loads) / float64(len(loads)); l < 0.85*mean {
				return fmt.Errorf("node %s at %.2f of the mean (loads %v)", name, l/mean, loads)
			}
		}
		return nil
	})
	t.Logf("converged after %s: max/mean %.3f, loads %v, shards %v", time.Since(began).Round(time.Second), maxOverMean(last), last, lastOwned)

	// Steady: no move in two rebalance intervals and a bit.
	movesBefore := countMoves(ctx, t, c)
	// An observation window, not a wait for a condition: two rebalance
	// intervals and a bit in which nothing may move.
	window := time.NewTimer(12 * time.Second)
	<-window.C
	if after := countMoves(ctx, t, c); after != movesBefore {
		t.Errorf("%d moves after convergence (moves %d → %d)", after-movesBefore, movesBefore, after)
	}

	produced, err := prod.stop()
	requireNoError(t, err, "producer")
	total := 0
	for _, n := range produced {
		total += n
	}
	var rep clusterrun.Report
	checkFor(t, 60*time.Second, func() error {
		es, err := kledger.ReadDir(c.LedgerDir())
		if err != nil {
			return err
		}
		rep = clusterrun.Analyze(es, produced, c.Events())
		if rep.Lost > 0 {
			return fmt.Errorf("%d of %d records not processed yet (e.g. %v)", rep.Lost, total, rep.LostSamples)
		}
		return nil
	})
	t.Logf("%d records, %d duplicates, %d order violations, %d moves in all", total, rep.Duplicates, rep.OrderViolations, countMoves(ctx, t, c))
	if rep.Duplicates != 0 || rep.OrderViolations != 0 || rep.Unexpected != 0 {
		t.Errorf("moves for load cost %d duplicates, %d order violations, %d unexpected records (want 0)", rep.Duplicates, rep.OrderViolations, rep.Unexpected)
	}
}

// waitAllOwned waits until every one of n shards is owned by exactly one
// node (with --balance load the counts need not be even).
func waitAllOwned(ctx context.Context, t testing.TB, c *clusterrun.Cluster, n int) {
	t.Helper()
	checkFor(t, 60*time.Second, func() error {
		owners, err := c.Owners(ctx)
		if err != nil {
			return err
		}
		if len(owners) != n {
			return fmt.Errorf("%d of %d shards owned: %v", len(owners), n, owners)
		}
		for s, o := range owners {
			if len(o) != 1 {
				return fmt.Errorf("shard %s owned by %v", s, o)
			}
		}
		return nil
	})
}

func sumOf(m map[string]float64) float64 {
	s := 0.0
	for _, v := range m {
		s += v
	}
	return s
}

// countMoves counts the handoffs for load the nodes report.
func countMoves(ctx context.Context, t testing.TB, c *clusterrun.Cluster) int {
	t.Helper()
	n := 0
	for _, p := range c.Nodes() {
		st, err := c.Status(ctx, p)
		requireNoError(t, err, "status")
		for _, mv := range st.Moves {
			if mv.Kind == "handoff" && mv.Reason == "load" {
				n++
			}
		}
	}
	return n
}
