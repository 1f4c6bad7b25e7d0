package test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/smithy-go"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/testenv/faultproxy"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/messages"
)

// In-process partial failures of one node: DynamoDB unreachable while it
// stops, a processor that hangs, a lease write whose answer is lost.

// Node.Stop with DynamoDB unreachable returns within ShutdownTimeout plus
// the 2 s margin, naming the leases it left to expire (it never returned:
// the release was retried forever).
func TestStopWithDynamoDBUnreachableReturns(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, localaws.Dynalite)
	kc := env.KinesisClient()
	localaws.CreateStreamT(t, kc, "stop-cut", 2)
	p := newProducer(kc, "stop-cut", 8)
	p.put(t, 200)
	proxy, err := faultproxy.Start(faultproxy.DynamoDB, env.DynamoDB.Endpoint, 1)
	requireNoError(t, err, "proxy")
	t.Cleanup(func() { _ = proxy.Close() })

	led := newLedger()
	cfg := nodeConfig(t, env, "stop-cut", "stop-cut-app", "node-s")
	cfg.DynamoDB = dynamodb.NewFromConfig(env.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(proxy.URL) })
	cfg.ShutdownTimeout = 2 * time.Second
	n, err := kinactor.NewNode(cfg, actors.FuncProcessor(func(_ context.Context, b messages.Batch) error {
		led.record(b)
		return nil
	}))
	requireNoError(t, err, "NewNode")
	requireNoError(t, n.Start(context.Background()), "Start")
	checkFor(t, 60*time.Second, func() error {
		if u := led.unique(); u < 200 {
			return errors.New("not everything processed yet")
		}
		return nil
	})
	proxy.Set(faultproxy.Faults{Blackhole: true})
	began := time.Now()
	done := make(chan error, 1)
	go func() { done <- n.Stop(context.Background()) }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Stop did not return within a minute with DynamoDB unreachable")
	}
	took := time.Since(began)
	t.Logf("Stop returned after %s with DynamoDB unreachable (ShutdownTimeout %s): %v", took.Round(time.Millisecond), cfg.ShutdownTimeout, err)
	if !errors.Is(err, kinactor.ErrLeasesLeft) || !strings.Contains(err.Error(), "shardId-") {
		t.Fatalf("Stop: %v, want ErrLeasesLeft naming the shards", err)
	}
	// The bound is ShutdownTimeout + 2 s; a loaded CI machine gets 3 s more
	// before this counts as a hang (BENCHMARKS.md has the measured figure).
	if took > cfg.ShutdownTimeout+5*time.Second {
		t.Fatalf("Stop took %s", took)
	}
}

// A processor that hangs on a batch: after ProcessTimeout its context is
// cancelled, it is replaced, and the batch is delivered again (retry), or
// handed to the dead-letter handler (dead-letter with one attempt).
func TestHungProcessorIsReplaced(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, localaws.Dynalite)
	kc := env.KinesisClient()
	for _, policy := range []kinactor.FailurePolicy{kinactor.PolicyRetry, kinactor.PolicyDeadLetter} {
		t.Run(string(policy), func(t *testing.T) {
			name := "hang-" + string(policy)
			localaws.CreateStreamT(t, kc, name, 2)
			p := newProducer(kc, name, 8)
			p.put(t, 200)
			led := newLedger()
			var hung, cancelled atomic.Bool
			var mu sync.Mutex
			dead := 0
			cfg := nodeConfig(t, env, name, name+"-app", "node-h")
			cfg.ProcessTimeout = 2 * time.Second
			cfg.FailurePolicy = policy
			if policy == kinactor.PolicyDeadLetter {
				cfg.MaxProcessorAttempts = 1
				cfg.DeadLetter = func(_ context.Context, _ string, b messages.Batch, cause error) error {
					if !strings.Contains(cause.Error(), "ProcessTimeout") {
						t.Errorf("dead-lettered for %v", cause)
					}
					led.record(b) // the dead-letter queue counts as processed
					mu.Lock()
					dead += len(b.Records)
					mu.Unlock()
					return nil
				}
			}
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			n := runNode(t, cfg, func(ctx context.Context, b messages.Batch) error {
				if b.ShardID == "shardId-000000000000" && !hung.Swap(true) {
					// Hangs for real, its context or not (a sink that never
					// answers); the context's end is seen from the side.
					go func() { <-ctx.Done(); cancelled.Store(true) }()
					<-release
					return errors.New("released at the end of the test")
				}
				led.record(b)
				return nil
			})
			checkFor(t, 60*time.Second, func() error {
				if u := led.unique(); u < 200 || !cancelled.Load() {
					return errors.New("not everything processed yet")
				}
				return nil
			})
			if !cancelled.Load() {
				t.Fatal("the hung batch's context was never cancelled")
			}
			if r := scrape(t, n).Sum("kinactor_processor_restarts_total"); r < 1 {
				t.Fatalf("processor restarts %v, want the hung one replaced", r)
			}
			mu.Lock()
			defer mu.Unlock()
			if policy == kinactor.PolicyDeadLetter && dead == 0 {
				t.Fatal("the hung batch was not dead-lettered")
			}
			if policy == kinactor.PolicyRetry && dead != 0 {
				t.Fatal("dead-lettered under retry")
			}
			led.verify(t, 200)
		})
	}
}

