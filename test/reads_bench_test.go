package test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// BenchmarkLeaseTableRequests counts the lease-table requests of a settled
// cluster with the default intervals, as a user's bill would: 12 shards,
// records flowing at ~50/s, 3 and then 10 real nodes. Requests come from
// the nodes' kinactor_lease_reads_total (each GetItem, each Scan page) and
// kinactor_lease_writes_total, over a window (KINACTOR_READS_WINDOW,
// default 3m) that starts once every shard is owned and 30 s have passed.
//
//	go test -run '^$' -bench LeaseTableRequests -benchtime 1x -timeout 30m ./test/
func BenchmarkLeaseTableRequests(b *testing.B) {
	window := 3 * time.Minute
	if s := os.Getenv("KINACTOR_READS_WINDOW"); s != "" {
		d, err := time.ParseDuration(s)
		requireNoError(b, err, "KINACTOR_READS_WINDOW")
		window = d
	}
	ctx := context.Background()
	dir := b.TempDir()
	bin, env := buildWithServers(b, dir, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	const nShards = 12
	for i := 0; i < b.N; i++ {
		sizes := []int{3, 10}
		if s := os.Getenv("KINACTOR_READS_NODES"); s != "" { // e.g. "10"
			n, err := strconv.Atoi(s)
			requireNoError(b, err, "KINACTOR_READS_NODES")
			sizes = []int{n}
		}
		for _, nodes := range sizes {
			name := fmt.Sprintf("reads-%d-%d", nodes, i)
			localaws.CreateStreamT(b, kc, name, nShards)
			prod := clusterrun.StartProducer(kc, name, 48, 50)
			c, err := clusterrun.Start(ctx, clusterrun.Options{
				Bin: bin, Dir: fmt.Sprintf("%s/%s", dir, name), App: name, Stream: name, Nodes: nodes,
				Env: []string{
					"AWS_ENDPOINT_URL_KINESIS=" + env.Kinesis.Endpoint,
					"AWS_ENDPOINT_URL_DYNAMODB=" + env.DynamoDB.Endpoint,
					"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local",
				},
			})
			requireNoError(b, err, "starting the cluster")
			_, err = c.WaitBalanced(ctx, nShards, 2*time.Minute)
			requireNoError(b, err, "balanced")
			settle := time.NewTimer(30 * time.Second) // let the joins' reads pass
			<-settle.C
			ops := []string{"take", "renew", "checkpoint", "release", "create", "delete"}
			byOp := func() map[string]float64 {
				out := map[string]float64{}
				for _, p := range c.Nodes() {
					m, err := c.Metrics(ctx, p)
					requireNoError(b, err, "metrics")
					for _, op := range ops {
						out[op] += m.Sum("kinactor_lease_writes_total", "op", op)
					}
				}
				return out
			}
			count := func() (scans, gets, items, writes float64) {
				for _, p := range c.Nodes() {
					m, err := c.Metrics(ctx, p)
					requireNoError(b, err, "metrics")
					scans += m.Sum("kinactor_lease_reads_total", "op", "scan")
					gets += m.Sum("kinactor_lease_reads_total", "op", "get")
					items += m.Sum("kinactor_lease_read_items_total")
					writes += m.Sum("kinactor_lease_writes_total")
				}
				return
			}
			s0, g0, i0, w0 := count()
			ops0 := byOp()
			win := time.NewTimer(window) // the observation window
			<-win.C
			s1, g1, i1, w1 := count()
			ops1 := byOp()
			var parts []string
			for _, op := range ops {
				parts = append(parts, fmt.Sprintf("%s %.0f", op, ops1[op]-ops0[op]))
			}
			b.Logf("%d nodes: writes by kind: %s", nodes, strings.Join(parts, ", "))
			if os.Getenv("KINACTOR_READS_MOVES") != "" {
				for _, p := range c.Nodes() {
					st, err := c.Status(ctx, p)
					requireNoError(b, err, "status")
					for _, mv := range st.Moves {
						b.Logf("move on %s: %+v", p.Name, mv)
					}
				}
			}
			perShardHour := func(v float64) float64 { return v * float64(time.Hour) / float64(window) / nShards }
			b.ReportMetric(perShardHour(s1-s0+g1-g0), fmt.Sprintf("reads/shard-h_%dnodes", nodes))
			b.ReportMetric(perShardHour(w1-w0), fmt.Sprintf("writes/shard-h_%dnodes", nodes))
			b.Logf("%d nodes: %.0f scan pages, %.0f gets (%.0f rows read), %.0f writes in %s: %.1f reads and %.1f writes per shard-hour; a scan every %.1f s in the cluster",
				nodes, s1-s0, g1-g0, i1-i0, w1-w0, window, perShardHour(s1-s0+g1-g0), perShardHour(w1-w0), window.Seconds()/max(s1-s0, 1))
			c.Close()
			_, _ = prod.Stop()
		}
	}
}
