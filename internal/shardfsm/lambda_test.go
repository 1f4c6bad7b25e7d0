package shardfsm

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

// kplRecs returns n user records of one aggregated record (sequence number
// seq(s), sub-sequence numbers 0..n-1).
func kplRecs(s, n int) []stream.Record {
	r := make([]stream.Record, n)
	for i := range r {
		r[i] = stream.Record{SequenceNumber: seq(s), SubSequenceNumber: int64(i), PartitionKey: fmt.Sprintf("k%d", i), Data: []byte("x")}
	}
	return r
}

func pos(s int, sub int64) messages.Position {
	return messages.Position{SequenceNumber: seq(s), SubSequenceNumber: sub}
}

// oneBatch answers the first fetch with recs, later ones with nothing.
func oneBatch(recs []stream.Record) func(*sim) Event {
	first := true
	return func(*sim) Event {
		if first {
			first = false
			return FetchSucceeded{Batch: stream.Batch{Records: recs, NextIterator: "it"}}
		}
		return FetchSucceeded{Batch: stream.Batch{NextIterator: "it"}}
	}
}

func checkpoints(effs []Effect) []lease.Checkpoint {
	var cps []lease.Checkpoint
	for _, e := range effs {
		if wc, ok := e.(WriteCheckpoint); ok {
			cps = append(cps, wc.Checkpoint)
		}
	}
	return cps
}

// Partial batch failures by table: where the checkpoint goes and where
// delivery resumes, including inside a KPL aggregate.
func TestPartialFailurePositions(t *testing.T) {
	plain := recs(1, 5)                                                // 1..5
	agg := append(append(recs(1, 2), kplRecs(3, 4)...), recs(4, 2)...) // 1,2,3/0..3,4,5
	cases := []struct {
		name       string
		batch      []stream.Record
		failed     []messages.Position
		checkpoint string            // written after the answer ("" none)
		resume     messages.Position // first record of the next delivery
		wantErr    string            // the whole batch failed with this
	}{
		{"middle", plain, []messages.Position{pos(3, 0)}, seq(2), pos(3, 0), ""},
		{"first", plain, []messages.Position{pos(1, 0)}, "", pos(1, 0), ""},
		{"last", plain, []messages.Position{pos(5, 0)}, seq(4), pos(5, 0), ""},
		{"several, out of order: the first in batch order", plain, []messages.Position{pos(5, 0), pos(2, 0), pos(4, 0)}, seq(1), pos(2, 0), ""},
		{"inside an aggregate", agg, []messages.Position{pos(3, 2)}, seq(3) + "/1", pos(3, 2), ""},
		{"first user record of an aggregate", agg, []messages.Position{pos(3, 0)}, seq(2), pos(3, 0), ""},
		{"not in the batch", plain, []messages.Position{pos(9, 0)}, "", pos(1, 0), seq(9) + " (the batch holds 5 records"},
		{"unknown sub-sequence", agg, []messages.Position{pos(3, 7)}, "", pos(1, 0), seq(3) + "/7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := simConfig()
			cfg.CheckpointInterval = 0
			s := newSim(t, cfg, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
			s.fetch = oneBatch(c.batch)
			n := 0
			s.process = func(_ *sim, b messages.Batch) (Event, bool) {
				n++
				if n == 1 {
					return ProcessorReplied{Reply: messages.Processed{BatchID: b.BatchID, Checkpoint: messages.CheckpointBatchEnd(), Failed: c.failed}}, true
				}
				return nil, false // hold the second delivery: we look at it
			}
			s.step(Start{})
			s.run(t0.Add(time.Minute))
			if len(s.delivered) != 2 {
				t.Fatalf("%d deliveries, want 2", len(s.delivered))
			}
			var got []string
			for _, cp := range checkpoints(s.effects) {
				got = append(got, fmtCP(cp))
			}
			want := []string(nil)
			if c.checkpoint != "" {
				want = []string{c.checkpoint}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("checkpoints %v, want %v", got, want)
			}
			second := s.delivered[1]
			if second.Records[0].Pos() != c.resume {
				t.Fatalf("delivery resumed at %s, want %s", second.Records[0].Pos(), c.resume)
			}
			if last := second.Records[len(second.Records)-1].Pos(); last != c.batch[len(c.batch)-1].Pos() {
				t.Fatalf("second delivery ends at %s, want the batch's last record", last)
			}
			if second.Attempt != 2 {
				t.Fatalf("second delivery's attempt %d, want 2", second.Attempt)
			}
			var failure error
			for _, e := range s.effects {
				if f, ok := e.(ProcessorFailure); ok {
					failure = f.Err
				}
			}
			if c.wantErr != "" {
				if failure == nil || !errors.Is(failure, ErrFailedNotInBatch) || !strings.Contains(failure.Error(), c.wantErr) {
					t.Fatalf("failure %v, want ErrFailedNotInBatch naming %q", failure, c.wantErr)
				}
			}
		})
	}
}

