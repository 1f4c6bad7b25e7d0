package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/metrics"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

// BenchmarkPipelineCPU measures the CPU cost of the pipeline itself:
// records per CPU-second (user + system time of the process, every
// goroutine and the GC included) through one shard actor with a no-op
// processor, on the in-memory stream and lease store, against a bare loop
// over the same fakes that does the least a consumer must (GetRecords of
// 10,000, a no-op call, a fenced checkpoint per batch). The node runs with
// 1 and with 8 workers (ParallelizationFactor); every record has one of
// 1,000 partition keys and 100 bytes.
//
//	go test -run '^$' -bench PipelineCPU -benchtime 3x ./internal/engine/
func BenchmarkPipelineCPU(b *testing.B) {
	const records = 1_000_000
	b.Run("bare", func(b *testing.B) {
		var cpu, wall time.Duration
		for range b.N {
			mem, store, held := pipelineFixture(b, records)
			runtime.GC() // the fixture's garbage is not the loop's
			t0, c0 := time.Now(), cpuTime()
			ctx := context.Background()
			it, err := mem.Iterator(ctx, testShard, stream.Position{Type: ktypes.ShardIteratorTypeTrimHorizon})
			if err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			noop := func(messages.Batch) {}
			for n.Load() < records {
				batch, err := mem.GetRecords(ctx, it, 10000)
				if err != nil {
					b.Fatal(err)
				}
				it = batch.NextIterator
				if len(batch.Records) == 0 {
					continue
				}
				noop(messages.Batch{ShardID: testShard, Records: batch.Records})
				n.Add(int64(len(batch.Records)))
				last := batch.Records[len(batch.Records)-1]
				if held, err = store.Checkpoint(ctx, held, lease.Checkpoint{SequenceNumber: last.SequenceNumber}, nil); err != nil {
					b.Fatal(err)
				}
			}
			cpu, wall = cpu+cpuTime().Sub(c0), wall+time.Since(t0)
		}
		b.ReportMetric(float64(records*b.N)/cpu.Seconds(), "records/cpu-s")
		b.ReportMetric(float64(records*b.N)/wall.Seconds(), "records/s")
	})
	for _, workers := range []int{1, 8} {
		b.Run(fmt.Sprintf("node/N=%d", workers), func(b *testing.B) {
			var cpu, wall time.Duration
			for range b.N {
				mem, store, held := pipelineFixture(b, records)
				var n atomic.Int64
				done := make(chan struct{})
				proc := actors.FromProcessor(func(string) actors.Processor {
					return noopProcessor(func(batch messages.Batch) {
						if n.Add(int64(len(batch.Records))) == records {
							close(done)
						}
					})
				})
				quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
				sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))
				cfg := fastMachine()
				cfg.MaxRecords = 10000
				cfg.MinFetchInterval = time.Millisecond // the fakes do not throttle; Kinesis's 5/s would bound the wall time, not the CPU
				cfg.CheckpointInterval = time.Second
				cfg.Workers = workers
				deps := &Deps{Owner: "me", Store: store, Stream: mem, Processor: proc, Machine: cfg,
					Metrics: metrics.New(prometheus.NewRegistry()), Logger: quiet, Board: NewBoard()}
				runtime.GC() // the fixture's garbage is not the pipeline's
				t0, c0 := time.Now(), cpuTime()
				sys.Root.Spawn(NewShardProps(deps, held, TakeSent{At: time.Now()}))
				select {
				case <-done:
				case <-time.After(5 * time.Minute):
					b.Fatalf("%d of %d records processed", n.Load(), records)
				}
				cpu, wall = cpu+cpuTime().Sub(c0), wall+time.Since(t0)
				sys.Shutdown()
			}
			b.ReportMetric(float64(records*b.N)/cpu.Seconds(), "records/cpu-s")
			b.ReportMetric(float64(records*b.N)/wall.Seconds(), "records/s")
		})
	}
}

type noopProcessor func(messages.Batch)

func (p noopProcessor) ProcessRecords(_ context.Context, b messages.Batch) (actors.Result, error) {
	p(b)
	return actors.Result{Checkpoint: messages.CheckpointBatchEnd()}, nil
}

// pipelineFixture returns a one-shard stream of n records (1,000 keys, 100
// bytes each) and its lease, held.
func pipelineFixture(b *testing.B, n int) (*stream.MemStream, *lease.MemStore, lease.Lease) {
	b.Helper()
	mem := stream.NewMemStream("bench", 1)
	data := make([]byte, 100)
	recs := make([]stream.Record, 0, 10000)
	for i := 0; i < n; i += len(recs) {
		recs = recs[:0]
		for j := i; j < min(i+10000, n); j++ {
			recs = append(recs, stream.Record{PartitionKey: fmt.Sprint("k", j%1000), Data: data})
		}
		if _, err := mem.Put(testShard, recs...); err != nil {
			b.Fatal(err)
		}
	}
	store := lease.NewMemStore()
	ctx := context.Background()
	if err := store.Create(ctx, lease.Lease{Key: testShard}); err != nil {
		b.Fatal(err)
	}
	row, err := store.Get(ctx, testShard)
	if err != nil {
		b.Fatal(err)
	}
	held, err := store.Take(ctx, row, "me", lease.TakeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return mem, store, held
}

type cpuStamp struct{ user, sys time.Duration }

func cpuTime() cpuStamp {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return cpuStamp{user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano())}
}

// Sub returns the CPU time from o to c.
func (c cpuStamp) Sub(o cpuStamp) time.Duration { return c.user - o.user + c.sys - o.sys }
