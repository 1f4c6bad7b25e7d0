package shardfsm

import (
	"errors"
	"fmt"
	"testing"
	"time"

	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

// sim drives a machine the way the shard actor does, on a simulated clock:
// timers fire when due, and every effect that calls out is answered by the
// world's functions after a small latency.
type sim struct {
	t      testing.TB
	m      *Machine
	now    time.Time
	timers map[TimerKind]StartTimer
	due    map[TimerKind]time.Time
	queue  []pending // answers in flight, in time order

	// the world
	fetch     func(s *sim) Event // answer to Fetch
	write     func(s *sim, op StoreOp) error
	process   func(s *sim, b messages.Batch) (Event, bool) // false: no answer (hung)
	deadLeter func(s *sim) error

	delivered  []messages.Batch
	deliverAt  []time.Time
	effects    []Effect
	finished   *Finished
	renewsAt   []time.Time
	writesSent int
}

type pending struct {
	at time.Time
	ev Event
}

const latency = 10 * time.Millisecond

func newSim(t testing.TB, cfg Config, cp lease.Checkpoint) *sim {
	s := &sim{t: t, m: New(cfg, "shardId-000000000001", nil, cp), now: t0,
		timers: map[TimerKind]StartTimer{}, due: map[TimerKind]time.Time{}}
	s.fetch = func(*sim) Event { return FetchSucceeded{Batch: stream.Batch{NextIterator: "it"}} }
	s.write = func(*sim, StoreOp) error { return nil }
	s.process = func(_ *sim, b messages.Batch) (Event, bool) {
		return ProcessorReplied{Reply: messages.Processed{BatchID: b.BatchID, Checkpoint: messages.CheckpointBatchEnd()}}, true
	}
	s.deadLeter = func(*sim) error { return nil }
	return s
}

func (s *sim) later(d time.Duration, ev Event) {
	p := pending{at: s.now.Add(d), ev: ev}
	i := len(s.queue)
	for i > 0 && s.queue[i-1].at.After(p.at) {
		i--
	}
	s.queue = append(s.queue, pending{})
	copy(s.queue[i+1:], s.queue[i:])
	s.queue[i] = p
}

func (s *sim) step(ev Event) {
	s.t.Helper()
	for _, e := range s.m.Step(s.now, ev) {
		s.effects = append(s.effects, e)
		switch e := e.(type) {
		case StartTimer:
			s.timers[e.Kind] = e
			s.due[e.Kind] = s.now.Add(e.After)
		case CheckParents:
			s.later(latency, ParentsChecked{Done: true})
		case GetIterator:
			s.later(latency, IteratorReady{Iterator: "it"})
		case Fetch:
			s.later(latency, s.fetch(s))
		case Deliver:
			s.delivered = append(s.delivered, e.Batch)
			s.deliverAt = append(s.deliverAt, s.now)
			if ev, ok := s.process(s, e.Batch); ok {
				s.later(latency, ev)
			}
		case Notify:
			if _, ok := e.Msg.(messages.ShutdownRequested); ok {
				s.later(latency, ShutdownAcked{Ack: messages.ShutdownAck{Checkpoint: messages.CheckpointBatchEnd()}})
			}
		case WriteCheckpoint:
			s.writesSent++
			s.later(latency, StoreDone{Op: OpCheckpoint, Err: s.write(s, OpCheckpoint)})
		case Renew:
			s.writesSent++
			s.renewsAt = append(s.renewsAt, s.now)
			s.later(latency, StoreDone{Op: OpRenew, Err: s.write(s, OpRenew)})
		case Release:
			s.writesSent++
			s.later(latency, StoreDone{Op: OpRelease, Err: s.write(s, OpRelease)})
		case ListChildren:
			s.later(latency, ChildrenFound{})
		case DeadLetterBatch:
			s.later(latency, DeadLettered{BatchID: e.Batch.BatchID, Err: s.deadLeter(s)})
		case Finished:
			f := e
			s.finished = &f
		}
	}
}

// run advances the clock to until, handling answers and timers in order.
func (s *sim) run(until time.Time) {
	s.t.Helper()
	for s.finished == nil {
		next, kind, isTimer := time.Time{}, TimerKind(0), false
		if len(s.queue) > 0 {
			next = s.queue[0].at
		}
		for k, at := range s.due {
			if next.IsZero() || at.Before(next) {
				next, kind, isTimer = at, k, true
			}
		}
		if next.IsZero() || next.After(until) {
			s.now = until
			return
		}
		s.now = next
		if isTimer {
			st := s.timers[kind]
			delete(s.due, kind)
			s.step(TimerFired{Kind: kind, Token: st.Token})
			continue
		}
		p := s.queue[0]
		s.queue = s.queue[1:]
		s.step(p.ev)
	}
}

func simConfig() Config {
	cfg := testConfig()
	cfg.IdleTimeBetweenReads = 500 * time.Millisecond
	cfg.RenewInterval = 30 * time.Second
	cfg.LeaseExpiry = 90 * time.Second
	cfg.CheckpointInterval = 30 * time.Second
	cfg.StallTimeout = 30 * time.Second
	cfg.ProcessTimeout = 5 * time.Minute
	return cfg
}

// An idle shard renews its lease every RenewInterval, as documented (it
// renewed only every second interval, so one failed renewal already
// reached the 90 s expiry).
func TestIdleShardRenewsEveryRenewInterval(t *testing.T) {
	s := newSim(t, simConfig(), lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	s.step(Start{})
	s.run(t0.Add(time.Hour))
	if n := len(s.renewsAt); n < 119 || n > 121 {
		t.Fatalf("%d renewals in an idle hour, want 120 (every 30 s)", n)
	}
	prev := t0
	for _, at := range s.renewsAt {
		if gap := at.Sub(prev); gap > 30*time.Second+latency {
			t.Fatalf("renewal gap %v (at %v), want at most 30s", gap, at.Sub(t0))
		}
		prev = at
	}
}

// A shard whose lease writes all fail stops delivering at LeaseExpiry minus
// the margin after its last successful write was sent, and finishes Fenced
// (it went on delivering forever: 9,000 batches in 30 simulated minutes).
func TestWritesFailingSelfFence(t *testing.T) {
	cfg := simConfig()
	cfg.CheckpointInterval = 3 * time.Second
	s := newSim(t, cfg, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	n := 0
	s.fetch = func(*sim) Event {
		n++
		return FetchSucceeded{Batch: stream.Batch{Records: recs(n*10, 5), NextIterator: "it"}}
	}
	cut := t0.Add(20 * time.Second)
	s.write = func(s *sim, _ StoreOp) error {
		if s.now.After(cut) {
			return errors.New("dynamodb unreachable")
		}
		return nil
	}
	s.step(Start{})
	s.run(t0.Add(30 * time.Minute))
	if s.finished == nil || s.finished.Outcome != Fenced {
		t.Fatalf("finished %+v after 30 minutes of failing writes (%d batches delivered)", s.finished, len(s.delivered))
	}
	// the last write that succeeded was sent at or before the cut
	limit := cut.Add(cfg.LeaseExpiry)
	for i, at := range s.deliverAt {
		if at.After(limit) {
			t.Fatalf("batch %d delivered at %v, after the lease could have expired (%v)", s.delivered[i].BatchID, at.Sub(t0), limit.Sub(t0))
		}
	}
	if last := s.deliverAt[len(s.deliverAt)-1]; last.Before(cut) {
		t.Fatalf("stopped delivering at %v, before the writes failed", last.Sub(t0))
	}
	if s.m.StalledOn() != "dynamodb" && !s.m.w.failingSince.IsZero() {
		// the stall report came first (StallTimeout 30s < expiry 81s)
		found := false
		for _, e := range s.effects {
			if st, ok := e.(Stalled); ok && st.Cause == "dynamodb" {
				found = true
			}
		}
		if !found {
			t.Fatal("no stall on dynamodb reported before fencing")
		}
	}
}

// A process paused past LeaseExpiry wakes with its clock far ahead: it
// delivers nothing more (the batch it had in flight is all it processes) and
// writes nothing.
func TestPausedProcessDeliversNothingOnWaking(t *testing.T) {
	cfg := simConfig()
	cfg.LeaseExpiry = 9 * time.Second
	cfg.RenewInterval = 3 * time.Second
	x := &h{t: t, m: New(cfg, "s", nil, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon}), now: t0}
	x.step(Start{})
	x.step(IteratorReady{Iterator: "a"})
	must[Deliver](t, x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(1, 3), NextIterator: "b"}}))
	x.advance(200 * time.Millisecond)
	must[Fetch](t, x.step(TimerFired{Kind: TimerFetch, Token: x.m.tokens[TimerFetch]}))
	// SIGSTOP for 20 s; on waking, the prefetched batch and the reply arrive
	x.advance(20 * time.Second)
	effs := x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(4, 3), NextIterator: "c"}})
	none[Deliver](t, effs)
	effs = x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}})
	none[Deliver](t, effs)
	none[WriteCheckpoint](t, effs)
	if x.m.State() != ShutdownComplete || x.m.Outcome() != Fenced {
		t.Fatalf("state %v outcome %v", x.m.State(), x.m.Outcome())
	}
}

