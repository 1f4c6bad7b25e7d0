package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kinactor/kinactor/internal/testenv/faultproxy"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/messages"
)

// A node behind fault-injecting proxies — 40% of GetRecords throttled,
// 20% of lease-table writes throttled and 10% failing with 500s — backs off
// and recovers: no storm of calls, no lease mistaken for lost, and every
// record processed exactly once.
func TestNodeBacksOffUnderThrottlingAndErrors(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, localaws.Dynalite)
	kc := env.KinesisClient()
	const name, shards = "faults", 4
	localaws.CreateStreamT(t, kc, name, shards)
	p := newProducer(kc, name, 16)
	p.put(t, 2000)

	kp, err := faultproxy.Start(faultproxy.Kinesis, env.Kinesis.Endpoint, 7)
	requireNoError(t, err, "kinesis proxy")
	t.Cleanup(func() { kp.Close() })
	dp, err := faultproxy.Start(faultproxy.DynamoDB, env.DynamoDB.Endpoint, 8)
	requireNoError(t, err, "dynamodb proxy")
	t.Cleanup(func() { dp.Close() })
	kp.Set(faultproxy.Faults{Throttle: 0.4, Only: []string{"GetRecords"}})
	dp.Set(faultproxy.Faults{Throttle: 0.2, Errors: 0.1, Only: []string{"UpdateItem"}})

	led := newLedger()
	cfg := nodeConfig(t, env, name, "faults-app", "node-f")
	cfg.MaxRecords = 25
	cfg.Kinesis = kinesis.NewFromConfig(env.AWSConfig(), func(o *kinesis.Options) { o.BaseEndpoint = aws.String(kp.URL) })
	cfg.DynamoDB = dynamodb.NewFromConfig(env.AWSConfig(), func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(dp.URL)
		o.DisableValidateResponseChecksum = true
	})
	start := time.Now()
	n := runNode(t, cfg, func(_ context.Context, b messages.Batch) error {
		led.record(b)
		return nil
	})
	checkFor(t, 120*time.Second, func() error {
		if u := led.unique(); u < 2000 {
			return fmt.Errorf("processed %d of 2000", u)
		}
		return nil
	})
	took := time.Since(start)
	stopNode(t, n)
	led.verify(t, 2000)

	kc2, dc := kp.Counts(), dp.Counts()
	m := scrape(t, n)
	throttled := m.Sum("kinactor_fetch_errors_total", "kind", "throttled")
	if kc2.Throttled == 0 || dc.Throttled == 0 || dc.Errored == 0 {
		t.Fatalf("the proxies injected nothing: kinesis %+v, dynamodb %+v", kc2, dc)
	}
	if throttled != float64(kc2.Throttled) {
		t.Errorf("node counted %v throttled fetches, proxy throttled %d", throttled, kc2.Throttled)
	}
	if lost := m.Sum("kinactor_lease_losses_total"); lost != 0 {
		t.Errorf("%v leases lost: throttling or 500s were mistaken for a lost lease", lost)
	}
	// No storm: Kinesis allows 5 GetRecords per second per shard; with
	// backoff the node stays below that even while 40% are throttled.
	rate := float64(kc2.ByOperation["GetRecords"]) / took.Seconds() / shards
	if rate > 5 {
		t.Errorf("%.1f GetRecords calls/s per shard: backoff does not hold the call rate down", rate)
	}
	t.Logf("2000 records in %v; kinesis %d calls (%d throttled, %.1f GetRecords/s/shard); dynamodb %d calls (%d throttled, %d 500s)",
		took.Round(time.Millisecond), kc2.Requests, kc2.Throttled, rate, dc.Requests, dc.Throttled, dc.Errored)
}
