package test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/messages"
)

// BenchmarkSteadyStateLeaseWrites measures lease-table writes per
// shard-hour of a settled cluster with the default intervals: 3 nodes,
// 12 shards, records flowing at ~50/s. Writes are counted from the nodes'
// kinactor_lease_writes_total after the cluster has settled (the initial
// takes are excluded). The window is KINACTOR_STEADY_WINDOW (default 5m).
//
//	go test -run '^$' -bench SteadyState -benchtime 1x -timeout 30m ./test/
func BenchmarkSteadyStateLeaseWrites(b *testing.B) {
	window := 5 * time.Minute
	if s := os.Getenv("KINACTOR_STEADY_WINDOW"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatal(err)
		}
		window = d
	}
	env := localaws.StartT(b, localaws.Kinesalite, localaws.Dynalite)
	kc := env.KinesisClient()
	const name, shards = "steady", 12
	localaws.CreateStreamT(b, kc, name, shards)
	p := newProducer(kc, name, 48)

	var nodes []*kinactor.Node
	var seeds []string
	for i := 1; i <= 3; i++ {
		cfg := kinactor.Config{
			StreamName: name, ApplicationName: "steady-app", WorkerID: fmt.Sprintf("steady-%d", i),
			Logger:   slog.New(slog.DiscardHandler),
			Kinesis:  env.KinesisClient(),
			DynamoDB: env.DynamoDBClient(),
			Cluster:  &cluster.Config{BindAddr: "127.0.0.1:0", Join: seeds},
		}
		n, err := kinactor.NewNode(cfg, actors.FuncProcessor(func(context.Context, messages.Batch) error { return nil }))
		if err != nil {
			b.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = n.Stop(ctx)
		}()
		nodes = append(nodes, n)
		seeds = append(seeds, n.GossipAddr())
	}
	writes := func() float64 {
		total := 0.0
		for _, n := range nodes {
			total += scrape(b, n).Sum("kinactor_lease_writes_total")
		}
		return total
	}
	gossipBytes := func() float64 {
		total := 0.0
		for _, n := range nodes {
			total += scrape(b, n).Sum("kinactor_gossip_sent_bytes_total", "type", "hb")
		}
		return total
	}
	stop := make(chan struct{})
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				p.put(b, 10)
			}
		}
	}()
	defer close(stop)
	// settle: every shard owned and processing, then one renewal period
	deadline := time.Now().Add(2 * time.Minute)
	for balanced(nodes, 4) != nil {
		if time.Now().After(deadline) {
			b.Fatalf("cluster did not settle: %v", balanced(nodes, 4))
		}
		<-time.After(100 * time.Millisecond)
	}
	<-time.After(35 * time.Second)
	b.ResetTimer()
	before, bytesBefore, start := writes(), gossipBytes(), time.Now()
	<-time.After(window)
	after, bytesAfter, took := writes(), gossipBytes(), time.Since(start)
	b.StopTimer()
	perShardHour := (after - before) / shards / took.Hours()
	b.ReportMetric(perShardHour, "lease-writes/shard-hour")
	// every shard is owned by one node: bytes per owned shard per second
	b.ReportMetric((bytesAfter-bytesBefore)/shards/took.Seconds(), "progress-gossip-B/shard/s")
	b.ReportMetric(float64(p.produced())/time.Since(start).Seconds(), "records/s")
	b.Logf("%.0f lease writes in %v over %d shards: %.1f per shard-hour", after-before, took.Round(time.Second), shards, perShardHour)
}
