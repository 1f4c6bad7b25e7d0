package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	kledger "github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// BenchmarkSlowProcessorParallelization: a slow processor (the ledger with
// --record-delay 5ms) on one shard, read from TRIM_HORIZON by a real
// `kinactor node` with --parallelization 1, 2, 4, 8 and 10, in one run
// over the same backlog (6,000 records over 1,000 keys, kinesalite and
// DynamoDB Local). Each factor is a new application (its own lease table),
// timed from the node's ready file to the last record in its ledger.
//
//	go test -run '^$' -bench SlowProcessorParallelization -benchtime 1x ./test/
func BenchmarkSlowProcessorParallelization(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	bin, env := buildWithServers(b, dir, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	const streamName, records = "slow-processor", 6000
	localaws.CreateStreamT(b, kc, streamName, 1)
	for i := 0; i < records; i += 500 {
		var entries []ktypes.PutRecordsRequestEntry
		for j := i; j < i+500; j++ {
			entries = append(entries, ktypes.PutRecordsRequestEntry{PartitionKey: aws.String(fmt.Sprint("k", j%1000)), Data: []byte(fmt.Sprintf(`{"n":%d}`, j))})
		}
		out, err := kc.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(streamName), Records: entries})
		requireNoError(b, err, "PutRecords")
		if aws.ToInt32(out.FailedRecordCount) > 0 {
			b.Fatalf("%d records not written", aws.ToInt32(out.FailedRecordCount))
		}
	}
	var base float64
	for _, n := range []int{1, 2, 4, 8, 10} {
		b.Run(fmt.Sprintf("factor=%d", n), func(b *testing.B) {
			var rate float64
			for range b.N {
				app := fmt.Sprintf("slow-%d-%d", n, time.Now().UnixNano())
				c, err := clusterrun.Start(ctx, clusterrun.Options{
					Bin: bin, Dir: b.TempDir(), App: app, Stream: streamName, Nodes: 0,
					Env: []string{
						"AWS_ENDPOINT_URL_KINESIS=" + env.Kinesis.Endpoint,
						"AWS_ENDPOINT_URL_DYNAMODB=" + env.DynamoDB.Endpoint,
						"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local",
					},
					ExtraArgs: []string{"--parallelization", fmt.Sprint(n), "--record-delay", "5ms"},
				})
				requireNoError(b, err, "cluster")
				p, err := c.AddNodeWith(ctx, clusterrun.NodeOptions{Single: true})
				requireNoError(b, err, "node")
				t0 := time.Now()
				checkFor(b, 5*time.Minute, func() error {
					es, err := kledger.ReadDir(c.LedgerDir())
					if err != nil {
						return err
					}
					if len(es) < records {
						return fmt.Errorf("%d of %d records", len(es), records)
					}
					return nil
				})
				rate = records / time.Since(t0).Seconds()
				_ = c.Term(p)
				c.Close()
			}
			if n == 1 {
				base = rate
			}
			b.ReportMetric(rate, "records/s")
			if base > 0 {
				b.ReportMetric(rate/base, "x-factor-1")
				b.ReportMetric(rate/base/float64(n), "ratio/N")
			}
		})
	}
}
