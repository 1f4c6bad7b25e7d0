package shardfsm

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

// A process paused for 15 s (shorter than LeaseExpiry, so the self-fence
// does not fire) woke and went on delivering on shards other nodes had
// taken meanwhile: 53 batches on one shard in the chaos run. After a pause
// the machine delivers nothing more until a lease write sent after it
// succeeds; the batch in flight is all the processor gets.
func TestNothingDeliveredAfterAPauseUntilTheLeaseIsVerified(t *testing.T) {
	t.Run("lease lost meanwhile", func(t *testing.T) {
		x := inProcessing(t) // batch 1 with the processor, a prefetch in flight
		x.advance(15 * time.Second)
		effs := x.step(Paused{For: 15 * time.Second})
		must[VerifyingLease](t, effs)
		must[Renew](t, effs)
		// the processor finishes the batch it had: its checkpoint is queued
		effs = x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}})
		none[Deliver](t, effs)
		// the prefetch answers: held, not delivered
		effs = x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(4, 2), NextIterator: "it-3"}})
		none[Deliver](t, effs)
		// the renewal is refused: another node holds the lease
		effs = x.step(StoreDone{Op: OpRenew, Err: lease.ErrLeaseLost})
		none[Deliver](t, effs)
		if _, ok := notified[messages.LeaseLost](effs); !ok {
			t.Fatalf("processor not told LeaseLost: %s", describe(effs))
		}
		if x.m.State() != ShutdownComplete || x.m.Outcome() != LeaseLost {
			t.Fatalf("state %v outcome %v", x.m.State(), x.m.Outcome())
		}
	})
	t.Run("lease still ours", func(t *testing.T) {
		x := inProcessing(t)
		x.advance(5 * time.Second)
		effs := x.step(Paused{For: 5 * time.Second})
		must[Renew](t, effs)
		x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}})
		none[Deliver](t, x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(4, 2), NextIterator: "it-3"}}))
		effs = x.step(StoreDone{Op: OpRenew})
		d := must[Deliver](t, effs)
		if len(d.Batch.Records) != 2 || d.Batch.Records[0].SequenceNumber != seq(4) {
			t.Fatalf("delivered %+v after the renewal, want records 4-5", d.Batch)
		}
		must[Fetch](t, effs) // and reading goes on
	})
	t.Run("a write sent before the pause proves nothing", func(t *testing.T) {
		x := inProcessing(t)
		// the processor's first checkpoint goes out at once, and is in
		// flight across the pause
		effs := x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}})
		must[WriteCheckpoint](t, effs)
		x.advance(20 * time.Second)
		x.step(Paused{For: 20 * time.Second})
		none[Deliver](t, x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(4, 2), NextIterator: "it-3"}}))
		// the checkpoint sent before the pause succeeds: a renewal follows
		effs = x.step(StoreDone{Op: OpCheckpoint})
		none[Deliver](t, effs)
		must[Renew](t, effs)
		effs = x.step(StoreDone{Op: OpRenew})
		must[Deliver](t, effs)
	})
	t.Run("a redelivery waits too", func(t *testing.T) {
		x := inProcessing(t)
		effs := x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Err: errors.New("sink refused")}})
		st := timerOf(t, effs, TimerRedeliver)
		x.advance(10 * time.Second)
		x.step(Paused{For: 10 * time.Second})
		none[Deliver](t, x.step(TimerFired{Kind: TimerRedeliver, Token: st.Token}))
		d := must[Deliver](t, x.step(StoreDone{Op: OpRenew}))
		if d.Batch.Attempt != 2 {
			t.Fatalf("redelivered attempt %d, want 2", d.Batch.Attempt)
		}
	})
}

// A verification is never lost. A 5 s pause ended while a lease write was
// in flight: the verification was only queued, and the old write's success
// (a renewal), or a checkpoint the processor asked for meanwhile (deferred
// by CheckpointInterval), dropped it: the shard then delivered nothing for
// ~25 s, though nobody had taken its lease. Now the verification survives
// an earlier write's answer and sends the next write at once (a checkpoint
// queued meanwhile is that write); the first delivery after the pause
// comes right after a write sent after the pause succeeds, with no wait for
// CheckpointInterval or RenewInterval.
func TestAVerificationIsNeverLost(t *testing.T) {
	for _, inFlight := range []StoreOp{OpRenew, OpCheckpoint} {
		for _, meanwhile := range []bool{false, true} {
			for _, answer := range []string{"succeeds", "fails", "lost"} {
				name := fmt.Sprintf("%s in flight/checkpoint meanwhile=%v/it %s", inFlight, meanwhile, answer)
				t.Run(name, func(t *testing.T) {
					verificationNeverLost(t, inFlight, meanwhile, answer)
				})
			}
		}
	}
}

