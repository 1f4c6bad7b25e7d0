package actors

import (
	"errors"
	"fmt"
	"testing"

	"github.com/kinactor/kinactor/messages"
)

func seqN(n int) string { return fmt.Sprintf("%056d", n) }

// keyFor returns a partition key whose worker of n is w.
func keyFor(w, n int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("key-%d", i); WorkerOf(k, n) == w {
			return k
		}
	}
}

// mkBatch returns records from..from+len(workers)-1, record i given to
// worker workers[i] (of n).
func mkBatch(id uint64, from int, n int, workers ...int) messages.Batch {
	b := messages.Batch{ShardID: "s", BatchID: id, Attempt: 1}
	for i, w := range workers {
		b.Records = append(b.Records, messages.Record{SequenceNumber: seqN(from + i), PartitionKey: keyFor(w, n)})
	}
	return b
}

func TestWorkerOfIsStable(t *testing.T) {
	// Fixed values: the routing must not change between versions or nodes.
	for k, want := range map[string]int{"a": WorkerOf("a", 8), "k7": WorkerOf("k7", 8)} {
		for range 3 {
			if got := WorkerOf(k, 8); got != want {
				t.Fatalf("WorkerOf(%q) = %d then %d", k, want, got)
			}
		}
	}
	if WorkerOf("anything", 1) != 0 || WorkerOf("anything", 0) != 0 {
		t.Fatal("one worker: always 0")
	}
	seen := map[int]bool{}
	for i := range 1000 {
		seen[WorkerOf(fmt.Sprint("k", i), 10)] = true
	}
	if len(seen) != 10 {
		t.Fatalf("1000 keys reach %d of 10 workers", len(seen))
	}
}

var (
	end  = messages.CheckpointBatchEnd()
	none = messages.Checkpoint{}
)

func at(n int) messages.Checkpoint { return messages.CheckpointAt(seqN(n), 0) }

// The combined checkpoint is never ahead of a record some worker has not
// covered, by table.
func TestCombinedCheckpoint(t *testing.T) {
	cases := []struct {
		name    string
		workers []int                 // worker of records 1..
		cps     []messages.Checkpoint // per worker (of 3)
		want    string
	}{
		{"all batch end", []int{0, 1, 2, 0, 1, 2}, []messages.Checkpoint{end, end, end}, "batch-end"},
		{"one holds its first record", []int{0, 1, 2, 0, 1, 2}, []messages.Checkpoint{end, none, end}, at(1).String()},
		{"one holds from its second", []int{0, 1, 2, 0, 1, 2}, []messages.Checkpoint{end, at(2), end}, at(4).String()},
		{"the first record held", []int{0, 1, 2}, []messages.Checkpoint{none, end, end}, "none"},
		{"idle worker", []int{0, 0, 1}, []messages.Checkpoint{end, end, none}, "batch-end"},
		{"at its last record = all", []int{0, 1, 0}, []messages.Checkpoint{at(3), end, none}, "batch-end"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFanout(3)
			b := mkBatch(1, 1, 3, c.workers...)
			parts := f.split(b)
			outs := make([]outcome, 3)
			for w := range outs {
				outs[w] = outcome{res: Result{Checkpoint: c.cps[w]}}
			}
			p := f.combine(b, parts, outs)
			if p.Err != nil || len(p.Failed) > 0 {
				t.Fatalf("answer %+v", p)
			}
			if p.Checkpoint.String() != c.want {
				t.Fatalf("checkpoint %s, want %s", p.Checkpoint, c.want)
			}
		})
	}
}

// A worker holding records across batches: the checkpoint waits for it,
// then moves in one step when it covers them.
func TestCombinedCheckpointAcrossBatches(t *testing.T) {
	f := newFanout(2)
	b1 := mkBatch(1, 1, 2, 0, 1, 0, 1)
	p := f.combine(b1, f.split(b1), []outcome{{res: Result{Checkpoint: end}}, {res: Result{}}})
	if p.Checkpoint.String() != at(1).String() {
		t.Fatalf("batch 1: %s, want %s", p.Checkpoint, seqN(1))
	}
	b2 := mkBatch(2, 5, 2, 0, 1)
	p = f.combine(b2, f.split(b2), []outcome{{res: Result{Checkpoint: end}}, {res: Result{Checkpoint: at(4)}}})
	if p.Checkpoint.String() != at(5).String() {
		t.Fatalf("batch 2: %s, want %s (record 6 of worker 1 is not covered)", p.Checkpoint, seqN(5))
	}
	if got := f.shutdown([]messages.Checkpoint{none, end}); got.String() != "batch-end" {
		t.Fatalf("shutdown: %s, want batch-end", got)
	}
	f2 := newFanout(2)
	f2.combine(b1, f2.split(b1), []outcome{{res: Result{Checkpoint: end}}, {res: Result{}}})
	if got := f2.shutdown([]messages.Checkpoint{none, none}); got.String() != "none" {
		t.Fatalf("shutdown with worker 1 holding record 2: %s, want none (already reported %s)", got, seqN(1))
	}
	f3 := newFanout(2)
	f3.combine(b1, f3.split(b1), []outcome{{res: Result{Checkpoint: end}}, {res: Result{}}})
	if got := f3.shutdown([]messages.Checkpoint{none, at(2)}); got.String() != at(3).String() {
		t.Fatalf("shutdown with worker 1 covering record 2: %s, want %s", got, seqN(3))
	}
}