// poisonRun delivers one batch of n records (64 keys) in which the record
// at index p fails every delivery it is part of, with BisectOnError and the
// dead-letter policy. It returns how often each record was processed, the
// failed deliveries, all deliveries, and what was dead-lettered.
type poisonResult struct {
	processed          map[string]int
	order              map[string][]string // key -> sequence numbers processed, in order
	failed, deliveries int
	deadLettered       []messages.Record
	lastCheckpoint     lease.Checkpoint
	finished           *Finished
}

func poisonRun(t testing.TB, n, p, attempts int, bisect bool) poisonResult {
	cfg := simConfig()
	cfg.CheckpointInterval = 0
	cfg.FailurePolicy = DeadLetter
	cfg.MaxProcessorAttempts = attempts
	cfg.BisectOnError = bisect
	batch := recs(1, n)
	for i := range batch {
		batch[i].PartitionKey = fmt.Sprintf("k%d", i%64)
	}
	poison := batch[p].Pos()
	s := newSim(t, cfg, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	s.fetch = oneBatch(batch)
	r := poisonResult{processed: map[string]int{}, order: map[string][]string{}}
	s.process = func(_ *sim, b messages.Batch) (Event, bool) {
		r.deliveries++
		for _, rec := range b.Records {
			if rec.Pos() == poison {
				r.failed++
				return ProcessorReplied{Reply: messages.Processed{BatchID: b.BatchID, Err: errors.New("poison")}}, true
			}
		}
		for _, rec := range b.Records {
			r.processed[rec.SequenceNumber]++
			r.order[rec.PartitionKey] = append(r.order[rec.PartitionKey], rec.SequenceNumber)
		}
		return ProcessorReplied{Reply: messages.Processed{BatchID: b.BatchID, Checkpoint: messages.CheckpointBatchEnd()}}, true
	}
	s.step(Start{})
	s.run(t0.Add(time.Hour))
	for _, e := range s.effects {
		if dl, ok := e.(DeadLetterBatch); ok {
			r.deadLettered = append(r.deadLettered, dl.Batch.Records...)
		}
	}
	if cps := checkpoints(s.effects); len(cps) > 0 {
		r.lastCheckpoint = cps[len(cps)-1]
	}
	r.finished = s.finished
	return r
}

// One poison record in a batch of 1,000 with bisect: every other record is
// processed exactly once and in key order, the poison record reaches the
// dead-letter handler after MaxProcessorAttempts deliveries on its own, and
// the failed deliveries are at most ceil(log2(1000)) + attempts.
func TestBisectIsolatesPoisonRecord(t *testing.T) {
	const n, attempts = 1000, 3
	bound := int(math.Ceil(math.Log2(n))) + attempts
	for _, p := range []int{0, 1, 499, 500, 501, 737, 998, 999} {
		t.Run(fmt.Sprint("poison at ", p), func(t *testing.T) {
			r := poisonRun(t, n, p, attempts, true)
			for i := range n {
				s := seq(1 + i)
				want := 1
				if i == p {
					want = 0
				}
				if r.processed[s] != want {
					t.Fatalf("record %d processed %d times, want %d", i, r.processed[s], want)
				}
			}
			for k, seqs := range r.order {
				for i := 1; i < len(seqs); i++ {
					if seqs[i] <= seqs[i-1] {
						t.Fatalf("key %s out of order: %s after %s", k, seqs[i], seqs[i-1])
					}
				}
			}
			if len(r.deadLettered) != 1 || r.deadLettered[0].SequenceNumber != seq(1+p) {
				t.Fatalf("dead-lettered %d records (%v), want only the poison record", len(r.deadLettered), r.deadLettered)
			}
			if r.failed > bound {
				t.Fatalf("%d failed deliveries, want at most ceil(log2(%d)) + %d = %d", r.failed, n, attempts, bound)
			}
			if r.lastCheckpoint.SequenceNumber != seq(n) {
				t.Fatalf("last checkpoint %v, want the batch's last record %s", r.lastCheckpoint, seq(n))
			}
			t.Logf("poison at %d: %d failed deliveries, %d in all", p, r.failed, r.deliveries)
		})
	}
}

// Without bisect the whole batch fails together: after MaxProcessorAttempts
// it is dead-lettered whole, as before.
func TestPoisonWithoutBisectDeadLettersTheBatch(t *testing.T) {
	r := poisonRun(t, 100, 40, 3, false)
	if r.failed != 3 || len(r.deadLettered) != 100 {
		t.Fatalf("%d failed deliveries and %d records dead-lettered, want 3 and 100", r.failed, len(r.deadLettered))
	}
}

// MaxProcessorAttempts counts per record: the poison record isolated by
// bisect is delivered on its own exactly MaxProcessorAttempts times.
func TestMaxAttemptsPerRecordAfterBisect(t *testing.T) {
	for _, attempts := range []int{1, 2, 5} {
		r := poisonRun(t, 64, 17, attempts, true)
		alone := r.failed - 6 // 64 → 32 → 16 → 8 → 4 → 2 → 1: 6 failed splits
		if alone != attempts {
			t.Fatalf("attempts %d: poison delivered alone %d times (failed %d in all), want %d", attempts, alone, r.failed, attempts)
		}
	}
}

// A partial failure that keeps naming the same record counts against that
// record only: after MaxProcessorAttempts it alone is dead-lettered, and
// the records after it are processed.
func TestPartialFailureAttemptsPerRecord(t *testing.T) {
	cfg := simConfig()
	cfg.CheckpointInterval = 0
	cfg.FailurePolicy = DeadLetter
	cfg.MaxProcessorAttempts = 3
	s := newSim(t, cfg, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	s.fetch = oneBatch(recs(1, 10))
	done := map[string]int{}
	s.process = func(_ *sim, b messages.Batch) (Event, bool) {
		var failed []messages.Position
		for _, r := range b.Records {
			if r.SequenceNumber == seq(4) {
				failed = append(failed, r.Pos())
				break
			}
			done[r.SequenceNumber]++
		}
		return ProcessorReplied{Reply: messages.Processed{BatchID: b.BatchID, Failed: failed, Checkpoint: messages.CheckpointBatchEnd()}}, true
	}
	s.step(Start{})
	s.run(t0.Add(time.Hour))
	var dl []messages.Record
	for _, e := range s.effects {
		if d, ok := e.(DeadLetterBatch); ok {
			dl = append(dl, d.Batch.Records...)
		}
	}
	if len(dl) != 1 || dl[0].SequenceNumber != seq(4) {
		t.Fatalf("dead-lettered %v, want record 4 alone", dl)
	}
	if len(s.delivered) != 4 {
		t.Fatalf("%d deliveries, want 4 (3 failing at record 4, then the rest)", len(s.delivered))
	}
	for i := 1; i <= 10; i++ {
		want := 1
		if i == 4 {
			want = 0
		}
		if done[seq(i)] != want {
			t.Fatalf("record %d processed %d times, want %d", i, done[seq(i)], want)
		}
	}
	if cps := checkpoints(s.effects); fmtCP(cps[len(cps)-1]) != seq(10) {
		t.Fatalf("checkpoints %v, want to end at %s", cps, seq(10))
	}
}

// MaxRecordAge: records older than the limit are not delivered; they go to
// the dead-letter handler (ErrRecordTooOld), are counted, and the
// checkpoint moves past them only once it took them.
func TestMaxRecordAge(t *testing.T) {
	cfg := simConfig()
	cfg.CheckpointInterval = 0
	cfg.MaxRecordAge = time.Hour
	s := newSim(t, cfg, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	batch := recs(1, 6)
	for i := range batch {
		batch[i].ApproximateArrivalTimestamp = t0.Add(-2 * time.Hour) // 1..4 too old
		if i >= 4 {
			batch[i].ApproximateArrivalTimestamp = t0.Add(-time.Minute)
		}
	}
	s.fetch = oneBatch(batch)
	dlCalls := 0
	s.deadLeter = func(*sim) error {
		dlCalls++
		if dlCalls == 1 {
			return errors.New("destination down once")
		}
		return nil
	}
	s.step(Start{})
	s.run(t0.Add(time.Minute))
	if len(s.delivered) != 1 || len(s.delivered[0].Records) != 2 || s.delivered[0].Records[0].SequenceNumber != seq(5) {
		t.Fatalf("delivered %v, want records 5 and 6 only", s.delivered)
	}
	var dl []DeadLetterBatch
	expired := 0
	for _, e := range s.effects {
		switch e := e.(type) {
		case DeadLetterBatch:
			dl = append(dl, e)
		case RecordsDeadLettered:
			if e.Expired {
				expired += e.Records
			}
		}
	}
	if len(dl) != 2 || len(dl[1].Batch.Records) != 4 || !errors.Is(dl[1].Err, ErrRecordTooOld) {
		t.Fatalf("dead-letter calls %+v, want two (one failed) of records 1..4 with ErrRecordTooOld", dl)
	}
	if expired != 4 {
		t.Fatalf("%d records counted expired, want 4", expired)
	}
	cps := checkpoints(s.effects)
	if len(cps) != 2 || fmtCP(cps[0]) != seq(4) || fmtCP(cps[1]) != seq(6) {
		t.Fatalf("checkpoints %v, want %s then %s", cps, seq(4), seq(6))
	}
}

// A record that ages past MaxRecordAge while it is being retried goes to
// the dead-letter handler instead of being delivered again.
func TestMaxRecordAgeDuringRetries(t *testing.T) {
	cfg := simConfig()
	cfg.CheckpointInterval = 0
	cfg.MaxRecordAge = 10 * time.Second
	batch := recs(1, 3)
	for i := range batch {
		batch[i].ApproximateArrivalTimestamp = t0
	}
	s := newSim(t, cfg, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	s.fetch = oneBatch(batch)
	s.process = func(_ *sim, b messages.Batch) (Event, bool) {
		return ProcessorReplied{Reply: messages.Processed{BatchID: b.BatchID, Err: errors.New("down")}}, true
	}
	s.step(Start{})
	s.run(t0.Add(time.Minute))
	var dl []DeadLetterBatch
	for _, e := range s.effects {
		if d, ok := e.(DeadLetterBatch); ok {
			dl = append(dl, d)
		}
	}
	if len(dl) != 1 || len(dl[0].Batch.Records) != 3 || !errors.Is(dl[0].Err, ErrRecordTooOld) {
		t.Fatalf("dead-letter calls %+v, want the 3 records once, too old", dl)
	}
	for _, at := range s.deliverAt {
		if at.Sub(t0) > 10*time.Second+time.Millisecond*100 {
			t.Fatalf("delivered at +%s, after the records were too old", at.Sub(t0))
		}
	}
}

// BenchmarkBisectRedeliveries reports the deliveries needed to isolate one
// poison record (placed at 3/4 of the batch) with bisect and 1 attempt.
func BenchmarkBisectRedeliveries(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var r poisonResult
			for range b.N {
				r = poisonRun(b, n, n*3/4, 1, true)
			}
			b.ReportMetric(float64(r.failed), "failed-deliveries")
			b.ReportMetric(float64(r.deliveries), "deliveries")
			b.ReportMetric(math.Ceil(math.Log2(float64(n))), "log2(n)")
		})
	}
}