func verificationNeverLost(t *testing.T, inFlight StoreOp, meanwhile bool, answer string) {
	cfg := testConfig()
	cfg.LeaseExpiry = 90 * time.Second
	cfg.RenewInterval = 30 * time.Second
	cfg.CheckpointInterval = time.Minute
	x := inProcessingCfg(t, cfg) // batch 1 (records 1-3) with the processor
	fetch := func(from int) []Effect {
		t.Helper()
		x.advance(time.Second)
		must[Fetch](t, x.step(TimerFired{Kind: TimerFetch, Token: x.m.tokens[TimerFetch]}))
		return x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(from, 2), NextIterator: "it"}})
	}
	// The first checkpoint goes out at once.
	must[WriteCheckpoint](t, x.step(ProcessorReplied{Reply: messages.Processed{BatchID: 1, Checkpoint: messages.CheckpointBatchEnd()}}))
	if inFlight == OpRenew {
		x.step(StoreDone{Op: OpCheckpoint}) // the next checkpoint waits a minute
	}
	must[Deliver](t, fetch(4)) // batch 2 (records 4-5) with the processor
	none[Deliver](t, fetch(6)) // batch 3 (records 6-7) buffered
	if inFlight == OpRenew {
		x.advance(30 * time.Second)
		must[Renew](t, x.step(TimerFired{Kind: TimerRenew, Token: x.m.tokens[TimerRenew]}))
	}
	// A write is in flight when the process wakes from a 5 s pause.
	x.advance(5 * time.Second)
	effs := x.step(Paused{For: 5 * time.Second})
	must[VerifyingLease](t, effs)
	noWrite(t, effs)
	// The processor answers batch 2 meanwhile.
	reply := messages.Processed{BatchID: 2}
	if meanwhile {
		reply.Checkpoint = messages.CheckpointBatchEnd()
	}
	effs = x.step(ProcessorReplied{Reply: reply})
	none[Deliver](t, effs)
	noWrite(t, effs)

	// The write sent before the pause answers.
	x.advance(10 * time.Millisecond)
	switch answer {
	case "lost":
		effs = x.step(StoreDone{Op: inFlight, Err: lease.ErrLeaseLost})
		none[Deliver](t, effs)
		if _, ok := notified[messages.LeaseLost](effs); !ok {
			t.Fatalf("processor not told LeaseLost: %s", describe(effs))
		}
		if x.m.State() != ShutdownComplete || x.m.Outcome() != LeaseLost {
			t.Fatalf("state %v outcome %v", x.m.State(), x.m.Outcome())
		}
		return
	case "fails":
		effs = x.step(StoreDone{Op: inFlight, Err: errors.New("dynamodb unreachable")})
		none[Deliver](t, effs)
		noWrite(t, effs)
		st := timerOf(t, effs, TimerStoreRetry)
		x.advance(st.After)
		effs = x.step(TimerFired{Kind: TimerStoreRetry, Token: st.Token})
	default:
		effs = x.step(StoreDone{Op: inFlight})
	}
	// The verification goes out now: the checkpoint queued meanwhile (or
	// the failed one again), else a renewal.
	none[Deliver](t, effs)
	op, cp := OpRenew, 0
	switch {
	case meanwhile:
		op, cp = OpCheckpoint, 5
	case inFlight == OpCheckpoint && answer == "fails":
		op, cp = OpCheckpoint, 3
	}
	if op == OpCheckpoint {
		if wc := must[WriteCheckpoint](t, effs); wc.Checkpoint.SequenceNumber != seq(cp) {
			t.Fatalf("verification wrote checkpoint %v, want after record %d", wc.Checkpoint, cp)
		}
	} else {
		must[Renew](t, effs)
	}
	x.advance(10 * time.Millisecond)
	d := must[Deliver](t, x.step(StoreDone{Op: op}))
	if d.Batch.Records[0].SequenceNumber != seq(6) {
		t.Fatalf("delivered %+v after the verification, want records 6-7", d.Batch)
	}
}

func noWrite(t *testing.T, effs []Effect) {
	t.Helper()
	none[WriteCheckpoint](t, effs)
	none[Renew](t, effs)
	none[Release](t, effs)
}

