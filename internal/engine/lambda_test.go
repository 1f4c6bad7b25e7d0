package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/shardfsm"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

// poisonProcessor fails every batch that holds the poison record, whole
// (an error), and records what it processed otherwise.
type poisonProcessor struct {
	poison string
	mu     *sync.Mutex
	seen   map[string]int
	order  map[string][]string
	failed *int
}

func (p *poisonProcessor) ProcessRecords(_ context.Context, b messages.Batch) (actors.Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range b.Records {
		if r.SequenceNumber == p.poison {
			*p.failed++
			return actors.Result{}, errors.New("poison")
		}
	}
	for _, r := range b.Records {
		p.seen[r.SequenceNumber]++
		p.order[r.PartitionKey] = append(p.order[r.PartitionKey], r.SequenceNumber)
	}
	return actors.Result{Checkpoint: messages.CheckpointBatchEnd()}, nil
}

// One poison record in a batch of 1,000, through the shard actor and the
// processor adapter, with bisect and the dead-letter policy: every other
// record processed once and in key order, the poison record dead-lettered
// alone after MaxProcessorAttempts, the checkpoint at the last record.
func TestShardBisectsPoisonRecord(t *testing.T) {
	for _, workers := range []int{1, 8} {
		t.Run(fmt.Sprint("workers ", workers), func(t *testing.T) { bisectPoison(t, workers) })
	}
}

func bisectPoison(t *testing.T, workers int) {
	p := &poisonProcessor{mu: &sync.Mutex{}, seen: map[string]int{}, order: map[string][]string{}, failed: new(int)}
	r := newShardRig(t, actors.FromProcessor(func(string) actors.Processor { return p }))
	r.deps.Machine.MaxRecords = 1000
	r.deps.Machine.BisectOnError = true
	r.deps.Machine.Workers = workers
	r.deps.Machine.FailurePolicy = shardfsm.DeadLetter
	r.deps.Machine.MaxProcessorAttempts = 3
	var dlMu sync.Mutex
	var dl []messages.Record
	r.deps.DeadLetter = func(_ context.Context, _ string, b messages.Batch, cause error) error {
		dlMu.Lock()
		defer dlMu.Unlock()
		dl = append(dl, b.Records...)
		return nil
	}
	recs := make([]stream.Record, 1000)
	for i := range recs {
		recs[i] = stream.Record{PartitionKey: fmt.Sprintf("k%d", i%64), Data: []byte("x")}
	}
	put, err := r.mem.Put(testShard, recs...)
	if err != nil {
		t.Fatal(err)
	}
	p.poison = put[613].SequenceNumber
	r.start()
	last := put[len(put)-1].SequenceNumber
	eventually(t, 20*time.Second, "the checkpoint at the last record", func() bool {
		return r.row().Checkpoint.SequenceNumber == last
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, rec := range put {
		want := 1
		if i == 613 {
			want = 0
		}
		if p.seen[rec.SequenceNumber] != want {
			t.Fatalf("record %d processed %d times, want %d", i, p.seen[rec.SequenceNumber], want)
		}
	}
	for k, seqs := range p.order {
		for i := 1; i < len(seqs); i++ {
			if cmpSeqs(seqs[i], seqs[i-1]) <= 0 {
				t.Fatalf("key %s out of order", k)
			}
		}
	}
	dlMu.Lock()
	defer dlMu.Unlock()
	if len(dl) != 1 || dl[0].SequenceNumber != p.poison {
		t.Fatalf("dead-lettered %d records, want the poison record alone", len(dl))
	}
	if workers == 1 && *p.failed > 10+3 {
		t.Fatalf("%d failed deliveries, want at most ceil(log2(1000)) + 3 = 13", *p.failed)
	}
	t.Logf("%d failed deliveries", *p.failed)
}

func cmpSeqs(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
