package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/testenv/kinesismock"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/messages"
)

// A node reading with enhanced fan-out on kinesis-mock: a 4-shard stream,
// records written before and during the subscriptions, every event stream
// cut after its first event (as AWS ends subscriptions every 5 minutes): every
// record is processed exactly once and in order per shard and key.
func TestNodeWithEnhancedFanOut(t *testing.T) {
	env := localaws.StartT(t, localaws.KinesisMock, localaws.Dynalite)
	const name = "efo"
	localaws.CreateStreamT(t, env.KinesisClient(), name, 4)
	p := newProducer(env.KinesisClient(), name, 16)
	p.put(t, 200)

	tr := &kinesismock.Transport{CutAfter: 1}
	led := newLedger()
	cfg := nodeConfig(t, env, name, "efo-app", "node-e")
	cfg.Kinesis = kinesismock.Client(env, tr)
	cfg.FanOutConsumer = "kinactor-efo-test"
	n := runNode(t, cfg, func(_ context.Context, b messages.Batch) error {
		led.record(b)
		return nil
	})
	checkFor(t, 60*time.Second, func() error {
		if u := led.unique(); u < 200 {
			return fmt.Errorf("processed %d of the first 200", u)
		}
		return nil
	})
	p.put(t, 200) // during the subscriptions
	checkFor(t, 90*time.Second, func() error {
		if u := led.unique(); u < 400 {
			return fmt.Errorf("processed %d of 400", u)
		}
		return nil
	})
	// per-shard series live while the node runs the shard (a stopped node
	// shows none)
	if f := scrape(t, n).Sum("kinactor_records_processed_total", "shard", "shardId-000000000000"); f == 0 {
		t.Fatal("no records counted on shard 0")
	}
	stopNode(t, n)
	led.verify(t, 400)
	if tr.Cuts.Load() == 0 {
		t.Fatal("no event stream was cut: resubscription was not exercised")
	}
	t.Logf("400 records through fan-out: %d subscriptions, %d streams cut", tr.Subscribes.Load(), tr.Cuts.Load())
}
