package shardfsm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testConfig() Config {
	return Config{
		MaxRecords:           100,
		MinFetchInterval:     200 * time.Millisecond,
		IdleTimeBetweenReads: time.Second,
		ParentPollInterval:   2 * time.Second,
		RenewInterval:        30 * time.Second,
		ShutdownTimeout:      10 * time.Second,
		ThrottleBackoff:      backoff.Policy{Base: 100 * time.Millisecond, Cap: 5 * time.Second},
		ErrorBackoff:         backoff.Policy{Base: 200 * time.Millisecond, Cap: 10 * time.Second},
		ProcessorBackoff:     backoff.Policy{Base: 50 * time.Millisecond, Cap: time.Second},
		MaxProcessorAttempts: 3,
		FailurePolicy:        RetryForever,
		InitialPosition:      stream.Position{Type: ktypes.ShardIteratorTypeTrimHorizon},
		Rand:                 rand.New(rand.NewPCG(7, 7)),
	}
}

// h drives a machine with a clock and remembers the last effects.
type h struct {
	t   *testing.T
	m   *Machine
	now time.Time
	out []Effect
}

func newH(t *testing.T, cfg Config, parents []string, cp lease.Checkpoint) *h {
	return &h{t: t, m: New(cfg, "shardId-000000000001", parents, cp), now: t0}
}

func (x *h) step(ev Event) []Effect {
	x.t.Helper()
	x.out = x.m.Step(x.now, ev)
	return x.out
}

func (x *h) advance(d time.Duration) { x.now = x.now.Add(d) }

func find[T Effect](effs []Effect) (T, bool) {
	for _, e := range effs {
		if v, ok := e.(T); ok {
			return v, true
		}
	}
	var zero T
	return zero, false
}

func must[T Effect](t *testing.T, effs []Effect) T {
	t.Helper()
	v, ok := find[T](effs)
	if !ok {
		var zero T
		t.Fatalf("no %T among effects %s", zero, describe(effs))
	}
	return v
}

func none[T Effect](t *testing.T, effs []Effect) {
	t.Helper()
	if v, ok := find[T](effs); ok {
		t.Fatalf("unexpected %#v among effects %s", v, describe(effs))
	}
}

func notified[T any](effs []Effect) (T, bool) {
	for _, e := range effs {
		if n, ok := e.(Notify); ok {
			if v, ok := n.Msg.(T); ok {
				return v, true
			}
		}
	}
	var zero T
	return zero, false
}

func describe(effs []Effect) string {
	s := "["
	for i, e := range effs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%T%+v", e, e)
	}
	return s + "]"
}

func timerOf(t *testing.T, effs []Effect, k TimerKind) StartTimer {
	t.Helper()
	for _, e := range effs {
		if st, ok := e.(StartTimer); ok && st.Kind == k {
			return st
		}
	}
	t.Fatalf("no %v timer among %s", k, describe(effs))
	return StartTimer{}
}

func recs(from, n int) []stream.Record {
	r := make([]stream.Record, n)
	for i := range r {
		r[i] = stream.Record{SequenceNumber: fmt.Sprintf("%056d", from+i), PartitionKey: "k", Data: []byte("x")}
	}
	return r
}

func seq(n int) string { return fmt.Sprintf("%056d", n) }

// ---- fixtures: one machine in each state -----------------------------------

func inWaiting(t *testing.T) *h {
	x := newH(t, testConfig(), []string{"p1", "p2"}, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	effs := x.step(Start{})
	if cp := must[CheckParents](t, effs); !reflect.DeepEqual(cp.ShardIDs, []string{"p1", "p2"}) {
		t.Fatalf("CheckParents = %v", cp.ShardIDs)
	}
	return x
}

func inInitializing(t *testing.T) *h {
	x := newH(t, testConfig(), nil, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon})
	must[GetIterator](t, x.step(Start{}))
	return x
}

// inProcessing: a batch of 3 records is with the processor (batch 1) and
// the prefetch of the next batch is in flight.
func inProcessing(t *testing.T) *h {
	x := inInitializing(t)
	effs := x.step(IteratorReady{Iterator: "it-1"})
	if _, ok := notified[messages.Initialized](effs); !ok {
		t.Fatalf("processor not initialized: %s", describe(effs))
	}
	must[Fetch](t, effs)
	x.advance(50 * time.Millisecond)
	effs = x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(1, 3), NextIterator: "it-2"}})
	must[Deliver](t, effs)
	// prefetch is rate-limited: a timer, then the fetch
	st := timerOf(t, effs, TimerFetch)
	x.advance(st.After)
	must[Fetch](t, x.step(TimerFired{Kind: TimerFetch, Token: st.Token}))
	if x.m.State() != Processing {
		t.Fatalf("state %v", x.m.State())
	}
	return x
}

func inShutdownRequested(t *testing.T) *h {
	x := inProcessing(t)
	effs := x.step(StopRequested{})
	none[Release](t, effs)
	if _, ok := notified[messages.ShutdownRequested](effs); ok {
		t.Fatalf("AwaitingShutdownAck sent while a batch is in flight: %s", describe(effs))
	}
	if x.m.State() != AwaitingShutdownAck {
		t.Fatalf("state %v", x.m.State())
	}
	return x
}

func inShuttingDown(t *testing.T) *h {
	x := inShutdownRequested(t)
	effs := x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1}})
	if _, ok := notified[messages.ShutdownRequested](effs); !ok {
		t.Fatalf("no AwaitingShutdownAck after the batch finished: %s", describe(effs))
	}
	effs = x.step(ShutdownAcked{Ack: messages.ShutdownAck{Checkpoint: messages.CheckpointBatchEnd()}})
	wc := must[WriteCheckpoint](t, effs)
	if wc.Checkpoint.SequenceNumber != seq(3) {
		t.Fatalf("shutdown checkpoint %v, want after record 3", wc.Checkpoint)
	}
	if x.m.State() != ShuttingDown {
		t.Fatalf("state %v", x.m.State())
	}
	return x
}