// A worker that fails: when the failed record is known (named, or alone in
// its part) the answer names it; the others' later records are not given
// to a worker again.
func TestFailureInOneWorker(t *testing.T) {
	f := newFanout(2)
	b := mkBatch(1, 1, 2, 0, 0, 1, 0, 1, 1) // w0: 1,2,4  w1: 3,5,6
	parts := f.split(b)
	// worker 1 fails at record 5 (named); worker 0 succeeds.
	p := f.combine(b, parts, []outcome{{res: Result{Checkpoint: end}}, {res: Result{Failed: []messages.Position{{SequenceNumber: seqN(5)}}}}})
	if len(p.Failed) != 1 || p.Failed[0].SequenceNumber != seqN(5) || p.Err != nil {
		t.Fatalf("answer %+v, want Failed [5]", p)
	}
	// The shard delivers again from 5: 5 and 6 (worker 1) only.
	b2 := messages.Batch{ShardID: "s", BatchID: 2, Records: b.Records[4:]}
	parts = f.split(b2)
	if len(parts[0]) != 0 || len(parts[1]) != 2 {
		t.Fatalf("redelivery parts %d/%d, want 0/2", len(parts[0]), len(parts[1]))
	}
	p = f.combine(b2, parts, []outcome{{}, {res: Result{Checkpoint: end}}})
	if p.Checkpoint.String() != "batch-end" {
		t.Fatalf("after the redelivery: %s, want batch-end", p.Checkpoint)
	}

	// An error of a worker with several records: the culprit is unknown,
	// the batch fails whole; what succeeded is remembered.
	f = newFanout(2)
	b = mkBatch(1, 1, 2, 0, 1, 0, 1)
	parts = f.split(b)
	p = f.combine(b, parts, []outcome{{res: Result{Checkpoint: end}}, {err: errors.New("sink down")}})
	if p.Err == nil || len(p.Failed) > 0 {
		t.Fatalf("answer %+v, want Err", p)
	}
	parts = f.split(b)
	if len(parts[0]) != 0 || len(parts[1]) != 2 {
		t.Fatalf("the same batch again: parts %d/%d, want 0/2", len(parts[0]), len(parts[1]))
	}
	// An error of a worker with one record: that record is the culprit.
	f = newFanout(2)
	b = mkBatch(1, 1, 2, 0, 0, 1, 0)
	p = f.combine(b, f.split(b), []outcome{{res: Result{Checkpoint: end}}, {err: errors.New("poison")}})
	if len(p.Failed) != 1 || p.Failed[0].SequenceNumber != seqN(3) {
		t.Fatalf("answer %+v, want Failed [3]", p)
	}
	// A named position not in the worker's part.
	f = newFanout(2)
	b = mkBatch(1, 1, 2, 0, 1)
	p = f.combine(b, f.split(b), []outcome{{res: Result{Failed: []messages.Position{{SequenceNumber: seqN(2)}}}}, {}})
	if p.Err == nil {
		t.Fatalf("answer %+v, want an error naming %s", p, seqN(2))
	}
}

// A record the shard gave up on (dead-lettered after its attempts) does
// not hold the checkpoint back: the next delivery starts after it, and the
// adapter forgets it.
func TestGivenUpRecordDoesNotHoldTheCheckpoint(t *testing.T) {
	f := newFanout(2)
	b := mkBatch(1, 1, 2, 0, 1, 0, 0) // w1 has record 2 alone
	p := f.combine(b, f.split(b), []outcome{{res: Result{Checkpoint: end}}, {err: errors.New("poison")}})
	if len(p.Failed) != 1 || p.Failed[0].SequenceNumber != seqN(2) {
		t.Fatalf("answer %+v, want Failed [2]", p)
	}
	// The shard dead-letters record 2 and delivers 3..4 (done already),
	// then a new batch 5..6.
	rest := messages.Batch{ShardID: "s", BatchID: 2, Records: b.Records[2:]}
	parts := f.split(rest)
	if len(parts[0])+len(parts[1]) != 0 {
		t.Fatalf("records 3 and 4 given to a worker again: %v", parts)
	}
	p = f.combine(rest, parts, make([]outcome, 2))
	if p.Checkpoint.String() != "batch-end" {
		t.Fatalf("after the dead-letter: %s, want batch-end", p.Checkpoint)
	}
	b3 := mkBatch(3, 5, 2, 1, 0)
	if p = f.combine(b3, f.split(b3), []outcome{{res: Result{Checkpoint: end}}, {res: Result{Checkpoint: end}}}); p.Checkpoint.String() != "batch-end" {
		t.Fatalf("next batch: %s, want batch-end", p.Checkpoint)
	}
}
