package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/metrics"
	"github.com/kinactor/kinactor/internal/shardfsm"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

// idleStream answers like a caught-up shard: an iterator, then empty batches.
type idleStream struct{ fetches atomic.Int64 }

func (s *idleStream) ListShards(context.Context) ([]stream.Shard, error) { return nil, nil }
func (s *idleStream) Iterator(context.Context, string, stream.Position) (string, error) {
	return "it", nil
}
func (s *idleStream) GetRecords(context.Context, string, int32) (stream.Batch, error) {
	s.fetches.Add(1)
	return stream.Batch{NextIterator: "it"}, nil
}

// okStore accepts every write (the memory of the lease table is not ours).
type okStore struct{ lease.Store }

func (okStore) Renew(_ context.Context, l lease.Lease) (lease.Lease, error) {
	l.Counter++
	return l, nil
}
func (okStore) Release(context.Context, lease.Lease) error { return nil }
func (okStore) Checkpoint(_ context.Context, l lease.Lease, cp lease.Checkpoint, _ []string) (lease.Lease, error) {
	l.Counter++
	l.Checkpoint = cp
	return l, nil
}

// BenchmarkIdleShardMemory measures the heap held per owned, idle shard:
// its shard actor (state machine, timers, mailbox) and its processor actor,
// with 10,000 shards on one node. Kinesis and the lease table are stand-ins
// that answer at once (their memory is not kinactor's).
//
//	go test -run '^$' -bench IdleShardMemory -benchtime 1x ./actors/
func BenchmarkIdleShardMemory(b *testing.B) {
	const shards = 10000
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	defer sys.Shutdown()
	st := &idleStream{}
	deps := &Deps{
		Owner: "bench", Store: okStore{}, Stream: st,
		Processor: actors.FuncProcessor(func(context.Context, messages.Batch) error { return nil }),
		Machine: shardfsm.Config{
			MaxRecords: 10000, MinFetchInterval: 200 * time.Millisecond, IdleTimeBetweenReads: time.Minute,
			ParentPollInterval: time.Second, RenewInterval: time.Hour, CheckpointInterval: 30 * time.Second, ShutdownTimeout: time.Second,
			ThrottleBackoff: backoff.Policy{Base: time.Second, Cap: time.Second}, ErrorBackoff: backoff.Policy{Base: time.Second, Cap: time.Second},
			ProcessorBackoff: backoff.Policy{Base: time.Second, Cap: time.Second}, MaxProcessorAttempts: 1,
			InitialPosition: stream.Position{Type: ktypes.ShardIteratorTypeTrimHorizon},
			LeaseExpiry:     3 * time.Hour, StallTimeout: 2 * time.Minute, ProcessTimeout: 5 * time.Minute,
		},
		Board:   NewBoard(),
		Metrics: metrics.New(prometheus.NewRegistry()),
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for b.Loop() {
		before := heap()
		g0 := runtime.NumGoroutine()
		pids := make([]*actor.PID, shards)
		for i := range pids {
			l := lease.Lease{Key: fmt.Sprintf("shardId-%012d", i), Owner: "bench", Counter: 1, Checkpoint: lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon}}
			pids[i] = sys.Root.Spawn(NewShardProps(deps, l, TakeSent{At: time.Now()}))
		}
		// every shard has made its first (empty) fetch and is now idle
		deadline := time.Now().Add(2 * time.Minute)
		for st.fetches.Load() < shards {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d shards fetched", st.fetches.Load(), shards)
			}
			<-time.After(50 * time.Millisecond)
		}
		after := heap()
		b.ReportMetric(float64(after-before)/shards, "heap-bytes/shard")
		b.ReportMetric(float64(runtime.NumGoroutine()-g0)/shards, "goroutines/shard")
		b.StopTimer()
		for _, p := range pids {
			sys.Root.Stop(p)
		}
		st.fetches.Store(0)
		b.StartTimer()
	}
}