func inComplete(t *testing.T) *h {
	x := inShuttingDown(t)
	must[Release](t, x.step(StoreDone{Op: OpCheckpoint}))
	f := must[Finished](t, x.step(StoreDone{Op: OpRelease}))
	if f.Outcome != Released || x.m.State() != ShutdownComplete {
		t.Fatalf("finished %v in %v", f.Outcome, x.m.State())
	}
	return x
}

var fixtures = map[State]func(*testing.T) *h{
	WaitingOnParentShards: inWaiting,
	Initializing:          inInitializing,
	Processing:            inProcessing,
	AwaitingShutdownAck:   inShutdownRequested,
	ShuttingDown:          inShuttingDown,
	ShutdownComplete:      inComplete,
}

// ---- every state × every event ---------------------------------------------

// events is one of each kind of event, as the shell could send them in any
// state (timers are fired with their current token by the test).
var events = map[string]Event{
	"Start":             Start{},
	"ParentsDone":       ParentsChecked{Done: true},
	"ParentsNotDone":    ParentsChecked{Done: false},
	"ParentsErr":        ParentsChecked{Err: errors.New("boom")},
	"IteratorReady":     IteratorReady{Iterator: "it-x"},
	"IteratorFailed":    IteratorFailed{Err: stream.ErrThrottled},
	"FetchOK":           FetchSucceeded{Batch: stream.Batch{Records: recs(10, 2), NextIterator: "it-y"}},
	"FetchEmpty":        FetchSucceeded{Batch: stream.Batch{NextIterator: "it-y"}},
	"FetchShardEnd":     FetchSucceeded{Batch: stream.Batch{Records: recs(10, 1)}},
	"FetchThrottled":    FetchFailed{Err: stream.ErrThrottled},
	"FetchExpired":      FetchFailed{Err: stream.ErrExpiredIterator},
	"FetchOtherErr":     FetchFailed{Err: errors.New("connection reset")},
	"ReplyOK":           ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}},
	"ReplyErr":          ProcessorReplied{Reply: messages.Processed{BatchID: 1, Err: errors.New("bad")}},
	"ReplyStale":        ProcessorReplied{Reply: messages.Processed{BatchID: 99}},
	"Crashed":           ProcessorCrashed{Reason: "panic"},
	"ShutdownAck":       ShutdownAcked{Ack: messages.ShutdownAck{Checkpoint: messages.CheckpointBatchEnd()}},
	"ChildrenFound":     ChildrenFound{IDs: []string{"c1", "c2"}},
	"StoreDoneOK":       StoreDone{Op: OpCheckpoint},
	"StoreDoneLost":     StoreDone{Op: OpRenew, Err: fmt.Errorf("renew: %w", lease.ErrLeaseLost)},
	"StoreDoneErr":      StoreDone{Op: OpRenew, Err: errors.New("throttled too long")},
	"StopRequested":     StopRequested{},
	"TimerParentPoll":   TimerFired{Kind: TimerParentPoll},
	"TimerIterator":     TimerFired{Kind: TimerIterator},
	"TimerFetch":        TimerFired{Kind: TimerFetch},
	"TimerRedeliver":    TimerFired{Kind: TimerRedeliver},
	"TimerRenew":        TimerFired{Kind: TimerRenew},
	"TimerShutdown":     TimerFired{Kind: TimerShutdown},
	"TimerStoreRetry":   TimerFired{Kind: TimerStoreRetry},
	"TimerCheckpoint":   TimerFired{Kind: TimerCheckpoint},
	"TimerStale":        TimerFired{Kind: TimerFetch, Token: 1 << 60},
	"UnknownTimerKind":  TimerFired{Kind: 0},
	"TimerOutOfRange":   TimerFired{Kind: timerKinds + 3},
	"ReplyBadCP":        ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointAt("12x", 0)}},
	"ReplyAheadCP":      ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointAt(seq(1000), 0)}},
	"ShutdownAckNoCP":   ShutdownAcked{},
	"ChildrenFoundErr":  ChildrenFound{Err: errors.New("list failed")},
	"StoreDoneRelease":  StoreDone{Op: OpRelease},
	"StoreDoneCPLost":   StoreDone{Op: OpCheckpoint, Err: lease.ErrLeaseLost},
	"IteratorNotFound":  IteratorFailed{Err: stream.ErrShardNotFound},
	"IteratorInvalid":   IteratorFailed{Err: fmt.Errorf("GetShardIterator: %w", stream.ErrInvalidArgument)},
	"FetchNotFound":     FetchFailed{Err: stream.ErrShardNotFound},
	"DeadLettered":      DeadLettered{BatchID: 1},
	"DeadLetterFailed":  DeadLettered{BatchID: 1, Err: errors.New("dlq down")},
	"TimerStall":        TimerFired{Kind: TimerStall},
	"TimerProcess":      TimerFired{Kind: TimerProcess},
	"TimerDeadLetter":   TimerFired{Kind: TimerDeadLetter},
	"FetchEndChildren":  FetchSucceeded{Batch: stream.Batch{ChildShards: []stream.Shard{{ID: "c9"}}}},
	"ParentsDoneAndErr": ParentsChecked{Done: true, Err: errors.New("partial")},
	"Paused":            Paused{For: 5 * time.Second},
	"DeclaredDead":      Paused{Reason: "declared dead by node-2"},
	"StartAfterPause":   Start{LeaseWrittenAt: t0, VerifyFirst: true, Pause: Paused{For: 5 * time.Second}},
}

