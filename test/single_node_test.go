package test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/messages"
)

func runNode(t *testing.T, cfg kinactor.Config, fn actors.ProcessorFunc) *kinactor.Node {
	t.Helper()
	n, err := kinactor.NewNode(cfg, actors.FuncProcessor(fn))
	requireNoError(t, err, "NewNode")
	requireNoError(t, n.Start(context.Background()), "Start")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = n.Stop(ctx)
	})
	return n
}

func stopNode(t *testing.T, n *kinactor.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	requireNoError(t, n.Stop(ctx), "Stop")
}

// One node reads a 4-shard, 5,000-record stream; it is stopped gracefully
// after about half, and a second node resumes from the checkpoints: every
// record is processed exactly once, in order per shard and per key.
func TestSingleNodeStopAndResume(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	localaws.CreateStreamT(t, kc, "resume", 4)
	p := newProducer(kc, "resume", 32)
	p.put(t, 5000)

	led := newLedger()
	slow := func(ctx context.Context, b messages.Batch) error {
		led.record(b)
		select { // a processor that takes a while per batch
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		}
		return nil
	}
	cfg := nodeConfig(t, env, "resume", "resume-app", "node-a")
	cfg.MaxRecords = 100
	a := runNode(t, cfg, slow)
	checkFor(t, 60*time.Second, func() error {
		if n := led.processed(); n < 2500 {
			return fmt.Errorf("node A processed %d", n)
		}
		return nil
	})
	stopNode(t, a)
	atStop := led.processed()
	if atStop >= 5000 {
		t.Fatalf("node A processed everything (%d) before the stop: the test proves nothing", atStop)
	}

	// every lease is released with a checkpoint
	store := lease.NewDynamoStore(env.DynamoDBClient(), "resume-app")
	leases, err := store.List(context.Background())
	requireNoError(t, err, "List")
	if len(leases) != 4 {
		t.Fatalf("%d lease rows, want 4", len(leases))
	}
	for _, l := range leases {
		if l.Owner != "" {
			t.Errorf("lease %s still owned by %q after a graceful stop", l.Key, l.Owner)
		}
	}

	cfg.WorkerID = "node-b"
	runNode(t, cfg, slow)
	checkFor(t, 90*time.Second, func() error {
		if n := led.unique(); n < 5000 {
			return fmt.Errorf("processed %d of 5000", n)
		}
		return nil
	})
	led.verify(t, 5000)
	t.Logf("node A processed %d before its stop; node B the rest; %d deliveries in all", atStop, led.processed())
}

// A processor that panics on one batch three times still ends with every
// record processed exactly once; the batch is delivered again each time.
func TestPanickingProcessorGetsSameBatchAgain(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	localaws.CreateStreamT(t, kc, "panics", 2)
	p := newProducer(kc, "panics", 8)
	p.put(t, 1000)

	led := newLedger()
	var mu sync.Mutex
	var poison string // shard/first-seq of the batch chosen to fail
	deliveries := map[string]int{}
	fn := func(ctx context.Context, b messages.Batch) error {
		key := fmt.Sprintf("%s/%s", b.ShardID, b.Records[0].SequenceNumber)
		mu.Lock()
		deliveries[key]++
		if poison == "" && b.BatchID == 3 {
			poison = key
		}
		boom := key == poison && deliveries[key] <= 3
		nth := deliveries[key]
		mu.Unlock()
		if boom {
			panic(fmt.Sprintf("processor bug on %s (delivery %d)", key, nth))
		}
		led.record(b)
		return nil
	}
	cfg := nodeConfig(t, env, "panics", "panics-app", "node-p")
	cfg.MaxRecords = 50
	cfg.ProcessorBackoffBase = 10 * time.Millisecond
	cfg.ProcessorBackoffCap = 100 * time.Millisecond
	n := runNode(t, cfg, fn)
	checkFor(t, 60*time.Second, func() error {
		if u := led.unique(); u < 1000 {
			return fmt.Errorf("processed %d of 1000", u)
		}
		return nil
	})
	led.verify(t, 1000)
	mu.Lock()
	defer mu.Unlock()
	if poison == "" {
		t.Fatal("no batch was chosen to fail")
	}
	if d := deliveries[poison]; d != 4 {
		t.Errorf("the failing batch was delivered %d times, want 4 (3 panics + 1 success)", d)
	}
	if got := scrape(t, n).Sum("kinactor_processor_restarts_total"); got != 3 {
		t.Errorf("processor restarts metric = %v, want 3", got)
	}
}
