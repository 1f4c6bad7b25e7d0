package actors_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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
	errKey  string                       // a part holding this key fails with an error, once
	shut    map[int]bool
}

func (w *worker) ProcessRecords(_ context.Context, b messages.Batch) (actors.Result, error) {
	l := w.log
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.errKey != "" {
		for _, r := range b.Records {
			if r.PartitionKey == l.errKey {
				l.errKey = ""
				return actors.Result{}, errors.New("sink down")
			}
		}
	}
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
	// Every record of the batch, processed again by the fresh values.
	fresh := 0
	for id, recs := range l.byValue {
		if id > 3 {
			fresh += len(recs)
		}
	}
	if fresh != len(b.Records) {
		t.Fatalf("the fresh values processed %d records, want the batch's %d", fresh, len(b.Records))
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
	}
	// Naming no record is an ordinary error: the whole batch failed.
	r := newRig(t, actors.FuncProcessor(func(context.Context, messages.Batch) error { return actors.FailRecords() }))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard})
	if p := r.processed(keyedBatch(1, 1, 3, 3)); p.Err == nil || len(p.Failed) > 0 {
		t.Fatalf("FailRecords(): answer %+v, want Err", p)
	}
	var f *actors.BatchItemFailures
	if err := fmt.Errorf("wrapped: %w", actors.FailRecords(messages.Position{SequenceNumber: "7"})); !errors.As(err, &f) || len(f.Records) != 1 || f.Error() == "" {
		t.Fatalf("errors.As(%v) = %v", err, f)
	}
}

// An error of a worker with several records fails the whole batch (which
// of them failed is not known); the same batch delivered again gives the
// failed worker its records, and no other record to any worker. A worker
// with one record that fails has that record named.
func TestAnErrorInOneWorker(t *testing.T) {
	l := newWorkerLog()
	l.errKey = "k5"
	r := newRig(t, actors.FromProcessor(l.factory()))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, Workers: 4})
	b := keyedBatch(1, 1, 200, 16)
	if p := r.processed(b); p.Err == nil || len(p.Failed) > 0 {
		t.Fatalf("answer %+v, want Err", p)
	}
	b.Attempt++
	if p := r.processed(b); p.Err != nil || p.Checkpoint.Mode != messages.AtBatchEnd {
		t.Fatalf("the same batch again: answer %+v, want batch-end", p)
	}
	l.mu.Lock()
	count := map[string]int{}
	for _, recs := range l.byValue {
		for _, rec := range recs {
			count[rec.SequenceNumber]++
		}
	}
	l.mu.Unlock()
	for i, rec := range b.Records {
		if count[rec.SequenceNumber] != 1 {
			t.Fatalf("record %d (key %s) processed %d times, want 1", i, rec.PartitionKey, count[rec.SequenceNumber])
		}
	}

	// One record per key, 4 keys on 4 workers (if they spread so): the
	// failed record is known.
	var keys []string
	seen := map[int]bool{}
	for i := 0; len(keys) < 4; i++ {
		if k := fmt.Sprint("key-", i); !seen[actors.WorkerOf(k, 4)] {
			seen[actors.WorkerOf(k, 4)] = true
			keys = append(keys, k)
		}
	}
	l = newWorkerLog()
	l.errKey = keys[2]
	r = newRig(t, actors.FromProcessor(l.factory()))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, Workers: 4})
	b = messages.Batch{ShardID: shard, BatchID: 1, Attempt: 1}
	for i, k := range keys {
		b.Records = append(b.Records, messages.Record{SequenceNumber: fmt.Sprintf("%056d", i+1), PartitionKey: k})
	}
	if p := r.processed(b); p.Err != nil || len(p.Failed) != 1 || p.Failed[0] != b.Records[2].Pos() {
		t.Fatalf("answer %+v, want Failed naming record 2", p)
	}
}

// The workers of a batch run at once: each waits for all of them.
func TestWorkersRunAtOnce(t *testing.T) {
	const n = 4
	var started sync.WaitGroup
	started.Add(n)
	all := make(chan struct{})
	go func() { started.Wait(); close(all) }()
	var calls sync.Map
	r := newRig(t, actors.FromProcessor(func(string) actors.Processor {
		return fn(func(ctx context.Context, b messages.Batch) (actors.Result, error) {
			if _, again := calls.LoadOrStore(b.Records[0].PartitionKey, true); !again {
				started.Done()
			}
			select {
			case <-all:
				return actors.Result{Checkpoint: messages.CheckpointBatchEnd()}, nil
			case <-ctx.Done():
				return actors.Result{}, ctx.Err()
			}
		})
	}))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, Workers: n})
	b := keyedBatch(1, 1, 400, 64)
	b.Deadline = time.Now().Add(4 * time.Second)
	if p := r.processed(b); p.Err != nil || p.Checkpoint.Mode != messages.AtBatchEnd {
		t.Fatalf("answer %+v: the workers did not run at once", p)
	}
}

// Result.Failed naming a record that is not in the worker's batch fails
// the whole batch with an error naming it.
func TestWorkerNamesARecordNotInItsBatch(t *testing.T) {
	r := newRig(t, actors.FromProcessor(func(string) actors.Processor {
		return fn(func(_ context.Context, b messages.Batch) (actors.Result, error) {
			return actors.Result{Failed: []messages.Position{{SequenceNumber: "99"}}}, nil
		})
	}))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, Workers: 3})
	p := r.processed(keyedBatch(1, 1, 30, 9))
	if p.Err == nil || !strings.Contains(p.Err.Error(), "Result.Failed names 99, not a record of the batch") {
		t.Fatalf("answer %+v, want an error naming 99", p)
	}
}