// next is the state each (state, event) pair must lead to. Pairs not listed
// must leave the state unchanged.
var next = map[State]map[string]State{
	WaitingOnParentShards: {
		"ParentsDone":   Initializing,
		"StopRequested": ShuttingDown,
		"StoreDoneLost": ShutdownComplete, // only if a write is in flight; see below
	},
	Initializing: {
		"IteratorReady":    Processing,
		"StopRequested":    ShuttingDown,
		"IteratorNotFound": ShuttingDown, // terminal: release, the shard cannot be read here
		"IteratorInvalid":  ShuttingDown,
	},
	Processing: {
		"StopRequested":    AwaitingShutdownAck,
		"IteratorNotFound": ShuttingDown,
		"IteratorInvalid":  ShuttingDown,
		"FetchNotFound":    ShuttingDown,
	},
	AwaitingShutdownAck: {
		"TimerShutdown": ShuttingDown,
	},
	ShuttingDown: {
		"StoreDoneLost":   ShutdownComplete,
		"StoreDoneCPLost": ShutdownComplete,
	},
}

func TestEveryStateTimesEveryEvent(t *testing.T) {
	for _, st := range AllStates {
		for name, ev := range events {
			t.Run(st.String()+"/"+name, func(t *testing.T) {
				x := fixtures[st](t)
				if tf, ok := ev.(TimerFired); ok && tf.Kind > 0 && tf.Kind < timerKinds && tf.Token == 0 {
					tf.Token = x.m.tokens[tf.Kind] // the current timer of that kind
					ev = tf
				}
				busy := x.m.w.busy
				effs := x.step(ev)
				want, listed := next[st][name]
				if !listed {
					want = st
				}
				if name == "StoreDoneLost" && !busy {
					want = st // no write in flight: a stray answer is ignored
				}
				if st == WaitingOnParentShards && name == "ParentsDone" {
					// no checkpoint: straight on to GetIterator
					must[GetIterator](t, effs)
				}
				got := x.m.State()
				if got != want {
					t.Fatalf("%v + %s → %v, want %v (effects %s)", st, name, got, want, describe(effs))
				}
				if st == ShutdownComplete && len(effs) != 0 {
					t.Fatalf("finished machine produced effects: %s", describe(effs))
				}
				checkInvariants(t, x)
			})
		}
	}
}

// checkInvariants holds after any step.
func checkInvariants(t *testing.T, x *h) {
	t.Helper()
	m := x.m
	writes := 0
	for _, e := range x.out {
		switch e.(type) {
		case WriteCheckpoint, Renew, Release:
			writes++
		}
	}
	if writes > 1 {
		t.Fatalf("more than one lease write in one step: %s", describe(x.out))
	}
	if m.state == ShutdownComplete {
		if _, ok := find[Finished](x.out); !ok && len(x.out) > 0 {
			t.Fatalf("effects after completion without Finished: %s", describe(x.out))
		}
	}
	if m.fetching {
		n := 0
		for _, e := range x.out {
			if _, ok := e.(Fetch); ok {
				n++
			}
		}
		if n > 1 {
			t.Fatalf("two fetches at once: %s", describe(x.out))
		}
	}
	if !m.target.IsSentinel() && !m.maxSent.IsSentinel() && m.target.Compare(m.maxSent) > 0 {
		t.Fatalf("checkpoint target %v passed the last delivered %v", m.target, m.maxSent)
	}
}

// ---- lease loss in each state -------------------------------------------------

func TestLeaseLossInEachState(t *testing.T) {
	for _, st := range []State{WaitingOnParentShards, Initializing, Processing, AwaitingShutdownAck, ShuttingDown} {
		t.Run(st.String(), func(t *testing.T) {
			x := fixtures[st](t)
			if !x.m.w.busy {
				// make a renewal be in flight
				x.advance(31 * time.Second)
				effs := x.step(TimerFired{Kind: TimerRenew, Token: x.m.tokens[TimerRenew]})
				if _, ok := find[Renew](effs); !ok {
					if _, ok := find[WriteCheckpoint](effs); !ok {
						t.Fatalf("renew timer wrote nothing: %s", describe(effs))
					}
				}
			}
			effs := x.step(StoreDone{Op: OpRenew, Err: fmt.Errorf("x: %w", lease.ErrLeaseLost)})
			f := must[Finished](t, effs)
			if f.Outcome != LeaseLost || !errors.Is(f.Err, lease.ErrLeaseLost) {
				t.Fatalf("finished %+v", f)
			}
			none[Release](t, effs)
			none[WriteCheckpoint](t, effs)
			_, told := notified[messages.LeaseLost](effs)
			if wantTold := st == Processing || st == AwaitingShutdownAck; told != wantTold {
				t.Fatalf("LeaseLost told to processor = %v, want %v", told, wantTold)
			}
			// nothing is ever written again
			for name, ev := range events {
				for _, e := range x.m.Step(x.now, ev) {
					switch e.(type) {
					case WriteCheckpoint, Renew, Release, Deliver, Fetch:
						t.Fatalf("after lease loss, %s produced %T", name, e)
					}
				}
			}
		})
	}
}

// ---- parents -----------------------------------------------------------------------

func TestWaitingOnParentsPollsUntilDone(t *testing.T) {
	x := inWaiting(t)
	for i := 0; i < 3; i++ {
		effs := x.step(ParentsChecked{Done: false})
		st := timerOf(t, effs, TimerParentPoll)
		if st.After != 2*time.Second {
			t.Fatalf("poll after %v", st.After)
		}
		x.advance(st.After)
		must[CheckParents](t, x.step(TimerFired{Kind: TimerParentPoll, Token: st.Token}))
	}
	must[GetIterator](t, x.step(ParentsChecked{Done: true}))
	if x.m.State() != Initializing {
		t.Fatalf("state %v", x.m.State())
	}
}