// A pause right after a take: the coordinator sent the take, the process
// was stopped, and the shard actor's first step ran on waking. The take
// proves nothing about the time after it; the machine started as if
// nothing had happened and delivered a whole lease's worth (400 of 400
// records in one run) on a lease another node had taken during the pause.
// Started after a pause that overlapped the take (Start.VerifyFirst), the
// machine delivers nothing until a lease write sent after its start
// succeeds; a take older than the self-fence finishes it at once.
func TestStartAfterAPauseOverlappingTheTake(t *testing.T) {
	cfg := testConfig()
	cfg.LeaseExpiry = 90 * time.Second
	cfg.RenewInterval = 30 * time.Second
	cfg.CheckpointInterval = time.Minute
	start := func(t *testing.T, parents []string, paused time.Duration) (*h, []Effect) {
		x := &h{t: t, m: New(cfg, "s", parents, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon}), now: t0}
		x.advance(paused) // the take was sent at t0
		effs := x.step(Start{LeaseWrittenAt: t0, VerifyFirst: true, Pause: Paused{For: paused}})
		return x, effs
	}
	read := func(x *h) []Effect {
		must[Fetch](x.t, x.step(IteratorReady{Iterator: "a"}))
		return x.step(FetchSucceeded{Batch: stream.Batch{Records: recs(1, 3), NextIterator: "b"}})
	}
	t.Run("lease still ours", func(t *testing.T) {
		x, effs := start(t, nil, 15*time.Second)
		must[VerifyingLease](t, effs)
		must[Renew](t, effs) // at once, not RenewInterval after the take
		must[GetIterator](t, effs)
		none[Deliver](t, read(x))
		d := must[Deliver](t, x.step(StoreDone{Op: OpRenew}))
		if d.Batch.Records[0].SequenceNumber != seq(1) || len(d.Batch.Records) != 3 {
			t.Fatalf("delivered %+v after the renewal, want records 1-3", d.Batch)
		}
	})
	t.Run("lease lost", func(t *testing.T) {
		x, _ := start(t, nil, 15*time.Second)
		none[Deliver](t, read(x))
		effs := x.step(StoreDone{Op: OpRenew, Err: lease.ErrLeaseLost})
		none[Deliver](t, effs)
		if _, ok := notified[messages.LeaseLost](effs); !ok {
			t.Fatalf("processor not told LeaseLost: %s", describe(effs))
		}
		if x.m.State() != ShutdownComplete || x.m.Outcome() != LeaseLost {
			t.Fatalf("state %v outcome %v", x.m.State(), x.m.Outcome())
		}
		for name, ev := range events {
			for _, e := range x.m.Step(x.now, ev) {
				if _, ok := e.(Deliver); ok {
					t.Fatalf("after the loss, %s delivered", name)
				}
			}
		}
	})
	t.Run("a failed renewal is retried, then delivers", func(t *testing.T) {
		x, _ := start(t, nil, 5*time.Second)
		none[Deliver](t, read(x))
		effs := x.step(StoreDone{Op: OpRenew, Err: errors.New("dynamodb unreachable")})
		none[Deliver](t, effs)
		st := timerOf(t, effs, TimerStoreRetry)
		x.advance(st.After)
		must[Renew](t, x.step(TimerFired{Kind: TimerStoreRetry, Token: st.Token}))
		must[Deliver](t, x.step(StoreDone{Op: OpRenew}))
	})
	t.Run("verified while waiting on parents", func(t *testing.T) {
		x, effs := start(t, []string{"p"}, 5*time.Second)
		must[Renew](t, effs)
		must[CheckParents](t, effs)
		x.step(StoreDone{Op: OpRenew})
		must[GetIterator](t, x.step(ParentsChecked{Done: true}))
		must[Deliver](t, read(x))
	})
	t.Run("a pause longer than the fence", func(t *testing.T) {
		// The take was sent 100 s ago (LeaseExpiry 90 s): the lease may be
		// another's, even without a pause seen.
		for _, verify := range []bool{true, false} {
			x := &h{t: t, m: New(cfg, "s", nil, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon}), now: t0.Add(100 * time.Second)}
			effs := x.step(Start{LeaseWrittenAt: t0, VerifyFirst: verify, Pause: Paused{For: 100 * time.Second}})
			if f := must[Finished](t, effs); f.Outcome != Fenced {
				t.Fatalf("verify=%v: finished %+v", verify, f)
			}
			none[GetIterator](t, effs)
			noWrite(t, effs)
		}
	})
	t.Run("control: no pause", func(t *testing.T) {
		x := &h{t: t, m: New(cfg, "s", nil, lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon}), now: t0}
		effs := x.step(Start{LeaseWrittenAt: t0})
		noWrite(t, effs)
		none[VerifyingLease](t, effs)
		must[Deliver](t, read(x))
	})
}