// Initialize, ShardEnded, LeaseLost and CheckpointRefused reach every
// worker's value, one after the other; an Initialize that failed is called
// again, on that value only, before the next batch.
func TestOptionalInterfacesOnEveryWorker(t *testing.T) {
	var j journal
	r := newRig(t, actors.FromProcessor(j.factory(func(n int) actors.Processor {
		p := &full{j: &j, n: n}
		if n == 2 {
			p.failInit = 2
		}
		return p
	})))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, StartingCheckpoint: "7", Workers: 3})
	if p := r.processed(keyedBatch(1, 1, 30, 9)); p.Err == nil {
		t.Fatalf("batch after a failed Initialize of worker 2: %+v, want Err", p)
	}
	b := keyedBatch(2, 1, 30, 9)
	if p := r.processed(b); p.Err != nil {
		t.Fatalf("batch after Initialize succeeded: %+v", p)
	}
	r.sys.Root.Send(r.child, messages.CheckpointRefused{ShardID: shard, BatchID: 2, Err: errors.New("backwards")})
	r.sys.Root.Send(r.child, messages.ShardEnded{ShardID: shard})
	r.sys.Root.Send(r.child, messages.LeaseLost{ShardID: shard})
	r.sync()
	var got []string
	for _, c := range j.got() {
		if !strings.Contains(c, " batch ") {
			got = append(got, c)
		}
	}
	want := []string{
		"1 initialize 7 restarted=false", "2 initialize 7 restarted=false", "3 initialize 7 restarted=false",
		"2 initialize 7 restarted=false", // fails again, before batch 1
		"2 initialize 7 restarted=false", // succeeds, before batch 2
		"1 refused 2: backwards", "2 refused 2: backwards", "3 refused 2: backwards",
		"1 shard ended []", "2 shard ended []", "3 shard ended []",
		"1 lease lost " + shard, "2 lease lost " + shard, "3 lease lost " + shard,
	}
	if !slices.Equal(got, want) {
		t.Errorf("calls\n%q\nwant\n%q", got, want)
	}
	if vs := j.values(); len(vs) != 3 {
		t.Errorf("%d values made, want 3", len(vs))
	}
}

// Workers 0 and 1 keep the single value: one newProcessor call, the whole
// batch to it.
func TestOneWorkerIsTheSingleValue(t *testing.T) {
	for _, workers := range []int{0, 1} {
		l := newWorkerLog()
		r := newRig(t, actors.FromProcessor(l.factory()))
		r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, Workers: workers})
		b := keyedBatch(1, 1, 50, 10)
		if p := r.processed(b); p.Err != nil || p.Checkpoint.Mode != messages.AtBatchEnd {
			t.Fatalf("workers %d: answer %+v", workers, p)
		}
		l.mu.Lock()
		if l.values != 1 || len(l.byValue[1]) != len(b.Records) {
			t.Fatalf("workers %d: %d values, the first given %d records, want 1 given %d", workers, l.values, len(l.byValue[1]), len(b.Records))
		}
		l.mu.Unlock()
	}
}

// holder checkpoints nothing in ProcessRecords, and at shutdown what
// shutdownAt says.
type holder struct{ shutdownAt messages.Checkpoint }

func (holder) ProcessRecords(context.Context, messages.Batch) (actors.Result, error) {
	return actors.Result{}, nil
}

func (h holder) Shutdown(context.Context, messages.ShutdownRequested) messages.Checkpoint {
	return h.shutdownAt
}

// Shutdown with 3 workers: the ack is combined from each worker's
// checkpoints as a batch's answer is, never ahead of a record that a worker
// has not covered.
func TestShutdownCombinesTheWorkersCheckpoints(t *testing.T) {
	keys := make([]string, 3)
	for i, found := 0, 0; found < 3; i++ {
		if k := fmt.Sprint("key-", i); keys[actors.WorkerOf(k, 3)] == "" {
			keys[actors.WorkerOf(k, 3)] = k
			found++
		}
	}
	seq := func(i int) string { return fmt.Sprintf("%056d", i) }
	b := messages.Batch{ShardID: shard, BatchID: 1, Attempt: 1}
	for i := 1; i <= 9; i++ { // worker 0: 1,4,7  worker 1: 2,5,8  worker 2: 3,6,9
		b.Records = append(b.Records, messages.Record{SequenceNumber: seq(i), PartitionKey: keys[(i-1)%3]})
	}
	for _, c := range []struct {
		name       string
		shutdownAt messages.Checkpoint // worker 1's
		want       messages.Checkpoint
	}{
		{"worker 1 covers all", messages.CheckpointBatchEnd(), messages.CheckpointBatchEnd()},
		{"worker 1 covers up to 5", messages.CheckpointAt(seq(5), 0), messages.CheckpointAt(seq(7), 0)},
		{"worker 1 covers nothing", messages.Checkpoint{}, messages.Checkpoint{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			made := 0
			r := newRig(t, actors.FromProcessor(func(string) actors.Processor {
				made++ // made in the actor's goroutine, in worker order
				if made%3 == 2 {
					return holder{shutdownAt: c.shutdownAt}
				}
				return fn(func(context.Context, messages.Batch) (actors.Result, error) {
					return actors.Result{Checkpoint: messages.CheckpointBatchEnd()}, nil
				})
			}))
			r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, Workers: 3})
			if p := r.processed(b); p.Err != nil || p.Checkpoint != messages.CheckpointAt(seq(1), 0) {
				t.Fatalf("batch answered %+v, want a checkpoint at record 1 (worker 1 holds record 2)", p)
			}
			ack, ok := r.ask(messages.ShutdownRequested{ShardID: shard}).(messages.ShutdownAck)
			if !ok || ack.Checkpoint != c.want {
				t.Fatalf("ShutdownAck %+v, want %s", ack, c.want)
			}
		})
	}
}