func TestStopDuringParentWaitInterruptsTimer(t *testing.T) {
	x := inWaiting(t)
	st := timerOf(t, x.step(ParentsChecked{Done: false}), TimerParentPoll)
	effs := x.step(StopRequested{})
	must[Release](t, effs) // nothing to checkpoint: release at once
	none[Notify](t, effs)  // the processor was never initialized
	if effs := x.step(TimerFired{Kind: TimerParentPoll, Token: st.Token}); len(effs) != 0 {
		t.Fatalf("stale poll timer acted: %s", describe(effs))
	}
	f := must[Finished](t, x.step(StoreDone{Op: OpRelease}))
	if f.Outcome != Released {
		t.Fatalf("outcome %v", f.Outcome)
	}
}

// ---- initializing ----------------------------------------------------------------------

func TestResumePositions(t *testing.T) {
	cases := []struct {
		cp   lease.Checkpoint
		init stream.Position
		want stream.Position
	}{
		// at the checkpointed record itself (dropped when it arrives), so a
		// checkpoint inside a KPL aggregate resumes at its next user record
		{lease.Checkpoint{SequenceNumber: seq(42)}, stream.Position{Type: ktypes.ShardIteratorTypeTrimHorizon}, stream.Position{Type: ktypes.ShardIteratorTypeAtSequenceNumber, SequenceNumber: seq(42)}},
		{lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon}, stream.Position{Type: ktypes.ShardIteratorTypeLatest}, stream.Position{Type: ktypes.ShardIteratorTypeTrimHorizon}},
		{lease.Checkpoint{SequenceNumber: lease.CheckpointLatest}, stream.Position{Type: ktypes.ShardIteratorTypeTrimHorizon}, stream.Position{Type: ktypes.ShardIteratorTypeLatest}},
		{lease.Checkpoint{}, stream.Position{Type: ktypes.ShardIteratorTypeTrimHorizon}, stream.Position{Type: ktypes.ShardIteratorTypeTrimHorizon}},
		{lease.Checkpoint{SequenceNumber: lease.CheckpointAtTimestamp}, stream.Position{Type: ktypes.ShardIteratorTypeAtTimestamp, Timestamp: t0}, stream.Position{Type: ktypes.ShardIteratorTypeAtTimestamp, Timestamp: t0}},
	}
	for _, c := range cases {
		cfg := testConfig()
		cfg.InitialPosition = c.init
		x := newH(t, cfg, nil, c.cp)
		gi := must[GetIterator](t, x.step(Start{}))
		if gi.Position != c.want {
			t.Errorf("checkpoint %v, initial %v: position %v, want %v", c.cp, c.init, gi.Position, c.want)
		}
	}
}

func TestShardAlreadyEndedIsReleased(t *testing.T) {
	x := newH(t, testConfig(), nil, lease.Checkpoint{SequenceNumber: lease.CheckpointShardEnd})
	effs := x.step(Start{})
	none[GetIterator](t, effs)
	must[Release](t, effs)
	f := must[Finished](t, x.step(StoreDone{Op: OpRelease}))
	if f.Outcome != ShardEnd {
		t.Fatalf("outcome %v", f.Outcome)
	}
}

func TestIteratorFailureBacksOff(t *testing.T) {
	x := inInitializing(t)
	var prev time.Duration
	for i := 1; i <= 8; i++ {
		st := timerOf(t, x.step(IteratorFailed{Err: errors.New("net")}), TimerIterator)
		c := x.m.cfg.ErrorBackoff.Ceiling(i)
		if st.After < c/2 || st.After > c {
			t.Fatalf("attempt %d: delay %v outside [%v,%v]", i, st.After, c/2, c)
		}
		prev = st.After
		must[GetIterator](t, x.step(TimerFired{Kind: TimerIterator, Token: st.Token}))
	}
	if prev > x.m.cfg.ErrorBackoff.Cap {
		t.Fatalf("delay %v over cap", prev)
	}
}

// ---- processing ---------------------------------------------------------------------------

func TestPrefetchKeepsOneBatchBuffered(t *testing.T) {
	x := inProcessing(t) // batch 1 delivered, fetch in flight
	effs := x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(4, 2), NextIterator: "it-3"}})
	none[Deliver](t, effs) // processor busy: buffered
	none[Fetch](t, effs)   // one buffered batch is the limit
	none[StartTimer](t, effs)
	// processor acks batch 1: batch 2 delivered at once, next fetch starts
	x.advance(300 * time.Millisecond)
	effs = x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}})
	d := must[Deliver](t, effs)
	if d.Batch.BatchID != 2 || d.Batch.Records[0].SequenceNumber != seq(4) {
		t.Fatalf("delivered %+v", d.Batch)
	}
	if f := must[Fetch](t, effs); f.Iterator != "it-3" {
		t.Fatalf("fetch with %q", f.Iterator)
	}
	if wc := must[WriteCheckpoint](t, effs); wc.Checkpoint.SequenceNumber != seq(3) {
		t.Fatalf("checkpoint %v", wc.Checkpoint)
	}
}

func TestFetchRateLimit(t *testing.T) {
	x := inInitializing(t)
	effs := x.step(IteratorReady{Iterator: "a"})
	must[Fetch](t, effs)
	x.advance(10 * time.Millisecond)
	effs = x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(1, 1), NextIterator: "b"}})
	st := timerOf(t, effs, TimerFetch)
	if st.After != 190*time.Millisecond {
		t.Fatalf("next fetch after %v, want 190ms (5 calls/s)", st.After)
	}
	none[Fetch](t, effs)
}

