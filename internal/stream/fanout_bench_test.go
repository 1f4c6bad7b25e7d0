package stream_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/internal/testenv/kinesismock"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// fanOutBenchRecords is how many records the one-shard kinesis-mock bench
// stream holds (kinesis-mock slows down as a stream fills).
const fanOutBenchRecords = 2000

// BenchmarkFanOutVsPolling reads a pre-filled one-shard kinesis-mock stream
// from TRIM_HORIZON to its last record, through FanOut (SubscribeToShard,
// with the test transport that inserts the initial-response event) and
// through the polling Client (GetRecords, limit 10000). One op reads the
// whole shard. Each FanOut op uses a consumer of its own, registered with
// the timer stopped: kinesis-mock keeps a closed subscription "active" for
// a few seconds, so reusing one consumer would measure its ResourceInUse
// backoff instead of reading. first-event-ms is the time from Iterator to
// the first records (kinesis-mock pushes about once a second).
func BenchmarkFanOutVsPolling(b *testing.B) {
	if testing.Short() {
		b.Skip("benchmark needs kinesis-mock")
	}
	env := localaws.StartT(b, localaws.KinesisMock, "")
	tr := &kinesismock.Transport{}
	kc := kinesismock.Client(env, tr)
	const name = "efo-bench"
	createStream(b, kc, name, 1)
	ctx := context.Background()
	payload := make([]byte, 100)
	for start := 0; start < fanOutBenchRecords; start += 500 {
		entries := make([]types.PutRecordsRequestEntry, 0, 500)
		for i := start; i < start+500; i++ {
			entries = append(entries, types.PutRecordsRequestEntry{Data: payload, PartitionKey: aws.String(fmt.Sprint(i))})
		}
		out, err := kc.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(name), Records: entries})
		if err != nil || aws.ToInt32(out.FailedRecordCount) != 0 {
			b.Fatalf("PutRecords: %v (%d failed)", err, aws.ToInt32(out.FailedRecordCount))
		}
	}
	const shardID = "shardId-000000000000"

	b.Run(fmt.Sprintf("polling/records=%d", fanOutBenchRecords), func(b *testing.B) {
		c := stream.NewClient(kc, name, "")
		for i := 0; i < b.N; i++ {
			it, err := c.Iterator(ctx, shardID, stream.Position{Type: types.ShardIteratorTypeTrimHorizon})
			if err != nil {
				b.Fatal(err)
			}
			got := 0
			for got < fanOutBenchRecords {
				batch, err := c.GetRecords(ctx, it, stream.MaxGetRecordsLimit)
				if err != nil {
					b.Fatal(err)
				}
				got += len(batch.Records)
				it = batch.NextIterator
			}
		}
		b.ReportMetric(float64(b.N*fanOutBenchRecords)/b.Elapsed().Seconds(), "records/s")
	})

	b.Run(fmt.Sprintf("fanout/records=%d", fanOutBenchRecords), func(b *testing.B) {
		var events, calls int
		var firstEvent time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			f := stream.NewFanOut(kc, name, fmt.Sprintf("bench-%d-%d", b.N, i),
				stream.WithFanOutBackoff(backoff.Policy{Base: 20 * time.Millisecond, Cap: 500 * time.Millisecond}))
			if err := f.Register(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			start := time.Now()
			it, err := f.Iterator(ctx, shardID, stream.Position{Type: types.ShardIteratorTypeTrimHorizon})
			if err != nil {
				b.Fatal(err)
			}
			got := 0
			for got < fanOutBenchRecords {
				batch, err := f.GetRecords(ctx, it, stream.MaxGetRecordsLimit)
				calls++
				if errors.Is(err, stream.ErrThrottled) {
					continue
				}
				if err != nil {
					b.Fatal(err)
				}
				if len(batch.Records) > 0 {
					if got == 0 {
						firstEvent += time.Since(start)
					}
					events++
				}
				got += len(batch.Records)
			}
			b.StopTimer()
			f.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(b.N*fanOutBenchRecords)/b.Elapsed().Seconds(), "records/s")
		b.ReportMetric(float64(events)/float64(b.N), "events/op")
		b.ReportMetric(float64(calls)/float64(b.N), "calls/op")
		b.ReportMetric(float64(firstEvent.Milliseconds())/float64(b.N), "first-event-ms")
	})
}
