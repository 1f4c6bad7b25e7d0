package actors

import (
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strings"
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

// A named position that is not a record of its worker's part fails the
// whole batch with an error naming it; what the other workers processed is
// remembered all the same.
func TestNamedPositionNotInThePart(t *testing.T) {
	f := newFanout(2)
	b := mkBatch(1, 1, 2, 0, 1, 0, 1)
	stranger := messages.Position{SequenceNumber: seqN(99)}
	p := f.combine(b, f.split(b), []outcome{{res: Result{Checkpoint: end}}, {res: Result{Failed: []messages.Position{stranger}}}})
	if p.Err == nil || len(p.Failed) > 0 || !strings.Contains(p.Err.Error(), "actors: Result.Failed names "+seqN(99)+", not a record of the batch") {
		t.Fatalf("answer %+v, want an error naming %s", p, seqN(99))
	}
	// A record of the batch, but of the other worker's part, is no better.
	f = newFanout(2)
	p = f.combine(b, f.split(b), []outcome{{res: Result{Checkpoint: end}}, {res: Result{Failed: []messages.Position{b.Records[0].Pos()}}}})
	if p.Err == nil || !strings.Contains(p.Err.Error(), seqN(1)) {
		t.Fatalf("answer %+v, want an error naming %s (worker 0's record)", p, seqN(1))
	}
	if parts := f.split(b); len(parts[0]) != 0 || len(parts[1]) != 2 {
		t.Fatalf("the same batch again: parts %d/%d, want 0/2 (worker 0's records done)", len(parts[0]), len(parts[1]))
	}
}

// Processed.Failed names F first, then the other workers' failure points,
// in batch order.
func TestFailedListsEveryFailurePoint(t *testing.T) {
	f := newFanout(3)
	b := mkBatch(1, 1, 3, 0, 1, 2, 0, 1, 2) // w0: 1,4  w1: 2,5  w2: 3,6
	p := f.combine(b, f.split(b), []outcome{
		{res: Result{Checkpoint: end}},
		{res: Result{Failed: []messages.Position{{SequenceNumber: seqN(5)}}}},
		{res: Result{Failed: []messages.Position{{SequenceNumber: seqN(6)}, {SequenceNumber: seqN(3)}}}},
	})
	var got []string
	for _, q := range p.Failed {
		got = append(got, q.SequenceNumber)
	}
	if want := []string{seqN(3), seqN(5)}; p.Err != nil || !slices.Equal(got, want) {
		t.Fatalf("answer %+v, want Failed %v", p, want)
	}
}

// With a bisect, records after the part delivered may be covered already
// (delivered before, in the whole batch): the checkpoint stays at the
// part's end, where the shard has acknowledged.
func TestCheckpointNotBeyondThePart(t *testing.T) {
	f := newFanout(2)
	b := mkBatch(1, 1, 2, 0, 1, 1, 0, 0) // w0: 1,4,5  w1: 2,3
	p := f.combine(b, f.split(b), []outcome{{res: Result{Checkpoint: end}}, {err: errors.New("sink down")}})
	if p.Err == nil {
		t.Fatalf("answer %+v, want Err", p)
	}
	first := messages.Batch{ShardID: "s", BatchID: 2, Records: b.Records[:3]}
	p = f.combine(first, f.split(first), []outcome{{}, {res: Result{Checkpoint: end}}})
	if p.Checkpoint.String() != "batch-end" {
		t.Fatalf("first half: %s, want batch-end (of the half, not %s)", p.Checkpoint, seqN(5))
	}
	second := messages.Batch{ShardID: "s", BatchID: 3, Records: b.Records[3:]}
	if parts := f.split(second); len(parts[0])+len(parts[1]) != 0 {
		t.Fatalf("second half given to workers again: %v", parts)
	}
	if p = f.combine(second, f.split(second), make([]outcome, 2)); p.Checkpoint.String() != "batch-end" {
		t.Fatalf("second half: %s, want batch-end", p.Checkpoint)
	}
}

// simShard is a model of the shard machine's side of the protocol: it
// delivers the rest of a batch (with bisect, a part at a time), applies the
// answers as the shard does and checks each checkpoint it accepts.
type simShard struct {
	t       *testing.T
	recs    []messages.Record
	index   map[messages.Position]int
	target  int // index of the checkpoint (-1: none)
	maxSent int
	refused int
}

func (s *simShard) accept(cp messages.Checkpoint, part []messages.Record) {
	var i int
	switch cp.Mode {
	case messages.NoCheckpoint:
		return
	case messages.AtBatchEnd:
		i = s.index[part[len(part)-1].Pos()]
	default:
		var ok bool
		if i, ok = s.index[messages.Position{SequenceNumber: cp.SequenceNumber, SubSequenceNumber: cp.SubSequenceNumber}]; !ok {
			s.t.Fatalf("checkpoint %s at no record", cp)
		}
	}
	if i < s.target || i > s.maxSent {
		s.refused++
		return
	}
	s.target = i
}

// Simulated: random keys, random checkpoints (batch end, at a record of
// the worker's own, none), random failures (named records, errors), with
// and without bisect. Every record is processed exactly once, no
// checkpoint is refused, and every record at or before the checkpoint was
// processed and covered by its worker.
func TestFanoutSimulated(t *testing.T) {
	answers := map[string]int{}
	for seed := range int64(40) {
		for _, bisect := range []bool{false, true} {
			simulate(t, seed, bisect, answers)
		}
	}
	t.Logf("answers: %v", answers)
	for _, k := range []string{"err-held", "err", "failed", "batch-end", "at", "none"} {
		if answers[k] == 0 {
			t.Errorf("no answer %s simulated", k)
		}
	}
}

func simulate(t *testing.T, seed int64, bisect bool, answers map[string]int) {
	rnd := rand.New(rand.NewSource(seed))
	const n, total = 4, 400
	s := &simShard{t: t, index: map[messages.Position]int{}, target: -1, maxSent: -1}
	for i := range total {
		r := messages.Record{SequenceNumber: seqN(1000 + i), PartitionKey: fmt.Sprint("k", rnd.Intn(24))}
		if i > 0 && rnd.Intn(4) == 0 {
			// A user record of the same KPL aggregate as the one before.
			prev := s.recs[i-1]
			r.SequenceNumber, r.SubSequenceNumber = prev.SequenceNumber, prev.SubSequenceNumber+1
		}
		s.index[r.Pos()] = i
		s.recs = append(s.recs, r)
	}
	processed := make([]int, total)
	covered := make([]bool, total)
	acked := make([][]int, n) // per worker, in order
	f := newFanout(n)
	check := func(what string) {
		for j := 0; j <= s.target; j++ {
			if processed[j] == 0 || !covered[j] {
				t.Fatalf("seed %d bisect %v, %s: checkpoint at %d, but record %d processed %d times, covered %v", seed, bisect, what, s.target, j, processed[j], covered[j])
			}
		}
	}
	var id uint64
	for head := 0; head < total; {
		k := min(1+rnd.Intn(60), total-head)
		rest := s.recs[head : head+k]
		var split []int
		for rounds := 0; len(rest) > 0; rounds++ {
			if rounds > 10000 {
				t.Fatalf("seed %d: no progress", seed)
			}
			m := len(rest)
			if len(split) > 0 {
				m = min(split[len(split)-1], m)
			}
			part := rest[:m:m]
			id++
			b := messages.Batch{ShardID: "s", BatchID: id, Records: part}
			s.maxSent = max(s.maxSent, s.index[part[m-1].Pos()])
			parts := f.split(b)
			outs := make([]outcome, n)
			for w, pt := range parts {
				if len(pt) == 0 {
					continue
				}
				switch x := rnd.Intn(10); {
				case x == 0:
					outs[w].err = errors.New("failed")
				case x == 1:
					j := rnd.Intn(len(pt))
					for _, r := range pt[:j] {
						processed[s.index[r.Pos()]]++
						acked[w] = append(acked[w], s.index[r.Pos()])
					}
					outs[w].res.Failed = []messages.Position{pt[j].Pos()}
					// Naming it, the worker lets its records before it be
					// checkpointed.
					for _, i := range acked[w] {
						if i < s.index[pt[j].Pos()] {
							covered[i] = true
						}
					}
				default:
					for _, r := range pt {
						processed[s.index[r.Pos()]]++
						acked[w] = append(acked[w], s.index[r.Pos()])
					}
					switch rnd.Intn(3) {
					case 0:
						outs[w].res.Checkpoint = end
						for _, i := range acked[w] {
							covered[i] = true
						}
					case 1:
						q := pt[rnd.Intn(len(pt))]
						outs[w].res.Checkpoint = messages.CheckpointAt(q.SequenceNumber, q.SubSequenceNumber)
						for _, i := range acked[w] {
							if i <= s.index[q.Pos()] {
								covered[i] = true
							}
						}
					}
				}
			}
			p := f.combine(b, parts, outs)
			switch {
			case p.Err != nil && strings.Contains(p.Err.Error(), "has not checkpointed"):
				answers["err-held"]++
			case p.Err != nil:
				answers["err"]++
			case len(p.Failed) > 0:
				answers["failed"]++
			case p.Checkpoint.Mode == messages.AtBatchEnd:
				answers["batch-end"]++
			case p.Checkpoint.Mode == messages.AtSequence:
				answers["at"]++
			default:
				answers["none"]++
			}
			switch {
			case p.Err != nil:
				if bisect && m > 1 {
					first := (m + 1) / 2
					if len(split) > 0 {
						split = split[:len(split)-1]
					}
					split = append(split, m-first, first)
				}
			case len(p.Failed) > 0:
				i := len(part)
				for _, q := range p.Failed {
					j, ok := slices.BinarySearchFunc(part, q, func(r messages.Record, q messages.Position) int { return comparePos(r.Pos(), q) })
					if !ok {
						t.Fatalf("seed %d: Failed names %s, not in the part", seed, q)
					}
					i = min(i, j)
				}
				if i > 0 {
					s.accept(messages.CheckpointAt(part[i-1].SequenceNumber, part[i-1].SubSequenceNumber), part)
					check("after a partial failure")
					rest = rest[i:]
					if bisect && len(split) > 0 {
						split[len(split)-1] = m - i
					}
				}
				if bisect {
					if len(split) > 0 && split[len(split)-1] > 1 {
						split[len(split)-1]--
						split = append(split, 1)
					} else if len(split) == 0 && len(rest) > 1 {
						split = append(split, len(rest)-1, 1)
					}
				}
			default:
				s.accept(p.Checkpoint, part)
				check("after a batch")
				rest = rest[m:]
				if len(split) > 0 {
					split = split[:len(split)-1]
				}
			}
		}
		head += k
	}
	for i, c := range processed {
		if c != 1 {
			t.Fatalf("seed %d bisect %v: record %d processed %d times, want 1", seed, bisect, i, c)
		}
	}
	if s.refused > 0 {
		t.Fatalf("seed %d bisect %v: %d checkpoints refused", seed, bisect, s.refused)
	}
	// Shutdown: every worker checkpoints at its end.
	cp := f.shutdown(make([]messages.Checkpoint, n))
	s.accept(cp, s.recs)
	check("after a shutdown checkpointing nothing")
	if cp = f.shutdown([]messages.Checkpoint{end, end, end, end}); cp.String() != "batch-end" {
		t.Fatalf("seed %d bisect %v: shutdown with every worker at its end: %s, want batch-end", seed, bisect, cp)
	}
}

// BenchmarkFanout: split and combine of a batch of 10,000 records over 8
// workers, each checkpointing at its end (the adapter's own cost per
// batch, without the workers).
func BenchmarkFanout(b *testing.B) {
	const n, size = 8, 10000
	f := newFanout(n)
	outs := make([]outcome, n)
	for w := range outs {
		outs[w].res.Checkpoint = end
	}
	batches := make([]messages.Batch, 2)
	for i := range batches {
		batches[i] = messages.Batch{ShardID: "s", BatchID: uint64(i + 1)}
	}
	seq := 0
	b.ReportAllocs()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		bt := &batches[i%2]
		bt.Records = bt.Records[:0]
		for k := range size {
			seq++
			bt.Records = append(bt.Records, messages.Record{SequenceNumber: seqN(seq), PartitionKey: fmt.Sprint("k", k%64)})
		}
		b.StartTimer()
		if p := f.combine(*bt, f.split(*bt), outs); p.Checkpoint.Mode != messages.AtBatchEnd {
			b.Fatalf("answer %+v", p)
		}
		b.StopTimer()
	}
}