func TestEmptyBatchWaitsIdleTime(t *testing.T) {
	x := inInitializing(t)
	x.step(IteratorReady{Iterator: "a"})
	effs := x.step(FetchSucceeded{Batch: stream.Batch{NextIterator: "b"}})
	none[Deliver](t, effs)
	if st := timerOf(t, effs, TimerFetch); st.After != time.Second {
		t.Fatalf("idle wait %v", st.After)
	}
	// behind the tip: empty batches do not slow catching up
	x.advance(time.Second)
	x.step(TimerFired{Kind: TimerFetch, Token: x.m.tokens[TimerFetch]})
	effs = x.step(FetchSucceeded{Batch: stream.Batch{NextIterator: "c", MillisBehindLatest: 60000}})
	if st := timerOf(t, effs, TimerFetch); st.After != 200*time.Millisecond {
		t.Fatalf("catch-up wait %v", st.After)
	}
}

func TestThrottlingBackoffGrowsAndCaps(t *testing.T) {
	x := inProcessing(t)
	p := x.m.cfg.ThrottleBackoff
	var delays []time.Duration
	for i := 1; i <= 12; i++ {
		st := timerOf(t, x.step(FetchFailed{Err: fmt.Errorf("x: %w", stream.ErrThrottled)}), TimerFetch)
		c := p.Ceiling(i)
		if st.After < c/2 || st.After > c || st.After > p.Cap {
			t.Fatalf("attempt %d: %v outside [%v, %v]", i, st.After, c/2, c)
		}
		delays = append(delays, st.After)
		x.advance(st.After)
		must[Fetch](t, x.step(TimerFired{Kind: TimerFetch, Token: st.Token}))
	}
	if delays[len(delays)-1] < p.Cap/2 {
		t.Fatalf("backoff did not grow to the cap: %v", delays)
	}
	// success resets the growth
	x.step(FetchSucceeded{Batch: stream.Batch{NextIterator: "z"}})
	x.advance(time.Second)
	x.step(TimerFired{Kind: TimerFetch, Token: x.m.tokens[TimerFetch]})
	st := timerOf(t, x.step(FetchFailed{Err: stream.ErrThrottled}), TimerFetch)
	if st.After > p.Ceiling(1) {
		t.Fatalf("after success, first throttle waits %v", st.After)
	}
}

func TestExpiredIteratorResumesAfterLastReceived(t *testing.T) {
	x := inProcessing(t) // records 1..3 delivered, fetch in flight
	effs := x.step(FetchFailed{Err: stream.ErrExpiredIterator})
	gi := must[GetIterator](t, effs)
	want := stream.Position{Type: ktypes.ShardIteratorTypeAtSequenceNumber, SequenceNumber: seq(3)}
	if gi.Position != want {
		t.Fatalf("fresh iterator at %v, want %v", gi.Position, want)
	}
	x.advance(time.Second)
	effs = x.step(IteratorReady{Iterator: "fresh"})
	if _, ok := notified[messages.Initialized](effs); ok {
		t.Fatal("processor initialized twice")
	}
	if f := must[Fetch](t, effs); f.Iterator != "fresh" {
		t.Fatalf("fetch with %q", f.Iterator)
	}
}

func TestExpiredIteratorBeforeAnyRecordUsesCheckpoint(t *testing.T) {
	x := newH(t, testConfig(), nil, lease.Checkpoint{SequenceNumber: seq(77)})
	x.step(Start{})
	x.step(IteratorReady{Iterator: "a"})
	gi := must[GetIterator](t, x.step(FetchFailed{Err: stream.ErrExpiredIterator}))
	if gi.Position.Type != ktypes.ShardIteratorTypeAtSequenceNumber || gi.Position.SequenceNumber != seq(77) {
		t.Fatalf("position %v", gi.Position)
	}
}

// ---- checkpoints ---------------------------------------------------------------------------

func TestCheckpointValidation(t *testing.T) {
	cases := []struct {
		name    string
		req     messages.Checkpoint
		wantErr error
		wantCP  string
	}{
		{"batch end", messages.CheckpointBatchEnd(), nil, seq(3)},
		{"middle", messages.CheckpointAt(seq(2), 0), nil, seq(2)},
		{"last", messages.CheckpointAt(seq(3), 0), nil, seq(3)},
		{"beyond delivered", messages.CheckpointAt(seq(4), 0), ErrCheckpointAhead, ""},
		{"not a number", messages.CheckpointAt("abc", 0), ErrCheckpointInvalid, ""},
		{"negative sub", messages.CheckpointAt(seq(2), -1), ErrCheckpointInvalid, ""},
		{"bad mode", messages.Checkpoint{Mode: 9}, ErrCheckpointInvalid, ""},
		{"none", messages.Checkpoint{}, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := inProcessing(t)
			effs := x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: c.req}})
			ref, refused := notified[messages.CheckpointRefused](effs)
			if c.wantErr != nil {
				if !refused || !errors.Is(ref.Err, c.wantErr) {
					t.Fatalf("want refusal %v, got %v (%s)", c.wantErr, ref.Err, describe(effs))
				}
				must[CheckpointRefusedEffect](t, effs)
				none[WriteCheckpoint](t, effs)
				none[Acked](t, effs) // never gossiped as progress
				return
			}
			if refused {
				t.Fatalf("refused: %v", ref.Err)
			}
			wc, ok := find[WriteCheckpoint](effs)
			if c.wantCP == "" {
				if ok {
					t.Fatalf("unexpected write %v", wc)
				}
				return
			}
			if !ok || wc.Checkpoint.SequenceNumber != c.wantCP {
				t.Fatalf("write %v, want %s", wc, c.wantCP)
			}
			if ack := must[Acked](t, effs); ack.Checkpoint != wc.Checkpoint {
				t.Fatalf("progress %v gossiped for a checkpoint %v", ack.Checkpoint, wc.Checkpoint)
			}
		})
	}
}