// The fence timer finishes a machine that has nothing else to do.
func TestFenceTimerFinishes(t *testing.T) {
	cfg := simConfig()
	cfg.LeaseExpiry = 9 * time.Second
	cfg.RenewInterval = 3 * time.Second
	s := newSim(t, cfg, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	s.write = func(*sim, StoreOp) error { return errors.New("timeout") }
	s.step(Start{LeaseWrittenAt: t0.Add(-time.Second)})
	s.run(t0.Add(time.Minute))
	if s.finished == nil || s.finished.Outcome != Fenced {
		t.Fatalf("finished %+v", s.finished)
	}
	if want := t0.Add(-time.Second).Add(cfg.fenceAfter()); !s.now.Equal(want) {
		t.Fatalf("fenced at %v, want %v (take sent at -1s, fence after %v)", s.now.Sub(t0), want.Sub(t0), cfg.fenceAfter())
	}
}

func stalls(effs []Effect) []string {
	var out []string
	for _, e := range effs {
		if st, ok := e.(Stalled); ok {
			out = append(out, st.Cause)
		}
	}
	return out
}

// A shard without progress for StallTimeout reports what it stalled on,
// and reports again when it moves.
func TestStallOnKinesisAndRecovery(t *testing.T) {
	cfg := simConfig()
	cfg.StallTimeout = 10 * time.Second
	s := newSim(t, cfg, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	down := t0.Add(5 * time.Second)
	up := t0.Add(40 * time.Second)
	s.fetch = func(s *sim) Event {
		if s.now.After(down) && s.now.Before(up) {
			return FetchFailed{Err: errors.New("connection refused")}
		}
		return FetchSucceeded{Batch: stream.Batch{NextIterator: "it"}}
	}
	s.step(Start{})
	s.run(t0.Add(time.Minute))
	got := stalls(s.effects)
	if len(got) != 2 || got[0] != "kinesis" || got[1] != "" {
		t.Fatalf("stall reports %q, want [kinesis \"\"]", got)
	}
}

// flowingSim is a shard from TRIM_HORIZON on a stream that has two new
// records on every fetch.
func flowingSim(t *testing.T, cfg Config) *sim {
	s := newSim(t, cfg, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	n := 0
	s.fetch = func(*sim) Event {
		n++
		return FetchSucceeded{Batch: stream.Batch{Records: recs(n*10, 2), NextIterator: "it"}}
	}
	return s
}

// hungProcessor never answers.
func hungProcessor(*sim, messages.Batch) (Event, bool) { return nil, false }

func TestStallOnProcessorOnlyPastProcessTimeout(t *testing.T) {
	cfg := simConfig()
	cfg.StallTimeout = 10 * time.Second
	cfg.ProcessTimeout = 20 * time.Second
	s := flowingSim(t, cfg)
	s.process = hungProcessor
	s.step(Start{})
	s.run(t0.Add(19 * time.Second))
	if got := stalls(s.effects); len(got) != 0 {
		t.Fatalf("stalled %q while the processor is within ProcessTimeout", got)
	}
	s.run(t0.Add(21 * time.Second))
	if got := stalls(s.effects); len(got) != 1 || got[0] != "processor" {
		t.Fatalf("stall reports %q, want [processor]", got)
	}
}

func TestStallOnDynamoDBWhileWritesFail(t *testing.T) {
	cfg := simConfig()
	cfg.StallTimeout = 10 * time.Second
	cfg.CheckpointInterval = time.Second
	s := flowingSim(t, cfg)
	s.write = func(s *sim, _ StoreOp) error {
		if s.now.After(t0.Add(2 * time.Second)) {
			return errors.New("dynamodb unreachable")
		}
		return nil
	}
	s.step(Start{})
	s.run(t0.Add(20 * time.Second))
	if got := stalls(s.effects); len(got) != 1 || got[0] != "dynamodb" {
		t.Fatalf("stall reports %q, want [dynamodb]", got)
	}
}

// A batch not answered within ProcessTimeout fails: the processor is
// replaced, the batch goes to the new one under a new id (after
// Initialized{Restarted}), and a late answer of the old one is ignored.
func TestProcessTimeoutReplacesProcessor(t *testing.T) {
	cfg := testConfig()
	cfg.ProcessTimeout = 5 * time.Second
	x := inProcessingCfg(t, cfg)
	d := x.m.inFlight
	if d == nil || d.batch.Deadline.IsZero() {
		t.Fatal("no deadline on the delivered batch")
	}
	x.now = d.batch.Deadline
	effs := x.step(TimerFired{Kind: TimerProcess, Token: x.m.tokens[TimerProcess]})
	rp := must[ReplaceProcessor](t, effs)
	if rp.BatchID != 1 {
		t.Fatalf("replace %+v", rp)
	}
	pf := must[ProcessorFailure](t, effs)
	if !errors.Is(pf.Err, ErrProcessTimeout) {
		t.Fatalf("failure %v", pf.Err)
	}
	st := timerOf(t, effs, TimerRedeliver)
	x.advance(st.After)
	effs = x.step(TimerFired{Kind: TimerRedeliver, Token: st.Token})
	if init, ok := notified[messages.Initialized](effs); !ok || !init.Restarted {
		t.Fatalf("no Initialized{Restarted} for the new processor: %s", describe(effs))
	}
	again := must[Deliver](t, effs)
	if again.Batch.BatchID == 1 || again.Batch.Attempt != 2 || len(again.Batch.Records) != 3 {
		t.Fatalf("redelivered %+v", again.Batch)
	}
	// the old processor finally answers: ignored
	effs = x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}})
	none[WriteCheckpoint](t, effs)
	// the new one answers
	must[WriteCheckpoint](t, x.step(ProcessorReplied{Reply: messages.Processed{BatchID: again.Batch.BatchID, Checkpoint: messages.CheckpointBatchEnd()}}))
}