// A failure after a record that another worker holds (processed, not
// checkpointed by it) fails the batch whole: Failed would have the shard
// checkpoint that record. The record is not processed again.
func TestFailureAfterAHeldRecord(t *testing.T) {
	f := newFanout(2)
	b := mkBatch(1, 1, 2, 0, 1, 1) // w0: 1  w1: 2,3
	p := f.combine(b, f.split(b), []outcome{{res: Result{}}, {res: Result{Failed: []messages.Position{{SequenceNumber: seqN(3)}}}}})
	if p.Err == nil || len(p.Failed) > 0 || !strings.Contains(p.Err.Error(), "has not checkpointed record "+seqN(1)) {
		t.Fatalf("answer %+v, want Err naming the held record %s", p, seqN(1))
	}
	parts := f.split(b)
	if len(parts[0]) != 0 || len(parts[1]) != 1 || parts[1][0].SequenceNumber != seqN(3) {
		t.Fatalf("the same batch again: parts %v, want record 3 alone", parts)
	}
	// The failed record first in the batch: nothing is checkpointed, Failed.
	rest := messages.Batch{ShardID: "s", BatchID: 2, Records: b.Records[2:]}
	p = f.combine(rest, f.split(rest), []outcome{{}, {res: Result{Failed: []messages.Position{{SequenceNumber: seqN(3)}}}}})
	if p.Err != nil || len(p.Failed) != 1 || p.Failed[0].SequenceNumber != seqN(3) {
		t.Fatalf("answer %+v, want Failed [3]", p)
	}
	// The holder covers it: the checkpoint moves to record 2.
	again := messages.Batch{ShardID: "s", BatchID: 3, Records: append(b.Records[2:3:3], messages.Record{SequenceNumber: seqN(4), PartitionKey: keyFor(0, 2)})}
	p = f.combine(again, f.split(again), []outcome{{res: Result{Checkpoint: end}}, {res: Result{Failed: []messages.Position{{SequenceNumber: seqN(3)}}}}})
	if p.Err != nil || len(p.Failed) != 1 {
		t.Fatalf("answer %+v, want Failed [3]", p)
	}
	if got := f.shutdown([]messages.Checkpoint{none, none}); got.String() != at(2).String() {
		t.Fatalf("shutdown: %s, want %s", got, at(2))
	}
}