func TestCheckpointBackwardsRefused(t *testing.T) {
	x := newH(t, testConfig(), nil, lease.Checkpoint{SequenceNumber: seq(5)})
	x.step(Start{})
	x.step(IteratorReady{Iterator: "a"})
	x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(6, 4), NextIterator: "b"}})
	effs := x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointAt(seq(4), 0)}})
	ref, ok := notified[messages.CheckpointRefused](effs)
	if !ok || !errors.Is(ref.Err, ErrCheckpointBackwards) {
		t.Fatalf("backwards checkpoint not refused: %s", describe(effs))
	}
	none[WriteCheckpoint](t, effs)
}

func TestCheckpointsAreCoalesced(t *testing.T) {
	cfg := testConfig()
	cfg.CheckpointInterval = 5 * time.Second
	x := &h{t: t, m: New(cfg, "s", nil, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon}), now: t0}
	x.step(Start{})
	x.step(IteratorReady{Iterator: "a"})
	x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(1, 1), NextIterator: "b"}})
	must[WriteCheckpoint](t, x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}}))
	x.step(StoreDone{Op: OpCheckpoint})
	// the next two checkpoints within the interval are deferred, and the
	// newest wins when the timer fires
	var cpTimer StartTimer
	for i := 2; i <= 3; i++ {
		x.advance(300 * time.Millisecond)
		x.step(TimerFired{Kind: TimerFetch, Token: x.m.tokens[TimerFetch]})
		x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(i, 1), NextIterator: "b"}})
		effs := x.step(ProcessorReplied{Reply: messages.Processed{BatchID: uint64(i), Checkpoint: messages.CheckpointBatchEnd()}})
		none[WriteCheckpoint](t, effs)
		if st, ok := find[StartTimer](effs); ok && st.Kind == TimerCheckpoint {
			cpTimer = st
		}
	}
	if cpTimer.Token == 0 {
		t.Fatal("no checkpoint timer")
	}
	x.advance(cpTimer.After)
	wc := must[WriteCheckpoint](t, x.step(TimerFired{Kind: TimerCheckpoint, Token: cpTimer.Token}))
	if wc.Checkpoint.SequenceNumber != seq(3) {
		t.Fatalf("coalesced write %v, want the newest", wc.Checkpoint)
	}
}

func TestCheckpointWrittenWhileAnotherInFlightIsKept(t *testing.T) {
	x := inProcessing(t)
	x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(4, 2), NextIterator: "it-3"}})
	must[WriteCheckpoint](t, x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}}))
	// batch 2 acked while checkpoint 3 is being written
	effs := x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 2, Checkpoint: messages.CheckpointBatchEnd()}})
	none[WriteCheckpoint](t, effs)
	wc := must[WriteCheckpoint](t, x.step(StoreDone{Op: OpCheckpoint}))
	if wc.Checkpoint.SequenceNumber != seq(5) {
		t.Fatalf("second checkpoint %v", wc.Checkpoint)
	}
	x.step(StoreDone{Op: OpCheckpoint})
	if x.m.Checkpoint().SequenceNumber != seq(5) {
		t.Fatalf("written %v", x.m.Checkpoint())
	}
}

func TestCheckpointWriteErrorIsRetried(t *testing.T) {
	x := inProcessing(t)
	must[WriteCheckpoint](t, x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}}))
	st := timerOf(t, x.step(StoreDone{Op: OpCheckpoint, Err: errors.New("dynamodb unreachable")}), TimerStoreRetry)
	x.advance(st.After)
	wc := must[WriteCheckpoint](t, x.step(TimerFired{Kind: TimerStoreRetry, Token: st.Token}))
	if wc.Checkpoint.SequenceNumber != seq(3) {
		t.Fatalf("retried %v", wc.Checkpoint)
	}
	if x.m.State() != Processing {
		t.Fatalf("state %v", x.m.State())
	}
}

// ---- renewal -----------------------------------------------------------------------------------

func TestRenewOnlyWhenIdle(t *testing.T) {
	x := inProcessing(t)
	x.advance(20 * time.Second)
	sent := x.now
	must[WriteCheckpoint](t, x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}}))
	x.advance(50 * time.Millisecond)
	effs := x.step(StoreDone{Op: OpCheckpoint})
	// The checkpoint renewed the lease: the next renewal is due
	// RenewInterval after it was sent, not after the last one.
	st := timerOf(t, effs, TimerRenew)
	if got := x.now.Add(st.After); !got.Equal(sent.Add(30 * time.Second)) {
		t.Fatalf("renewal due at %v, want %v", got.Sub(t0), sent.Add(30*time.Second).Sub(t0))
	}
	x.now = x.now.Add(st.After)
	must[Renew](t, x.step(TimerFired{Kind: TimerRenew, Token: st.Token}))
}

// ---- processor failures --------------------------------------------------------------------------

func TestProcessorFailureRedeliversSameBatch(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
			x := inProcessing(t)
			for attempt := 1; attempt <= 5; attempt++ {
				var effs []Effect
				if crash {
					effs = x.step(ProcessorCrashed{Reason: "boom"})
				} else {
					effs = x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Err: errors.New("boom")}})
				}
				pf := must[ProcessorFailure](t, effs)
				if pf.Attempt != attempt || pf.Crashed != crash {
					t.Fatalf("failure %+v", pf)
				}
				none[WriteCheckpoint](t, effs)
				st := timerOf(t, effs, TimerRedeliver)
				c := x.m.cfg.ProcessorBackoff.Ceiling(attempt)
				if st.After < c/2 || st.After > c {
					t.Fatalf("redeliver after %v, ceiling %v", st.After, c)
				}
				effs = x.step(TimerFired{Kind: TimerRedeliver, Token: st.Token})
				d := must[Deliver](t, effs)
				if d.Batch.BatchID != 1 || d.Batch.Attempt != attempt+1 || len(d.Batch.Records) != 3 {
					t.Fatalf("redelivered %+v", d.Batch)
				}
				init, ok := notified[messages.Initialized](effs)
				if ok != crash || (ok && !init.Restarted) {
					t.Fatalf("Initialized before redelivery = %v (crash %v)", ok, crash)
				}
			}
			// finally it succeeds and the checkpoint moves
			wc := must[WriteCheckpoint](t, x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}}))
			if wc.Checkpoint.SequenceNumber != seq(3) {
				t.Fatalf("checkpoint %v", wc.Checkpoint)
			}
		})
	}
}