func inProcessingCfg(t *testing.T, cfg Config) *h {
	x := &h{t: t, m: New(cfg, "s", nil, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon}), now: t0}
	x.step(Start{})
	x.step(IteratorReady{Iterator: "a"})
	must[Deliver](t, x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(1, 3), NextIterator: "b"}}))
	return x
}

// A dead-letter handler that fails never lets the checkpoint pass its
// batch: the call is retried with backoff for as long as it fails, the
// shard stalls visibly (on "failure-destination"), and nothing is
// checkpointed past the batch. (Before, the shard stopped after
// MaxProcessorAttempts failed calls and another owner started over.)
func TestDeadLetterFailureNeverCheckpointsPast(t *testing.T) {
	cfg := simConfig()
	cfg.FailurePolicy = DeadLetter
	cfg.MaxProcessorAttempts = 3
	cfg.StallTimeout = 30 * time.Second
	s := newSim(t, cfg, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	first := true
	s.fetch = func(*sim) Event {
		if first {
			first = false
			return FetchSucceeded{Batch: stream.Batch{Records: recs(1, 2), NextIterator: "it"}}
		}
		return FetchSucceeded{Batch: stream.Batch{NextIterator: "it"}}
	}
	s.process = func(_ *sim, b messages.Batch) (Event, bool) {
		return ProcessorReplied{Reply: messages.Processed{BatchID: b.BatchID, Err: errors.New("poison")}}, true
	}
	calls := 0
	s.deadLeter = func(*sim) error { calls++; return errors.New("dead-letter queue unreachable") }
	s.step(Start{})
	s.run(t0.Add(10 * time.Minute))
	stalled := ""
	for _, e := range s.effects {
		if wc, ok := e.(WriteCheckpoint); ok && !wc.Checkpoint.IsSentinel() {
			t.Fatalf("checkpoint written past a batch the dead-letter handler never took: %v", wc.Checkpoint)
		}
		if st, ok := e.(Stalled); ok {
			stalled = st.Cause
		}
	}
	if calls < 10 {
		t.Fatalf("dead-letter handler called %d times in 10 minutes, want it retried on", calls)
	}
	if s.finished != nil {
		t.Fatalf("finished %+v, want the shard held, stalled", s.finished)
	}
	if stalled != "failure-destination" {
		t.Fatalf("stalled on %q, want failure-destination", stalled)
	}
}

func TestDeadLetterRetrySucceeds(t *testing.T) {
	cfg := simConfig()
	cfg.FailurePolicy = DeadLetter
	cfg.MaxProcessorAttempts = 3
	cfg.CheckpointInterval = 0
	s := newSim(t, cfg, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	first := true
	s.fetch = func(*sim) Event {
		if first {
			first = false
			return FetchSucceeded{Batch: stream.Batch{Records: recs(1, 2), NextIterator: "it"}}
		}
		return FetchSucceeded{Batch: stream.Batch{NextIterator: "it"}}
	}
	s.process = func(_ *sim, b messages.Batch) (Event, bool) {
		return ProcessorReplied{Reply: messages.Processed{BatchID: b.BatchID, Err: errors.New("poison")}}, true
	}
	calls := 0
	s.deadLeter = func(*sim) error {
		calls++
		if calls == 1 {
			return errors.New("once")
		}
		return nil
	}
	s.step(Start{})
	s.run(t0.Add(time.Minute))
	if s.m.Checkpoint().SequenceNumber != seq(2) {
		t.Fatalf("checkpoint %v after the handler took the batch, want %s", s.m.Checkpoint(), seq(2))
	}
}

// A checkpoint at (seq, 0) inside a KPL aggregate resumes at sub-record 1
// (it resumed after the whole aggregate: sub-records 1..n never reached the
// next owner).
func TestCheckpointAtSubZeroResumesInsideAggregate(t *testing.T) {
	x := newH(t, testConfig(), nil, lease.Checkpoint{SequenceNumber: seq(5), SubSequenceNumber: 0})
	gi := must[GetIterator](t, x.step(Start{}))
	if gi.Position.Type != ktypes.ShardIteratorTypeAtSequenceNumber || gi.Position.SequenceNumber != seq(5) {
		t.Fatalf("resumes at %+v, want AT_SEQUENCE_NUMBER %s", gi.Position, seq(5))
	}
	x.step(IteratorReady{Iterator: "a"})
	agg := []stream.Record{
		{SequenceNumber: seq(5), SubSequenceNumber: 0, PartitionKey: "k"},
		{SequenceNumber: seq(5), SubSequenceNumber: 1, PartitionKey: "k"},
		{SequenceNumber: seq(5), SubSequenceNumber: 2, PartitionKey: "k"},
		{SequenceNumber: seq(6), PartitionKey: "k"},
	}
	d := must[Deliver](t, x.step(FetchSucceeded{Batch: stream.Batch{Records: agg, NextIterator: "b"}}))
	var got []string
	for _, r := range d.Batch.Records {
		got = append(got, fmt.Sprintf("%s/%d", r.SequenceNumber[len(r.SequenceNumber)-1:], r.SubSequenceNumber))
	}
	if fmt.Sprint(got) != "[5/1 5/2 6/0]" {
		t.Fatalf("delivered %v, want [5/1 5/2 6/0]", got)
	}
}

// Kinesis saying the shard does not exist, or that an argument (a
// checkpoint of another shard) is invalid, ends the shard here: it is
// released, not retried forever.
func TestTerminalKinesisErrorsEndTheShard(t *testing.T) {
	for _, err := range []error{stream.ErrShardNotFound, fmt.Errorf("x: %w", stream.ErrInvalidArgument)} {
		s := newSim(t, simConfig(), lease.Checkpoint{SequenceNumber: seq(3)})
		s.fetch = func(*sim) Event { return FetchFailed{Err: err} }
		s.step(Start{})
		s.run(t0.Add(time.Minute))
		if s.finished == nil || s.finished.Outcome != Unreadable {
			t.Fatalf("%v: finished %+v, want Unreadable", err, s.finished)
		}
		released := false
		for _, e := range s.effects {
			if _, ok := e.(Release); ok {
				released = true
			}
		}
		if !released {
			t.Fatalf("%v: lease not released", err)
		}
	}
}

// The replaced processor's late failure does not count again: with the
// dead-letter policy it was dead-lettered twice.
func TestLateReplyOfReplacedProcessorIsIgnored(t *testing.T) {
	cfg := testConfig()
	cfg.ProcessTimeout = 5 * time.Second
	cfg.FailurePolicy = DeadLetter
	cfg.MaxProcessorAttempts = 1
	x := inProcessingCfg(t, cfg)
	x.now = x.m.inFlight.batch.Deadline
	effs := x.step(TimerFired{Kind: TimerProcess, Token: x.m.tokens[TimerProcess]})
	must[ReplaceProcessor](t, effs)
	must[DeadLetterBatch](t, effs)
	// the old processor's context ended: it answers with an error
	effs = x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Err: errors.New("context deadline exceeded")}})
	none[DeadLetterBatch](t, effs)
	none[ProcessorFailure](t, effs)
	must[WriteCheckpoint](t, x.step(DeadLettered{BatchID: 1}))
}