// ambiguousDynamo applies the first checkpoint write it sees while armed
// and answers it, and every retry of it, with a 500: the store gives up
// without knowing the write was applied.
type ambiguousDynamo struct {
	lease.DynamoAPI
	armed    atomic.Bool
	attempts atomic.Int32
}

func (a *ambiguousDynamo) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	if a.armed.Load() && strings.Contains(aws.ToString(in.UpdateExpression), "#cp") {
		n := a.attempts.Add(1)
		injected := &smithy.GenericAPIError{Code: "InternalServerError", Message: "injected: the answer was lost", Fault: smithy.FaultServer}
		if n == 1 {
			if _, err := a.DynamoAPI.UpdateItem(ctx, in, opts...); err != nil {
				return nil, err
			}
			return nil, injected
		}
		if n >= lease.DefaultMaxAttempts {
			a.armed.Store(false)
		}
		return nil, injected
	}
	return a.DynamoAPI.UpdateItem(ctx, in, opts...)
}

// A checkpoint that DynamoDB applied but whose answer was lost (a 5xx on
// every attempt) makes the next write's condition fail; the row shows our
// owner and the counter we would have written, so it is recognised as our
// own write and the shard carries on (it was dropped as "lease lost").
func TestAmbiguousWriteIsRecognisedAsOurs(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	localaws.CreateStreamT(t, kc, "ambiguous", 1)
	p := newProducer(kc, "ambiguous", 4)
	p.put(t, 100)
	amb := &ambiguousDynamo{DynamoAPI: env.DynamoDBClient()}
	led := newLedger()
	cfg := nodeConfig(t, env, "ambiguous", "ambiguous-app", "node-a")
	cfg.DynamoDB = amb
	n := runNode(t, cfg, func(_ context.Context, b messages.Batch) error {
		led.record(b)
		return nil
	})
	checkFor(t, 60*time.Second, func() error {
		if led.unique() < 100 {
			return errors.New("first records not processed yet")
		}
		return nil
	})
	store := lease.NewDynamoStore(env.DynamoDBClient(), "ambiguous-app")
	before, err := store.Get(context.Background(), "shardId-000000000000")
	requireNoError(t, err, "Get")
	amb.armed.Store(true)
	p.put(t, 100)
	checkFor(t, 90*time.Second, func() error {
		if amb.armed.Load() || led.unique() < 200 {
			return errors.New("the ambiguous write has not happened, or not everything is processed")
		}
		return nil
	})
	// the lease is written again after the ambiguous write (the write
	// that finds the condition failed), and the checkpoint reaches the end
	checkFor(t, 30*time.Second, func() error {
		l, err := store.Get(context.Background(), "shardId-000000000000")
		if err != nil {
			return err
		}
		if l.Owner != "node-a" {
			t.Fatalf("row %+v: the shard left its node", l)
		}
		if last := led.lastSeq("shardId-000000000000"); l.Checkpoint.SequenceNumber != last || l.Counter < before.Counter+2 {
			return errors.New("checkpoint not at the last record yet, or no write after the ambiguous one")
		}
		return nil
	})
	if l := scrape(t, n).Sum("kinactor_lease_losses_total"); l != 0 {
		t.Fatalf("%v leases lost: our own ambiguous write was taken for another owner's", l)
	}
	led.verify(t, 200)
}

// lastSeq is the sequence number of the last record processed on shard.
func (l *ledger) lastSeq(shard string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	seqs := l.byShard[shard]
	if len(seqs) == 0 {
		return ""
	}
	last := seqs[len(seqs)-1]
	if i := strings.IndexByte(last, '/'); i >= 0 {
		last = last[:i]
	}
	return last
}
