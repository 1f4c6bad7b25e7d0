package shardfsm

import (
	"errors"
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
