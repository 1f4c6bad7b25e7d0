package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

// ledgerProcessor is a Processor of the interface form: one value per
// shard, checkpointing every other batch itself and the rest at shutdown.
type ledgerProcessor struct {
	l       *ledger
	shardID string
	batches int
}

// ledger is what every shard's processor saw.
type ledger struct {
	mu        sync.Mutex
	seen      map[string]int // shard/sequence number → deliveries
	inits     map[string]int
	shutdowns map[string]int
}

func (l *ledger) count(m map[string]int, k string) {
	l.mu.Lock()
	m[k]++
	l.mu.Unlock()
}

func (p *ledgerProcessor) Initialize(_ context.Context, in messages.Initialized) error {
	p.l.count(p.l.inits, in.ShardID)
	return nil
}

func (p *ledgerProcessor) ProcessRecords(_ context.Context, b messages.Batch) (actors.Result, error) {
	for _, r := range b.Records {
		p.l.count(p.l.seen, b.ShardID+"/"+r.SequenceNumber)
	}
	p.batches++
	if p.batches%2 == 0 {
		return actors.Result{}, nil // checkpointed later
	}
	last, _ := b.Last()
	return actors.Result{Checkpoint: messages.CheckpointAt(last.SequenceNumber, last.SubSequenceNumber)}, nil
}

func (p *ledgerProcessor) Shutdown(context.Context, messages.ShutdownRequested) messages.Checkpoint {
	p.l.count(p.l.shutdowns, p.shardID)
	return messages.CheckpointBatchEnd()
}

// A node whose processor is a Processor (no actor in sight) processes
// every record of every shard once, checkpoints where the Results and the
// shutdowns ask, and releases its leases on a graceful stop.
func TestProcessorInterfaceProcessesEveryRecordOnce(t *testing.T) {
	l := &ledger{seen: map[string]int{}, inits: map[string]int{}, shutdowns: map[string]int{}}
	props := actors.FromProcessor(func(shardID string) actors.Processor {
		return &ledgerProcessor{l: l, shardID: shardID}
	})
	const shards, perShard = 3, 250 // MaxRecords 100: several batches per shard
	e := startShell(t, shards, props, nil, false)
	mem := e.deps.Stream.(*stream.MemStream)
	want := map[string]int{}
	last := map[string]string{}
	put := func(n int) {
		for i := range shards {
			id := fmt.Sprintf("shardId-%012d", i)
			recs := make([]stream.Record, n)
			for k := range recs {
				recs[k] = stream.Record{PartitionKey: "pk", Data: []byte(fmt.Sprint(k))}
			}
			out, err := mem.Put(id, recs...)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range out {
				want[id+"/"+r.SequenceNumber] = 1
			}
			last[id] = out[len(out)-1].SequenceNumber
		}
	}
	put(perShard)
	e.waitRunning(t, shards, 10*time.Second)
	put(perShard / 5) // while running
	eventually(t, 10*time.Second, "every record processed", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.seen) >= len(want)
	})

	done := make(chan []string, 1)
	e.sys.Root.Send(e.coord, StopAll{Done: done, Timeout: 10 * time.Second})
	select {
	case left := <-done:
		if len(left) != 0 {
			t.Fatalf("leases left: %v", left)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the stop never finished")
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if !maps.Equal(l.seen, want) {
		var extra, dup []string
		for k, n := range l.seen {
			if want[k] == 0 {
				extra = append(extra, k)
			} else if n > 1 {
				dup = append(dup, k)
			}
		}
		t.Errorf("%d records seen, %d expected; duplicated %v, unexpected %v", len(l.seen), len(want), dup, extra)
	}
	rows, err := e.store.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Owner != "" || r.Checkpoint != (lease.Checkpoint{SequenceNumber: last[r.Key]}) {
			t.Errorf("row %s: owner %q checkpoint %+v, want released at %s", r.Key, r.Owner, r.Checkpoint, last[r.Key])
		}
		if l.inits[r.Key] != 1 || l.shutdowns[r.Key] != 1 {
			t.Errorf("shard %s: Initialize called %d times, Shutdown %d, want once each", r.Key, l.inits[r.Key], l.shutdowns[r.Key])
		}
	}
	if got := slices.Sorted(maps.Keys(l.inits)); len(got) != shards {
		t.Errorf("initialized shards %v", got)
	}
}
