package shardfsm

import (
	"errors"
	"time"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

// ---- Events ---------------------------------------------------------------

// Event is an input to Step.
type Event interface{ isEvent() }

type (
	// Start begins the machine's life (the actor has started and holds the
	// lease). LeaseWrittenAt is when the write that gave us the lease (the
	// take) was sent; zero: now. The self-fence counts from there: a take
	// sent longer ago than LeaseExpiry − margin finishes the machine at
	// once (Fenced).
	//
	// VerifyFirst: the process was paused (Pause says how long, or why)
	// between the take's send and this start, so the take proves nothing
	// about the time after it: the lease may have been taken meanwhile. The
	// machine starts verifying: a renewal at once, and nothing delivered
	// until a lease write sent at or after the start succeeds, as after a
	// Paused event.
	Start struct {
		LeaseWrittenAt time.Time
		VerifyFirst    bool
		Pause          Paused
	}
	// ParentsChecked reports whether every parent row is at SHARD_END (a
	// missing row counts as done: the parent expired from the stream).
	ParentsChecked struct {
		Done bool
		Err  error
	}
	// TimerFired is a timer set by a StartTimer effect.
	TimerFired struct {
		Kind  TimerKind
		Token uint64
	}
	// IteratorReady answers GetIterator.
	IteratorReady struct{ Iterator string }
	// IteratorFailed answers GetIterator with an error (classified by package stream).
	IteratorFailed struct{ Err error }
	// FetchSucceeded answers Fetch.
	FetchSucceeded struct{ Batch stream.Batch }
	// FetchFailed answers Fetch with an error (classified by package stream).
	FetchFailed struct{ Err error }
	// ProcessorReplied is the processor's Processed reply.
	ProcessorReplied struct{ Reply messages.Processed }
	// ProcessorCrashed: the processor panicked and its supervisor restarted it.
	ProcessorCrashed struct{ Reason string }
	// ShutdownAcked is the processor's reply to messages.ShutdownRequested.
	ShutdownAcked struct{ Ack messages.ShutdownAck }
	// ChildrenFound answers ListChildren.
	ChildrenFound struct {
		IDs []string
		Err error
	}
	// StoreDone answers a lease-table write (WriteCheckpoint, Renew, Release).
	// Err is nil, wraps lease.ErrLeaseLost, or is another error.
	StoreDone struct {
		Op  StoreOp
		Err error
	}
	// StopRequested asks for a graceful stop.
	StopRequested struct{}
	// DeadLettered answers DeadLetterBatch.
	DeadLettered struct {
		BatchID uint64
		Err     error
	}
	// Paused: this process was stopped for a while (SIGSTOP, a frozen VM, a
	// long stop-the-world pause), long enough for gossip to have declared
	// it dead and another node to have taken the lease, or it learnt that
	// it was declared dead (Reason says so; For is then 0). Nothing more is
	// delivered until a lease write sent after the event succeeds.
	Paused struct {
		For    time.Duration
		Reason string // "" for a pause seen on the clocks
	}
)

func (Start) isEvent()            {}
func (ParentsChecked) isEvent()   {}
func (TimerFired) isEvent()       {}
func (IteratorReady) isEvent()    {}
func (IteratorFailed) isEvent()   {}
func (FetchSucceeded) isEvent()   {}
func (FetchFailed) isEvent()      {}
func (ProcessorReplied) isEvent() {}
func (ProcessorCrashed) isEvent() {}
func (ShutdownAcked) isEvent()    {}
func (ChildrenFound) isEvent()    {}
func (StoreDone) isEvent()        {}
func (StopRequested) isEvent()    {}
func (DeadLettered) isEvent()     {}
func (Paused) isEvent()           {}

// ---- Effects --------------------------------------------------------------

// Effect is an output of Step for the shell to carry out, in order.
type Effect interface{ isEffect() }

// StoreOp names a lease-table write.
type StoreOp int

// Lease-table writes.
const (
	OpCheckpoint StoreOp = iota + 1
	OpRenew
	OpRelease
)

func (o StoreOp) String() string {
	return [...]string{"", "checkpoint", "renew", "release"}[o]
}

type (
	// CheckParents reads the parents' rows; answer with ParentsChecked.
	CheckParents struct{ ShardIDs []string }
	// GetIterator gets a shard iterator; answer with IteratorReady/IteratorFailed.
	GetIterator struct{ Position stream.Position }
	// Fetch calls GetRecords; answer with FetchSucceeded/FetchFailed.
	Fetch struct {
		Iterator string
		Limit    int32
	}
	// Deliver sends a batch to the processor (messages.Batch); the reply
	// comes back as ProcessorReplied.
	Deliver struct{ Batch messages.Batch }
	// Notify sends an informational or request message to the processor:
	// messages.Initialized, ShutdownRequested, ShardEnded, LeaseLost,
	// CheckpointRefused. ShutdownRequested is answered with ShutdownAcked.
	Notify struct{ Msg any }
	// WriteCheckpoint writes a checkpoint (with children at SHARD_END);
	// answer with StoreDone{OpCheckpoint}.
	WriteCheckpoint struct {
		Checkpoint lease.Checkpoint
		Children   []string
	}
	// Renew renews the lease; answer with StoreDone{OpRenew}.
	Renew struct{}
	// Release releases the lease; answer with StoreDone{OpRelease}.
	Release struct{}
	// ListChildren finds the children of this (ended) shard by ListShards;
	// answer with ChildrenFound.
	ListChildren struct{}
	// StartTimer asks for TimerFired{Kind, Token} after the delay. A newer
	// timer of the same kind supersedes older ones (their tokens go stale).
	StartTimer struct {
		Kind  TimerKind
		After time.Duration
		Token uint64
	}
	// DeadLetterBatch hands a batch that exhausted its attempts to the
	// dead-letter handler, off the actor; answer with DeadLettered. The
	// checkpoint moves past the batch only once the handler succeeded.
	DeadLetterBatch struct {
		Batch   messages.Batch
		Err     error
		Attempt int // 1 for the first call, more after a failed one
	}
	// ReplaceProcessor: the processor did not answer in time. Stop it
	// (cancel what it runs) and start a fresh one under a new name; the
	// batch is delivered again to the new one.
	ReplaceProcessor struct{ BatchID uint64 }
	// Stalled reports a change of the shard's stall state: Cause is the
	// service it stalled on ("kinesis", "dynamodb", "processor"), "" when
	// it moves again.
	Stalled struct{ Cause string }
	// Acked: the processor acknowledged records up to Checkpoint, which the
	// next checkpoint write will write (the shell tells the shard's
	// successors, so that a new owner after a crash need not read again
	// what was already processed).
	Acked struct{ Checkpoint lease.Checkpoint }
	// VerifyingLease reports that deliveries wait for a lease write after
	// a pause of the process (for logs): Paused and Reason as in Paused.
	VerifyingLease struct {
		Paused time.Duration
		Reason string
	}
	// CheckpointRefusedEffect reports a refused checkpoint request (for
	// metrics and logs); a Notify with messages.CheckpointRefused precedes it.
	CheckpointRefusedEffect struct{ Err error }
	// ProcessorFailure reports one failed delivery (for metrics and logs).
	ProcessorFailure struct {
		BatchID uint64
		Attempt int
		Err     error
		Crashed bool
	}
	// Bisected reports a failed part of Records records split in two, the
	// first First records delivered next (for metrics and logs).
	Bisected struct {
		BatchID uint64
		Records int
		First   int
	}
	// RecordsDeadLettered reports records the dead-letter handler took:
	// Expired, turned away by MaxRecordAge; else they used up their
	// attempts (for metrics and logs).
	RecordsDeadLettered struct {
		Records int
		Expired bool
	}
	// Finished: the machine reached ShutdownComplete; the shell tells the
	// coordinator and stops the actor.
	Finished struct {
		Outcome  Outcome
		Children []string // at ShardEnd
		Err      error    // for LeaseLost and Failed
	}
)

func (CheckParents) isEffect()            {}
func (GetIterator) isEffect()             {}
func (Fetch) isEffect()                   {}
func (Deliver) isEffect()                 {}
func (Notify) isEffect()                  {}
func (WriteCheckpoint) isEffect()         {}
func (Renew) isEffect()                   {}
func (Release) isEffect()                 {}
func (ListChildren) isEffect()            {}
func (StartTimer) isEffect()              {}
func (DeadLetterBatch) isEffect()         {}
func (ReplaceProcessor) isEffect()        {}
func (Stalled) isEffect()                 {}
func (Acked) isEffect()                   {}
func (VerifyingLease) isEffect()          {}
func (CheckpointRefusedEffect) isEffect() {}
func (ProcessorFailure) isEffect()        {}
func (Finished) isEffect()                {}
func (Bisected) isEffect()                {}
func (RecordsDeadLettered) isEffect()     {}

// Errors describing refused checkpoints.
var (
	ErrCheckpointBackwards = errors.New("checkpoint goes backwards")
	ErrCheckpointAhead     = errors.New("checkpoint is beyond the last record delivered")
	ErrCheckpointInvalid   = errors.New("checkpoint request is malformed")
)

// ErrFailedNotInBatch fails a whole batch whose Processed.Failed names a
// position that is not one of its records.
var ErrFailedNotInBatch = errors.New("Processed.Failed names a record that is not in the batch")

// ErrRecordTooOld is the cause given to the dead-letter handler for records
// older than MaxRecordAge.
var ErrRecordTooOld = errors.New("record older than MaxRecordAge")
