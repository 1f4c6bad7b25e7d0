package actors_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/messages"
)

// keyedBatch returns n records over keys k0..k(keys-1), in turn.
func keyedBatch(id uint64, from, n, keys int) messages.Batch {
	b := messages.Batch{ShardID: shard, BatchID: id, Attempt: 1}
	for i := range n {
		b.Records = append(b.Records, messages.Record{SequenceNumber: fmt.Sprintf("%056d", from+i), PartitionKey: fmt.Sprintf("k%d", i%keys)})
	}
	return b
}

// worker records what one Processor value was given.
type worker struct {
	id  int
	log *workerLog
}

type workerLog struct {
	mu      sync.Mutex
	byValue map[int][]messages.Record
	values  int
	fail    func(r messages.Record) bool // the record fails (named in Result.Failed)
	panicOn string                       // a sequence number that panics, once
	shut    map[int]bool
}

func (w *worker) ProcessRecords(_ context.Context, b messages.Batch) (actors.Result, error) {
	l := w.log
	l.mu.Lock()
	defer l.mu.Unlock()
	var failed []messages.Position
	for _, r := range b.Records {
		if l.panicOn != "" && r.SequenceNumber == l.panicOn {
			l.panicOn = ""
			panic("poison pill")
		}
		if l.fail != nil && l.fail(r) {
			failed = append(failed, r.Pos())
			continue
		}
		if len(failed) == 0 {
			l.byValue[w.id] = append(l.byValue[w.id], r)
		}
	}
	return actors.Result{Checkpoint: messages.CheckpointBatchEnd(), Failed: failed}, nil
}

func (w *worker) Shutdown(context.Context, messages.ShutdownRequested) messages.Checkpoint {
	w.log.mu.Lock()
	w.log.shut[w.id] = true
	w.log.mu.Unlock()
	return messages.CheckpointBatchEnd()
}

func newWorkerLog() *workerLog {
	return &workerLog{byValue: map[int][]messages.Record{}, shut: map[int]bool{}}
}

func (l *workerLog) factory() func(string) actors.Processor {
	return func(string) actors.Processor {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.values++
		return &worker{id: l.values, log: l}
	}
}

// N = 4, 64 keys, 1,000 records: every record goes to exactly one worker,
// a key never to two, each worker sees its keys in order, and the batch is
// answered at its end.
func TestFourWorkersSplitByKey(t *testing.T) {
	l := newWorkerLog()
	r := newRig(t, actors.FromProcessor(l.factory()))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, Workers: 4})
	r.sync()
	b := keyedBatch(1, 1, 1000, 64)
	p := r.processed(b)
	if p.Err != nil || p.Checkpoint.Mode != messages.AtBatchEnd {
		t.Fatalf("answer %+v, want a checkpoint at the batch's end", p)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.values != 4 {
		t.Fatalf("%d values made, want 4", l.values)
	}
	seen := map[string]int{}
	keyWorker := map[string]int{}
	for w, recs := range l.byValue {
		last := map[string]string{}
		for _, rec := range recs {
			seen[rec.SequenceNumber]++
			if o, ok := keyWorker[rec.PartitionKey]; ok && o != w {
				t.Fatalf("key %s went to workers %d and %d", rec.PartitionKey, o, w)
			}
			keyWorker[rec.PartitionKey] = w
			if prev := last[rec.PartitionKey]; prev >= rec.SequenceNumber {
				t.Fatalf("key %s out of order in worker %d", rec.PartitionKey, w)
			}
			last[rec.PartitionKey] = rec.SequenceNumber
		}
	}
	for _, rec := range b.Records {
		if seen[rec.SequenceNumber] != 1 {
			t.Fatalf("record %s processed %d times", rec.SequenceNumber, seen[rec.SequenceNumber])
		}
	}
	if len(l.byValue) != 4 {
		t.Fatalf("%d workers got records, want 4", len(l.byValue))
	}
}

