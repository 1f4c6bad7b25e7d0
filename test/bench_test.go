package test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/messages"
)

// BenchmarkThroughput compares, on one kinesalite server, a bare SDK
// GetRecords loop with a kinactor node (no-op processor, checkpoints on)
// reading the same pre-filled shards from TRIM_HORIZON. One op reads every
// record once, the node's start (table check, shard listing, lease takes,
// iterators) included; records/s is the figure to compare. Records per
// shard: KINACTOR_BENCH_RECORDS (default 20000).
//
//	go test -run '^$' -bench Throughput -benchtime 3x ./test/
func BenchmarkThroughput(b *testing.B) {
	perShard := 20000
	if v := os.Getenv("KINACTOR_BENCH_RECORDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("KINACTOR_BENCH_RECORDS=%q: want a positive count", v)
		}
		perShard = n
	}
	env := localaws.StartT(b, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	for _, shards := range []int{1, 4} {
		name := fmt.Sprintf("bench-%d", shards)
		localaws.CreateStreamT(b, kc, name, int32(shards))
		fill(b, kc, name, perShard*shards)
		total := perShard * shards

		b.Run(fmt.Sprintf("shards=%d/bare-sdk-loop", shards), func(b *testing.B) {
			sc := stream.NewClient(kc, name, "")
			all, err := sc.ListShards(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				done := make(chan int, len(all))
				for _, s := range all {
					go func(id string) { done <- bareRead(b, kc, name, id) }(s.ID)
				}
				got := 0
				for range all {
					got += <-done
				}
				if got != total {
					b.Fatalf("bare loop read %d of %d", got, total)
				}
			}
			b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "records/s")
		})

		b.Run(fmt.Sprintf("shards=%d/kinactor-node", shards), func(b *testing.B) {
			run := 0
			for b.Loop() {
				run++
				var n atomic.Int64
				var once sync.Once
				all := make(chan struct{})
				cfg := kinactor.Config{
					StreamName:           name,
					ApplicationName:      fmt.Sprintf("bench-%d-%d-%d", shards, run, time.Now().UnixNano()),
					IdleTimeBetweenReads: 200 * time.Millisecond,
					CheckpointInterval:   time.Second,
					Logger:               slog.New(slog.DiscardHandler),
					Kinesis:              env.KinesisClient(),
					DynamoDB:             env.DynamoDBClient(),
				}
				node, err := kinactor.NewNode(cfg, actors.FuncProcessor(func(_ context.Context, batch messages.Batch) error {
					if n.Add(int64(len(batch.Records))) >= int64(total) {
						once.Do(func() { close(all) })
					}
					return nil
				}))
				if err != nil {
					b.Fatal(err)
				}
				if err := node.Start(context.Background()); err != nil {
					b.Fatal(err)
				}
				select {
				case <-all:
				case <-time.After(5 * time.Minute):
					b.Fatalf("node read %d of %d in 5 minutes", n.Load(), total)
				}
				b.StopTimer()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := node.Stop(ctx); err != nil {
					b.Fatal(err)
				}
				cancel()
				b.StartTimer()
			}
			b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// bareRead reads a shard from TRIM_HORIZON until a batch comes back empty
// and caught up (MillisBehindLatest 0), as a plain SDK loop would.
func bareRead(b *testing.B, kc *kinesis.Client, name, shard string) int {
	ctx := context.Background()
	it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
		StreamName: aws.String(name), ShardId: aws.String(shard), ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon,
	})
	if err != nil {
		b.Error(err)
		return 0
	}
	iter, n := it.ShardIterator, 0
	for {
		out, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(10000)})
		if err != nil {
			b.Error(err)
			return n
		}
		n += len(out.Records)
		iter = out.NextShardIterator
		if len(out.Records) == 0 && aws.ToInt64(out.MillisBehindLatest) == 0 {
			return n
		}
	}
}

// fill writes n records of 100 bytes spread over many partition keys.
func fill(b *testing.B, kc *kinesis.Client, name string, n int) {
	b.Helper()
	payload := make([]byte, 100)
	for start := 0; start < n; start += 500 {
		var entries []ktypes.PutRecordsRequestEntry
		for i := start; i < min(start+500, n); i++ {
			entries = append(entries, ktypes.PutRecordsRequestEntry{Data: payload, PartitionKey: aws.String(fmt.Sprint(i))})
		}
		out, err := kc.PutRecords(context.Background(), &kinesis.PutRecordsInput{StreamName: aws.String(name), Records: entries})
		if err != nil || aws.ToInt32(out.FailedRecordCount) != 0 {
			b.Fatalf("PutRecords: %v", err)
		}
	}
}
