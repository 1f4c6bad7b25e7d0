package stream_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// benchRecords is how many records the one-shard bench stream holds.
const benchRecords = 20000

// benchStream starts kinesalite and fills a one-shard stream with
// benchRecords records of 100 bytes, in PutRecords batches of 500.
func benchStream(b *testing.B) (*kinesis.Client, string) {
	b.Helper()
	if testing.Short() {
		b.Skip("benchmark needs a local Kinesis server")
	}
	env := localaws.StartT(b, localaws.Kinesalite, "")
	kc := env.KinesisClient()
	const name = "bench"
	createStream(b, kc, name, 1)
	ctx := context.Background()
	payload := make([]byte, 100)
	for start := 0; start < benchRecords; start += 500 {
		entries := make([]types.PutRecordsRequestEntry, 0, 500)
		for i := start; i < start+500; i++ {
			entries = append(entries, types.PutRecordsRequestEntry{Data: payload, PartitionKey: aws.String(fmt.Sprint(i))})
		}
		out, err := kc.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(name), Records: entries})
		if err != nil || aws.ToInt32(out.FailedRecordCount) != 0 {
			b.Fatalf("PutRecords: %v (%d failed)", err, aws.ToInt32(out.FailedRecordCount))
		}
	}
	return kc, name
}

// reportRate reports records/s over the timed loop (one op reads the whole
// shard, so ns/op is the time of one full read).
func reportRate(b *testing.B, recs int) {
	b.ReportMetric(float64(recs)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkBareGetRecordsLoop is the baseline: the plain SDK reading a
// pre-filled shard from TRIM_HORIZON with GetRecords(Limit 10000).
func BenchmarkBareGetRecordsLoop(b *testing.B) {
	kc, name := benchStream(b)
	ctx := context.Background()
	b.Run(fmt.Sprintf("records=%d", benchRecords), func(b *testing.B) {
		total := 0
		for b.Loop() {
			it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
				StreamName: aws.String(name), ShardId: aws.String("shardId-000000000000"),
				ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
			})
			if err != nil {
				b.Fatal(err)
			}
			iter, n := it.ShardIterator, 0
			for n < benchRecords {
				out, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(10000)})
				if err != nil {
					b.Fatal(err)
				}
				if len(out.Records) == 0 {
					b.Fatalf("empty batch after %d records", n)
				}
				n += len(out.Records)
				iter = out.NextShardIterator
			}
			total += n
		}
		reportRate(b, total)
	})
}

// BenchmarkClientGetRecordsLoop is the same loop through stream.Client.
func BenchmarkClientGetRecordsLoop(b *testing.B) {
	kc, name := benchStream(b)
	ctx := context.Background()
	c := stream.NewClient(kc, name, "")
	b.Run(fmt.Sprintf("records=%d", benchRecords), func(b *testing.B) {
		total := 0
		for b.Loop() {
			it, err := c.Iterator(ctx, "shardId-000000000000", stream.Position{Type: types.ShardIteratorTypeTrimHorizon})
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for n < benchRecords {
				batch, err := c.GetRecords(ctx, it, 10000)
				if err != nil {
					b.Fatal(err)
				}
				if len(batch.Records) == 0 {
					b.Fatalf("empty batch after %d records", n)
				}
				n += len(batch.Records)
				it = batch.NextIterator
			}
			total += n
		}
		reportRate(b, total)
	})
}