func TestFailurePolicyDeadLetter(t *testing.T) {
	cfg := testConfig()
	cfg.FailurePolicy = DeadLetter
	x := &h{t: t, m: New(cfg, "s", nil, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon}), now: t0}
	x.step(Start{})
	x.step(IteratorReady{Iterator: "a"})
	x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(1, 2), NextIterator: "b"}})
	var effs []Effect
	for i := 1; i <= 3; i++ {
		effs = x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Err: errors.New("poison")}})
		if i < 3 {
			x.step(TimerFired{Kind: TimerRedeliver, Token: x.m.tokens[TimerRedeliver]})
		}
	}
	dl := must[DeadLetterBatch](t, effs)
	if dl.Batch.BatchID != 1 || len(dl.Batch.Records) != 2 {
		t.Fatalf("dead-lettered %+v", dl.Batch)
	}
	none[WriteCheckpoint](t, effs) // not before the handler took it
	effs = x.step(DeadLettered{BatchID: 1})
	if wc := must[WriteCheckpoint](t, effs); wc.Checkpoint.SequenceNumber != seq(2) {
		t.Fatalf("checkpoint past the dead-lettered batch: %v", wc.Checkpoint)
	}
	if x.m.State() != Processing {
		t.Fatalf("state %v", x.m.State())
	}
}

func TestFailurePolicyStopShard(t *testing.T) {
	cfg := testConfig()
	cfg.FailurePolicy = StopShard
	x := &h{t: t, m: New(cfg, "s", nil, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon}), now: t0}
	x.step(Start{})
	x.step(IteratorReady{Iterator: "a"})
	x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(1, 2), NextIterator: "b"}})
	var effs []Effect
	for i := 1; i <= 3; i++ {
		effs = x.step(ProcessorCrashed{Reason: "poison"})
		if i < 3 {
			x.step(TimerFired{Kind: TimerRedeliver, Token: x.m.tokens[TimerRedeliver]})
		}
	}
	none[WriteCheckpoint](t, effs)
	must[Release](t, effs)
	f := must[Finished](t, x.step(StoreDone{Op: OpRelease}))
	if f.Outcome != Failed || f.Err == nil {
		t.Fatalf("finished %+v", f)
	}
}

// ---- shard end --------------------------------------------------------------------------------------

func TestShardEndWaitsForProcessorAck(t *testing.T) {
	x := inProcessing(t) // batch 1 (records 1..3) with the processor
	effs := x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(4, 1), ChildShards: []stream.Shard{{ID: "c1"}, {ID: "c2"}}}})
	none[WriteCheckpoint](t, effs) // no ack yet: no SHARD_END
	none[Fetch](t, effs)
	// ack batch 1: batch 2 (the last) is delivered, still no SHARD_END
	effs = x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1}})
	must[Deliver](t, effs)
	none[WriteCheckpoint](t, effs)
	// ack the last batch: SHARD_END with children, automatically
	effs = x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 2}})
	wc := must[WriteCheckpoint](t, effs)
	if !wc.Checkpoint.IsShardEnd() || !reflect.DeepEqual(wc.Children, []string{"c1", "c2"}) {
		t.Fatalf("shard end write %+v", wc)
	}
	if x.m.State() != ShuttingDown {
		t.Fatalf("state %v", x.m.State())
	}
	effs = x.step(StoreDone{Op: OpCheckpoint})
	if _, ok := notified[messages.ShardEnded](effs); !ok {
		t.Fatalf("processor not told of shard end: %s", describe(effs))
	}
	must[Release](t, effs)
	f := must[Finished](t, x.step(StoreDone{Op: OpRelease}))
	if f.Outcome != ShardEnd || !reflect.DeepEqual(f.Children, []string{"c1", "c2"}) {
		t.Fatalf("finished %+v", f)
	}
}

func TestShardEndWithoutAckNeverCheckpoints(t *testing.T) {
	x := inProcessing(t)
	x.step(FetchSucceeded{Batch: stream.Batch{ChildShards: []stream.Shard{{ID: "c1"}}}})
	// the processor keeps failing: no SHARD_END is ever written
	for i := 0; i < 4; i++ {
		effs := x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Err: errors.New("no")}})
		none[WriteCheckpoint](t, effs)
		effs = x.step(TimerFired{Kind: TimerRedeliver, Token: x.m.tokens[TimerRedeliver]})
		none[WriteCheckpoint](t, effs)
	}
	// a stop now releases without SHARD_END
	x.step(StopRequested{})
	x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Err: errors.New("no")}})
	effs := x.step(ShutdownAcked{})
	none[WriteCheckpoint](t, effs)
	must[Release](t, effs)
}

func TestShardEndWithoutChildShardsListsThem(t *testing.T) {
	x := inProcessing(t)
	x.step(FetchSucceeded{Batch: stream.Batch{}}) // kinesalite: no ChildShards
	effs := x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1}})
	must[ListChildren](t, effs)
	none[WriteCheckpoint](t, effs)
	st := timerOf(t, x.step(ChildrenFound{Err: errors.New("throttled")}), TimerStoreRetry)
	must[ListChildren](t, x.step(TimerFired{Kind: TimerStoreRetry, Token: st.Token}))
	wc := must[WriteCheckpoint](t, x.step(ChildrenFound{IDs: []string{"c7"}}))
	if !wc.Checkpoint.IsShardEnd() || !reflect.DeepEqual(wc.Children, []string{"c7"}) {
		t.Fatalf("write %+v", wc)
	}
}