// A processor that answers every batch with an error makes no progress: the
// shard stalls on the processor (answers counted as progress, so a poison
// batch under retry-forever never showed).
func TestFailingProcessorIsAStall(t *testing.T) {
	cfg := simConfig()
	cfg.StallTimeout = 10 * time.Second
	s := newSim(t, cfg, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	first := true
	s.fetch = func(*sim) Event {
		if first {
			first = false
			return FetchSucceeded{Batch: stream.Batch{Records: recs(1, 2), NextIterator: "it"}}
		}
		return FetchSucceeded{Batch: stream.Batch{NextIterator: "it"}}
	}
	s.process = func(_ *sim, b messages.Batch) (Event, bool) {
		return ProcessorReplied{Reply: messages.Processed{BatchID: b.BatchID, Err: errors.New("poison")}}, true
	}
	s.step(Start{})
	s.run(t0.Add(15 * time.Second))
	if got := stalls(s.effects); len(got) != 1 || got[0] != "processor" {
		t.Fatalf("stall reports %q, want [processor]", got)
	}
}

// Handing off a shard whose processor is stalled does not wait
// ShutdownTimeout for an answer that will not come.
func TestStopOfStalledProcessorReleasesAtOnce(t *testing.T) {
	cfg := simConfig()
	cfg.StallTimeout = 10 * time.Second
	cfg.ProcessTimeout = 4 * time.Second
	s := flowingSim(t, cfg)
	s.process = hungProcessor
	s.step(Start{})
	s.run(t0.Add(12 * time.Second))
	if s.m.StalledOn() != "processor" {
		t.Fatalf("stalled on %q", s.m.StalledOn())
	}
	s.step(StopRequested{})
	s.run(s.now.Add(time.Second))
	if s.finished == nil || s.finished.Outcome != Released {
		t.Fatalf("1s after the stop: finished %+v, want released", s.finished)
	}
}

// Resuming AT the checkpointed record reads it again and drops it; the
// next fetch follows at MinFetchInterval, not after IdleTimeBetweenReads
// (every handoff waited an idle interval for nothing).
func TestResumeDoesNotIdleOnTheCheckpointedRecord(t *testing.T) {
	cfg := testConfig()
	x := newH(t, cfg, nil, lease.Checkpoint{SequenceNumber: seq(5)})
	x.step(Start{})
	x.step(IteratorReady{Iterator: "a"})
	effs := x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(5, 1), NextIterator: "b"}})
	none[Deliver](t, effs)
	st := timerOf(t, effs, TimerFetch)
	if st.After > cfg.MinFetchInterval {
		t.Fatalf("next fetch after %v, want at most MinFetchInterval %v", st.After, cfg.MinFetchInterval)
	}
}