// One key failing in one worker: the answer names its first record; the
// redelivery from there gives the failed worker its records again, and no
// other record to any worker.
func TestOneWorkerFailsTheOthersAreNotRepeated(t *testing.T) {
	l := newWorkerLog()
	failing := true
	l.fail = func(r messages.Record) bool { return failing && r.PartitionKey == "k5" }
	r := newRig(t, actors.FromProcessor(l.factory()))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, Workers: 4})
	b := keyedBatch(1, 1, 200, 16)
	p := r.processed(b)
	if len(p.Failed) != 1 || p.Failed[0].SequenceNumber != b.Records[5].SequenceNumber {
		t.Fatalf("answer %+v, want Failed naming record 5 (the first of key k5)", p)
	}
	failing = false
	again := b
	again.BatchID, again.Records = 2, b.Records[5:]
	if p := r.processed(again); p.Err != nil || p.Checkpoint.Mode != messages.AtBatchEnd {
		t.Fatalf("redelivery answer %+v", p)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	count := map[string]int{}
	for _, recs := range l.byValue {
		for _, rec := range recs {
			count[rec.SequenceNumber]++
		}
	}
	for i, rec := range b.Records {
		if count[rec.SequenceNumber] != 1 {
			t.Fatalf("record %d (key %s) processed %d times, want 1", i, rec.PartitionKey, count[rec.SequenceNumber])
		}
	}
}

// A panic in one worker restarts the adapter: the batch delivered again
// is processed by fresh values.
func TestWorkerPanicRestartsWithFreshValues(t *testing.T) {
	l := newWorkerLog()
	b := keyedBatch(1, 1, 100, 8)
	l.panicOn = b.Records[50].SequenceNumber
	r := newRig(t, actors.FromProcessor(l.factory()))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, Workers: 3})
	r.sys.Root.Send(r.child, b)
	checkPanics := func() bool { return len(r.panics()) == 1 }
	for range 500 {
		if checkPanics() {
			break
		}
		r.sync()
	}
	if !checkPanics() {
		t.Fatalf("panics %v, want 1", r.panics())
	}
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, Workers: 3, Restarted: true})
	if p := r.processed(b); p.Err != nil {
		t.Fatalf("after the restart: %+v", p)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.values != 6 {
		t.Fatalf("%d values made, want 3 and 3 fresh ones", l.values)
	}
}

// Shutdown asks every worker, and answers at the end when all of them
// checkpoint there.
func TestShutdownAsksEveryWorker(t *testing.T) {
	l := newWorkerLog()
	r := newRig(t, actors.FromProcessor(l.factory()))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, Workers: 3})
	r.processed(keyedBatch(1, 1, 30, 9))
	ack, ok := r.ask(messages.ShutdownRequested{ShardID: shard}).(messages.ShutdownAck)
	if !ok || ack.Checkpoint.Mode != messages.AtBatchEnd {
		t.Fatalf("ack %+v, want batch-end", ack)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.shut) != 3 {
		t.Fatalf("%d workers asked to shut down, want 3", len(l.shut))
	}
}

// A function reports a partial failure with FailRecords, with one worker
// or several.
func TestFuncProcessorFailRecords(t *testing.T) {
	for _, workers := range []int{1, 4} {
		var mu sync.Mutex
		calls := 0
		r := newRig(t, actors.FuncProcessor(func(_ context.Context, b messages.Batch) error {
			mu.Lock()
			calls++
			mu.Unlock()
			for _, rec := range b.Records {
				if rec.PartitionKey == "k2" {
					return actors.FailRecords(rec.Pos())
				}
			}
			return nil
		}))
		r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, Workers: workers})
		b := keyedBatch(1, 1, 12, 4)
		p := r.processed(b)
		if len(p.Failed) != 1 || p.Failed[0] != b.Records[2].Pos() {
			t.Fatalf("workers %d: answer %+v, want Failed naming record 2", workers, p)
		}
		if err := actors.FailRecords(); err == nil || errors.As(err, new(*actors.BatchItemFailures)) && err.Error() == "" {
			t.Fatal("FailRecords() must be an error")
		}
	}
}
