package test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// BenchmarkSkewedBalance: the skewed 12-shard stream of
// TestLoadAwareBalancing (2 shards carry half of the load), three real
// nodes with --balance count and then, in the same run and on the same
// stream, three with --balance load (default threshold, moves and
// cool-down; --rebalance-interval 10s, the default). For each: max node
// load / mean once every shard is measured, and for load: the time from
// the third node's start to within 15 % of the mean, the load moves in a
// steady window after that (reported per hour), and the gossip bytes per
// node per second of the load messages.
//
//	go test -run '^$' -bench SkewedBalance -benchtime 1x ./test/
func BenchmarkSkewedBalance(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	bin, env := buildWithServers(b, dir, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	const streamName, nShards = "skewed-balance", 12
	localaws.CreateStreamT(b, kc, streamName, nShards)
	ls, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(streamName)})
	requireNoError(b, err, "listing shards")
	shards := ls.Shards
	slices.SortFunc(shards, func(x, y types.Shard) int { return strings.Compare(aws.ToString(x.ShardId), aws.ToString(y.ShardId)) })
	prod := startSkewProducer(kc, streamName, shards, skewedHotShards(b, shards), 10, hotRecordBytes, coldRecordBytes)
	b.Cleanup(func() { _, _ = prod.stop() })
	const steady = 2 * time.Minute

	for i := 0; i < b.N; i++ {
		for _, mode := range []string{"count", "load"} {
			sub := fmt.Sprintf("%s/%s-%d", dir, mode, i)
			c, err := clusterrun.Start(ctx, clusterrun.Options{
				Bin: bin, Dir: sub, App: "skewed-" + mode + fmt.Sprint(i), Stream: streamName, Nodes: 3,
				Env: []string{
					"AWS_ENDPOINT_URL_KINESIS=" + env.Kinesis.Endpoint,
					"AWS_ENDPOINT_URL_DYNAMODB=" + env.DynamoDB.Endpoint,
					"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local",
				},
				ExtraArgs: []string{"--balance", mode, "--initial-position", "LATEST"},
			})
			requireNoError(b, err, "starting the "+mode+" cluster")
			joined := time.Now()
			waitAllOwned(ctx, b, c, nShards)
			var ratio float64
			var converged time.Duration
			deadline := time.Now().Add(4 * time.Minute)
			for time.Now().Before(deadline) {
				loads, _, measured, err := nodeLoads(ctx, c)
				if err == nil && measured {
					ratio = maxOverMean(loads)
					if mode == "count" || ratio <= 1.15 {
						converged = time.Since(joined)
						break
					}
				}
				poll := time.NewTimer(time.Second) // polling interval
				<-poll.C
			}
			if mode == "count" {
				// Count-based moves nothing for load: let the averages settle.
				settle := time.NewTimer(30 * time.Second)
				<-settle.C
				loads, _, _, err := nodeLoads(ctx, c)
				requireNoError(b, err, "loads")
				ratio = maxOverMean(loads)
				b.ReportMetric(ratio, "count_max/mean")
				b.Logf("count: max node load / mean %.2f: %v", ratio, loads)
				c.Close()
				continue
			}
			movesAt := countMoves(ctx, b, c)
			m0 := gossipLoadBytes(ctx, b, c)
			// An observation window: every 15 s, the loads (logged) and the
			// max/mean, averaged over the window.
			var sumRatio float64
			var samples int
			for end := time.Now().Add(steady); time.Now().Before(end); {
				tick := time.NewTimer(15 * time.Second)
				<-tick.C
				loads, owned, _, err := nodeLoads(ctx, c)
				requireNoError(b, err, "loads")
				sumRatio += maxOverMean(loads)
				samples++
				detail := map[string]string{}
				for _, p := range c.Nodes() {
					st, err := c.Status(ctx, p)
					requireNoError(b, err, "status")
					for _, sh := range st.Shards {
						detail[p.Name] += fmt.Sprintf(" %s=%.3f", strings.TrimPrefix(sh.ShardID, "shardId-0000000000"), sh.Load.Weight)
					}
				}
				b.Logf("steady +%s: max/mean %.3f %v %v", time.Since(end.Add(-steady)).Round(time.Second), maxOverMean(loads), detail, len(owned))
			}
			b.ReportMetric(sumRatio/float64(samples), "load_max/mean_avg")
			moves := countMoves(ctx, b, c) - movesAt
			bytes := gossipLoadBytes(ctx, b, c) - m0
			loads, _, _, err := nodeLoads(ctx, c)
			requireNoError(b, err, "loads")
			b.ReportMetric(maxOverMean(loads), "load_max/mean")
			b.ReportMetric(converged.Seconds(), "converge_s")
			b.ReportMetric(float64(moves)*float64(time.Hour)/float64(steady), "moves/h_steady")
			b.ReportMetric(bytes/3/steady.Seconds(), "load_gossip_B/node/s")
			b.Logf("load: converged (≤ 1.15) %s after the cluster started; then max/mean %.3f, %d load moves in %s, %.0f load gossip bytes per node per second: %v",
				converged.Round(time.Second), maxOverMean(loads), moves, steady, bytes/3/steady.Seconds(), loads)
			c.Close()
		}
	}
}

func gossipLoadBytes(ctx context.Context, b *testing.B, c *clusterrun.Cluster) float64 {
	total := 0.0
	for _, p := range c.Nodes() {
		m, err := c.Metrics(ctx, p)
		requireNoError(b, err, "metrics")
		total += m.Sum("kinactor_gossip_sent_bytes_total", "type", "load")
	}
	return total
}