// ---- graceful stop ---------------------------------------------------------------------------------------

func TestGracefulStopDropsPrefetchAndCheckpointsLastProcessed(t *testing.T) {
	x := inProcessing(t)
	x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(4, 5), NextIterator: "n"}}) // buffered
	x.step(StopRequested{})
	effs := x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1}})
	none[Deliver](t, effs) // the prefetched batch is never delivered
	if _, ok := notified[messages.ShutdownRequested](effs); !ok {
		t.Fatalf("no AwaitingShutdownAck: %s", describe(effs))
	}
	effs = x.step(ShutdownAcked{Ack: messages.ShutdownAck{Checkpoint: messages.CheckpointBatchEnd()}})
	if wc := must[WriteCheckpoint](t, effs); wc.Checkpoint.SequenceNumber != seq(3) {
		t.Fatalf("shutdown checkpoint %v: must be the last record processed, not prefetched", wc.Checkpoint)
	}
	none[Release](t, effs) // release waits for the checkpoint
	must[Release](t, x.step(StoreDone{Op: OpCheckpoint}))
}

func TestGracefulStopTimesOutOnSilentProcessor(t *testing.T) {
	x := inShutdownRequested(t)
	st := x.m.tokens[TimerShutdown]
	x.advance(10 * time.Second)
	effs := x.step(TimerFired{Kind: TimerShutdown, Token: st})
	none[WriteCheckpoint](t, effs)
	must[Release](t, effs)
	// a late reply changes nothing
	for _, e := range x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}}) {
		if _, ok := e.(WriteCheckpoint); ok {
			t.Fatal("late reply checkpointed")
		}
	}
}

func TestStopTwiceIsHarmless(t *testing.T) {
	x := inShutdownRequested(t)
	if effs := x.step(StopRequested{}); len(effs) != 0 {
		t.Fatalf("second stop: %s", describe(effs))
	}
}

func TestShutdownAfterFailedBatchDoesNotCheckpointIt(t *testing.T) {
	x := inProcessing(t) // batch 1 = records 1..3
	x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(4, 2), NextIterator: "n"}})
	must[WriteCheckpoint](t, x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}}))
	x.step(StoreDone{Op: OpCheckpoint})
	// batch 2 (records 4..5) is with the processor when the stop comes; it fails
	x.step(StopRequested{})
	effs := x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 2, Err: errors.New("boom")}})
	if _, ok := notified[messages.ShutdownRequested](effs); !ok {
		t.Fatalf("no AwaitingShutdownAck: %s", describe(effs))
	}
	effs = x.step(ShutdownAcked{Ack: messages.ShutdownAck{Checkpoint: messages.CheckpointBatchEnd()}})
	none[WriteCheckpoint](t, effs) // already at record 3; record 5 was never processed
	must[Release](t, effs)
}

func TestResumeInsideAggregateSkipsCheckpointedSubRecords(t *testing.T) {
	x := newH(t, testConfig(), nil, lease.Checkpoint{SequenceNumber: seq(7), SubSequenceNumber: 2})
	gi := must[GetIterator](t, x.step(Start{}))
	if gi.Position.Type != ktypes.ShardIteratorTypeAtSequenceNumber || gi.Position.SequenceNumber != seq(7) {
		t.Fatalf("resume inside an aggregate at %v, want AT_SEQUENCE_NUMBER %s", gi.Position, seq(7))
	}
	effs := x.step(IteratorReady{Iterator: "a"})
	if init, ok := notified[messages.Initialized](effs); !ok || init.SubSequenceNumber != 2 {
		t.Fatalf("Initialized %+v", init)
	}
	agg := []stream.Record{
		{SequenceNumber: seq(7), SubSequenceNumber: 0}, {SequenceNumber: seq(7), SubSequenceNumber: 1},
		{SequenceNumber: seq(7), SubSequenceNumber: 2}, {SequenceNumber: seq(7), SubSequenceNumber: 3},
		{SequenceNumber: seq(8)},
	}
	d := must[Deliver](t, x.step(FetchSucceeded{Batch: stream.Batch{Records: agg, NextIterator: "b"}}))
	if len(d.Batch.Records) != 2 || d.Batch.Records[0].SubSequenceNumber != 3 || d.Batch.Records[1].SequenceNumber != seq(8) {
		t.Fatalf("delivered %+v, want sub-record 3 of %s and then %s", d.Batch.Records, seq(7), seq(8))
	}
}

func TestRecordsAlreadyReceivedAreNeverDeliveredAgain(t *testing.T) {
	x := inProcessing(t) // records 1..3 delivered, fetch in flight
	// a server that repeats records 2..3 along with 4
	effs := x.step(FetchSucceeded{Batch: stream.Batch{Records: append(recs(2, 2), recs(4, 1)...), NextIterator: "n"}})
	none[Deliver](t, effs) // buffered behind batch 1
	d := must[Deliver](t, x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1}}))
	if len(d.Batch.Records) != 1 || d.Batch.Records[0].SequenceNumber != seq(4) {
		t.Fatalf("delivered %+v, want only record 4", d.Batch.Records)
	}
	// a batch made only of repeats is an empty batch
	x.advance(time.Second)
	x.step(TimerFired{Kind: TimerFetch, Token: x.m.tokens[TimerFetch]})
	effs = x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(3, 2), NextIterator: "m"}})
	none[Deliver](t, effs)
	timerOf(t, effs, TimerFetch)
}
