// Package shardfsm owns the life of one shard as a pure state machine:
// Machine.Step takes an event and the current time and returns the effects
// to carry out. It does no I/O, starts no goroutines and reads no clock; the
// shard actor (package internal/engine) is the thin shell that executes effects and
// turns their results and timers back into events.
//
// States follow the archived Go KCL's shard consumer:
//
//	WaitingOnParentShards → Initializing → Processing → AwaitingShutdownAck
//	    → ShuttingDown → ShutdownComplete
//
// with lease loss and self-fencing leading straight to ShutdownComplete from
// anywhere.
//
// Self-fencing: a lease is only as good as its last successful write. The
// machine remembers when the last write that succeeded was sent (a take or
// any lease write: the row may have changed at any moment after that) and
// delivers nothing once LeaseExpiry minus a safety margin has passed since
// then: another node may judge the lease expired at LeaseExpiry after it
// read that write, which is never earlier. The check runs before every
// delivery with the time the event is handled, so a process that was paused
// (SIGSTOP, a long GC, a frozen VM) and wakes with the monotonic clock far
// ahead delivers nothing more; at most the batch it had in flight is
// processed. A timer finishes the machine at that moment (outcome Fenced)
// even when nothing else happens.
//
// After a pause: a process that was stopped for a while (event Paused; the
// shell's pause watch tells) may have been declared dead by gossip and its
// lease taken, long before LeaseExpiry. It delivers nothing more (a batch
// read or a redelivery due is held) until a lease write sent after the
// pause succeeds: fenced on the lease counter, its success proves the lease
// is still ours; its lease-lost answer finishes the machine (LeaseLost) with
// nothing more delivered. The same holds for a shard whose take a pause
// overlapped (from the take's send to the machine's start: the shell
// starts the machine with Start.VerifyFirst): its first delivery waits for
// a lease write sent after its start (a renewal sent at once), and a take
// sent longer ago than the self-fence (a pause longer than it) finishes the
// machine at its start (Fenced) with nothing read or written. The
// verification is never lost: a write sent before the pause proves
// nothing, and its answer (a success, a failure) leaves the verification in
// place; the next write goes out at once, the checkpoint pending (even
// within CheckpointInterval: it counts as the verification), else a
// renewal. So the first delivery after a pause comes right after a write
// sent after it succeeds, never a CheckpointInterval or RenewInterval
// later.
//
// Progress: the machine knows when the shard last moved (a successful fetch
// or iterator, a successful answer of the processor, a successful parent
// check). No
// progress for StallTimeout, or lease writes failing for StallTimeout, is a
// stall, reported with the service it stalled on (Stalled effects); a batch
// the processor holds for less than ProcessTimeout is not one. The machine
// does not give the shard up by itself: the coordinator decides where it goes.
//
// Invariants the machine keeps:
//   - at most one GetRecords call in flight and at most one batch buffered
//     (prefetched) while the processor works on the one delivered;
//   - at most one lease-table write in flight (every write is fenced on the
//     lease counter, so two at once would fence each other out);
//   - the processor has at most one batch at a time, and a failed batch is
//     delivered again, never skipped, unless the failure policy says so;
//   - a checkpoint never moves backwards and never passes the last record
//     delivered to the processor;
//   - after a lease loss nothing is written to the lease table again;
//   - nothing is delivered LeaseExpiry − margin after the last successful
//     lease write was sent;
//   - after a pause (Paused), or after a start the take of which a pause
//     overlapped (Start.VerifyFirst), nothing is delivered until a lease
//     write sent at or after it succeeds, and that write is sent at once
//     (or as soon as the write in flight answers).
//
// This package must not import actors, the root package, or any AWS client.
package shardfsm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/multistream"
	"github.com/kinactor/kinactor/internal/seqnum"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

// State is the machine's state.
type State int

// The states, in the order a shard normally goes through them.
const (
	WaitingOnParentShards State = iota + 1
	Initializing
	Processing
	AwaitingShutdownAck
	ShuttingDown
	ShutdownComplete
)

var stateNames = map[State]string{
	WaitingOnParentShards: "WaitingOnParentShards",
	Initializing:          "Initializing",
	Processing:            "Processing",
	AwaitingShutdownAck:   "AwaitingShutdownAck",
	ShuttingDown:          "ShuttingDown",
	ShutdownComplete:      "ShutdownComplete",
}

func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// AllStates lists every state, for tables and metrics.
var AllStates = []State{WaitingOnParentShards, Initializing, Processing, AwaitingShutdownAck, ShuttingDown, ShutdownComplete}

// FailurePolicy decides what happens to a batch the processor keeps failing.
type FailurePolicy int

const (
	// RetryForever delivers the batch again with capped backoff, forever.
	RetryForever FailurePolicy = iota
	// DeadLetter hands the batch to the dead-letter handler after
	// MaxProcessorAttempts failures, checkpoints past it and moves on.
	DeadLetter
	// StopShard stops processing the shard after MaxProcessorAttempts
	// failures: nothing is checkpointed and the lease is released.
	StopShard
)

// ErrProcessTimeout is the failure of a delivery the processor did not
// answer within ProcessTimeout.
var ErrProcessTimeout = errors.New("processor did not answer within ProcessTimeout")

func (p FailurePolicy) String() string {
	switch p {
	case RetryForever:
		return "retry"
	case DeadLetter:
		return "dead-letter"
	case StopShard:
		return "stop-shard"
	}
	return fmt.Sprintf("FailurePolicy(%d)", int(p))
}

// Config holds the machine's knobs. The root package documents defaults.
type Config struct {
	// StreamName is the stream's name, given to the processor with every
	// batch (a multi-stream lease key carries its own).
	StreamName           string
	MaxRecords           int32           // GetRecords Limit, 1..10000
	MinFetchInterval     time.Duration   // at least this between GetRecords starts (Kinesis allows 5/s per shard)
	IdleTimeBetweenReads time.Duration   // wait after an empty batch
	ParentPollInterval   time.Duration   // how often to look at parents' rows
	RenewInterval        time.Duration   // renew the lease when nothing was written for this long
	CheckpointInterval   time.Duration   // write accepted checkpoints at most this often (0: at once); stops and shard ends flush at once
	ShutdownTimeout      time.Duration   // how long to wait for the processor's ShutdownAck
	ThrottleBackoff      backoff.Policy  // after throttling
	ErrorBackoff         backoff.Policy  // after other Kinesis or lease-table errors
	ProcessorBackoff     backoff.Policy  // before delivering a failed batch again
	MaxProcessorAttempts int             // attempts before FailurePolicy applies (RetryForever ignores it)
	FailurePolicy        FailurePolicy   // see FailurePolicy
	InitialPosition      stream.Position // where a shard without a checkpoint starts
	Rand                 *rand.Rand      // jitter source; nil = global
	// LeaseExpiry: nothing is delivered, and the machine finishes
	// (Fenced), once LeaseExpiry − FenceMargin has passed since the last
	// successful lease write was sent. 0: no self-fencing.
	LeaseExpiry time.Duration
	// FenceMargin is the safety margin; 0: LeaseExpiry/10 (at least 100ms).
	FenceMargin time.Duration
	// StallTimeout: no progress for this long is a stall (0: never).
	StallTimeout time.Duration
	// ProcessTimeout: a delivery not answered for this long fails, and the
	// processor is replaced (0: never).
	ProcessTimeout time.Duration
	// BisectOnError: a failed delivery of more than one record is split:
	// its first half is delivered, then its second, recursively; splits
	// do not count as attempts.
	BisectOnError bool
	// MaxRecordAge: records at the head of a delivery that arrived longer
	// ago than this are dead-lettered (ErrRecordTooOld) instead (0: no limit).
	MaxRecordAge time.Duration
	// Workers is told to the processor in messages.Initialized (0: 1).
	Workers int
}

func (c Config) fenceAfter() time.Duration {
	if c.LeaseExpiry <= 0 {
		return 0
	}
	margin := c.FenceMargin
	if margin <= 0 {
		margin = max(c.LeaseExpiry/10, 100*time.Millisecond)
	}
	return max(c.LeaseExpiry-margin, c.LeaseExpiry/2)
}

// Outcome says why a machine reached ShutdownComplete.
type Outcome int

// Outcomes.
const (
	Released  Outcome = iota + 1 // graceful stop: lease released
	ShardEnd                     // shard read to its end, SHARD_END checkpointed, lease released
	LeaseLost                    // a fenced write failed: another node owns it
	Failed                       // processor failures and FailurePolicy StopShard
	// Fenced: no lease write succeeded for LeaseExpiry − margin; the lease
	// may already be another's. Nothing was released.
	Fenced
	// Unreadable: Kinesis says the shard cannot be read (not found, or an
	// invalid argument such as a checkpoint of another shard); released.
	Unreadable
)

func (o Outcome) String() string {
	switch o {
	case Released:
		return "released"
	case ShardEnd:
		return "shard-end"
	case LeaseLost:
		return "lease-lost"
	case Failed:
		return "failed"
	case Fenced:
		return "fenced"
	case Unreadable:
		return "unreadable"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// TimerKind names the machine's timers.
type TimerKind int

// Timers.
const (
	TimerParentPoll TimerKind = iota + 1
	TimerIterator
	TimerFetch
	TimerRedeliver
	TimerRenew
	TimerShutdown
	TimerStoreRetry
	TimerCheckpoint
	TimerStall
	TimerProcess
	TimerDeadLetter
	timerKinds // count
)

func (k TimerKind) String() string {
	return [...]string{"", "parent-poll", "iterator", "fetch", "redeliver", "renew", "shutdown", "store-retry", "checkpoint", "stall", "process", "dead-letter"}[k]
}

// ---- The machine ----------------------------------------------------------

// delivery is what is left of a fetched batch, with the part of it the
// processor holds (see Processing).
type delivery struct {
	batch    messages.Batch    // the part delivered (or to deliver again)
	rest     []messages.Record // what is left of the batch: batch.Records is its head
	fails    []int             // failed deliveries of each record of rest; nil before the first
	split    []int             // BisectOnError: the sizes of the parts to deliver, the next one last
	behind   int64             // MillisBehindLatest of the fetch
	failures int               // failed deliveries since the last progress
	crashed  bool              // last failure was a panic or a replacement (re-send Initialized)
	replaced bool              // the processor was replaced: the next delivery gets a new id
	waiting  bool              // failed, waiting for the redeliver timer
	sentAt   time.Time         // when the current attempt was delivered

	deadLettering bool           // dl is with the dead-letter handler
	dl            messages.Batch // the records with the dead-letter handler, the head of rest
	dlExpired     bool           // dl is there for MaxRecordAge
	dlFailures    int            // failed dead-letter calls
	cause         error          // the processor's last failure
}

// Machine is the state of one shard. Create it with New; drive it with Step.
// It is not safe for concurrent use: the shard actor owns it.
type Machine struct {
	cfg     *Config // shared by every machine of a node
	shardID string
	// what the processor is told: the stream's name and the Kinesis shard
	// id (the lease key's last part in a multi-stream application).
	pStream, pShard string
	parents         []string

	state   State
	outcome Outcome
	err     error

	// positions
	written  lease.Checkpoint // last checkpoint confirmed in the table
	target   lease.Checkpoint // highest checkpoint accepted (written or queued)
	received lease.Checkpoint // last record received from Kinesis (delivered or buffered)
	maxSent  lease.Checkpoint // last record delivered to the processor
	acked    lease.Checkpoint // last record of the last batch the processor acknowledged

	// fetching
	iterator       string
	fetching       bool
	fetchFailures  int
	iterFailures   int
	lastFetchStart time.Time
	buffered       *stream.Batch
	shardEnded     bool
	children       []string
	childrenKnown  bool
	nextBatchID    uint64

	// processor
	inFlight      *delivery
	awaitShutdown bool // ShutdownRequested sent, ack not yet received

	// after a pause nothing is delivered until a write sent after it
	// succeeds (w.verify)
	heldRedelivery bool // a redelivery came due while verifying

	w leaseWrites // lease-table writes: one at a time

	// progress
	lastProgress time.Time // any: fetch, iterator, processor success, parent check
	lastFetch    time.Time // a successful fetch or iterator
	busySince    time.Time // the processor was given the work it holds (a batch, a shutdown request)
	stalled      string    // the service the shard stalled on, "" when not

	tokens [timerKinds]uint64
}

// New returns a machine for a shard whose lease is held, with the checkpoint
// and parents read from its lease row.
func New(cfg Config, shardID string, parents []string, cp lease.Checkpoint) *Machine {
	return NewShared(&cfg, shardID, parents, cp)
}

// NewShared is New with a configuration shared by many machines (the shard
// actors of a node); it must not change while they run.
func NewShared(cfg *Config, shardID string, parents []string, cp lease.Checkpoint) *Machine {
	m := &Machine{cfg: cfg, shardID: shardID, parents: append([]string(nil), parents...), written: cp, target: cp, received: cp}
	m.pStream, m.pShard = cfg.StreamName, shardID
	if id, shard, ok := multistream.ParseKey(shardID); ok {
		m.pStream, m.pShard = id.Name, shard
	}
	return m
}

// State returns the current state.
func (m *Machine) State() State { return m.state }

// ShardID returns the shard's id.
func (m *Machine) ShardID() string { return m.shardID }

// Checkpoint returns the last checkpoint confirmed in the lease table.
func (m *Machine) Checkpoint() lease.Checkpoint { return m.written }

// Outcome returns why the machine finished (zero before ShutdownComplete).
func (m *Machine) Outcome() Outcome { return m.outcome }

// LastProgress returns when the shard last made progress.
func (m *Machine) LastProgress() time.Time { return m.lastProgress }

// StalledOn returns the service the shard is stalled on, "" when it is not.
func (m *Machine) StalledOn() string { return m.stalled }

// FencedAt returns when the machine stops delivering unless a lease write
// succeeds before (zero without self-fencing).
func (m *Machine) FencedAt() time.Time {
	if d := m.cfg.fenceAfter(); d > 0 && !m.w.heldFrom.IsZero() {
		return m.w.heldFrom.Add(d)
	}
	return time.Time{}
}

// Step applies one event at time now and returns the effects to carry out.
func (m *Machine) Step(now time.Time, ev Event) []Effect {
	var out effects
	if m.state == ShutdownComplete {
		return nil // a finished machine ignores everything, late replies included
	}
	if _, storeAnswer := ev.(StoreDone); m.state != 0 && !storeAnswer && m.fenced(now, &out) {
		// The lease may have expired (a pause, or writes failing): act on
		// nothing any more. A write's answer is looked at first: its
		// success moves the fence.
		return out
	}
	switch e := ev.(type) {
	case Start:
		if m.state == 0 {
			m.w.heldFrom = e.LeaseWrittenAt
			if m.w.heldFrom.IsZero() || m.w.heldFrom.After(now) {
				m.w.heldFrom = now
			}
			if m.fenced(now, &out) {
				// The take is older than the fence (a pause longer than
				// it between the take and the start): the lease may be
				// another's. Nothing is read, written or released.
				return out
			}
			m.state = WaitingOnParentShards
			m.lastProgress, m.lastFetch = now, now
			if e.VerifyFirst {
				// A pause overlapped the take: it proves nothing about the
				// time after it. A renewal at once; nothing is delivered
				// before it (or a later write) succeeds.
				m.w.verifyNow(now)
				out.add(VerifyingLease{Paused: e.Pause.For, Reason: e.Pause.Reason})
				m.pump(now, &out)
			}
			m.armLeaseTimers(now, &out)
			m.armStallTimer(now, &out)
			m.waitParents(now, &out)
		}
	case ParentsChecked:
		m.onParentsChecked(now, e, &out)
	case TimerFired:
		if e.Kind <= 0 || e.Kind >= timerKinds || e.Token != m.tokens[e.Kind] {
			return nil // stale or unknown timer
		}
		m.onTimer(now, e.Kind, &out)
	case IteratorReady:
		m.onIterator(now, e, &out)
	case IteratorFailed:
		m.onIteratorFailed(now, e, &out)
	case FetchSucceeded:
		m.onFetched(now, e.Batch, &out)
	case FetchFailed:
		m.onFetchFailed(now, e.Err, &out)
	case ProcessorReplied:
		m.onReply(now, e.Reply, &out)
	case ProcessorCrashed:
		m.onProcessorFailure(now, fmt.Errorf("processor panicked: %s", e.Reason), true, &out)
	case ShutdownAcked:
		m.onShutdownAck(now, e.Ack, &out)
	case ChildrenFound:
		m.onChildren(now, e, &out)
	case StoreDone:
		m.onStoreDone(now, e, &out)
	case StopRequested:
		m.onStop(now, &out)
	case DeadLettered:
		m.onDeadLettered(now, e, &out)
	case Paused:
		m.onPaused(now, e, &out)
	}
	return out
}

// onPaused: another node may hold the lease by now (gossip declared this
// one dead while it was stopped). Deliver nothing until a lease write sent
// from now on succeeds: the checkpoint pending, else a renewal, at once, or
// as soon as the write in flight (sent before, it proves nothing) answers.
// Whatever the processor had in flight it may finish; its checkpoint is a
// write like any other, fenced on the counter.
func (m *Machine) onPaused(now time.Time, e Paused, out *effects) {
	if m.state == 0 || m.state == ShuttingDown {
		return // not started (Start.VerifyFirst), or only writing its last checkpoint and release
	}
	m.w.verifyNow(now)
	out.add(VerifyingLease{Paused: e.For, Reason: e.Reason})
	m.pump(now, out)
}

// verified ends a verification after a pause: the held batch (or
// redelivery) goes to the processor.
func (m *Machine) verified(now time.Time, out *effects) {
	if m.state != Processing {
		return
	}
	if m.heldRedelivery {
		m.heldRedelivery = false
		m.redeliver(now, out)
		return
	}
	if m.inFlight == nil && m.buffered != nil {
		m.next(now, out)
	}
}

type effects []Effect

func (o *effects) add(e ...Effect) { *o = append(*o, e...) }

func (m *Machine) timer(out *effects, k TimerKind, after time.Duration) {
	m.tokens[k]++
	out.add(StartTimer{Kind: k, After: after, Token: m.tokens[k]})
}

// cancelTimer makes any outstanding timer of kind k stale.
func (m *Machine) cancelTimer(k TimerKind) { m.tokens[k]++ }

// armLeaseTimers sets the lease timer (one timer, to keep idle shards
// small): for RenewInterval after the last successful write was sent, or,
// while a write is in flight, for when the lease could expire without
// another (the self-fence, should no answer ever come).
func (m *Machine) armLeaseTimers(now time.Time, out *effects) {
	at := m.FencedAt()
	if m.cfg.RenewInterval > 0 && !m.w.busy {
		if due := m.w.heldFrom.Add(m.cfg.RenewInterval); at.IsZero() || due.Before(at) {
			at = due
		}
	}
	if !at.IsZero() {
		m.timer(out, TimerRenew, max(at.Sub(now), 0))
	}
}

// fenced reports whether the lease may have expired by now (no successful
// write for LeaseExpiry − margin); then the machine finishes at once.
func (m *Machine) fenced(now time.Time, out *effects) bool {
	at := m.FencedAt()
	if at.IsZero() || now.Before(at) {
		return false
	}
	if m.state == Processing || m.state == AwaitingShutdownAck {
		out.add(Notify{Msg: messages.LeaseLost{ShardID: m.pShard}})
	}
	m.finish(Fenced, fmt.Errorf("shard %s: no lease write succeeded since %s (for %s): the lease may have expired", m.shardID, m.w.heldFrom.Format(time.RFC3339Nano), now.Sub(m.w.heldFrom).Round(time.Millisecond)), out)
	return true
}

// ---- Progress ----------------------------------------------------------------

// progressed records that the shard moved at now.
func (m *Machine) progressed(now time.Time, out *effects) {
	m.lastProgress = now
	if m.stalled != "" && m.stallCause(now) == "" {
		m.stalled = ""
		out.add(Stalled{})
	}
}

// stallCause says on what the shard is stalled at now, or "".
func (m *Machine) stallCause(now time.Time) string {
	st := m.cfg.StallTimeout
	if st <= 0 {
		return ""
	}
	if !m.w.failingSince.IsZero() && now.Sub(m.w.failingSince) >= st {
		return "dynamodb"
	}
	switch {
	case m.inFlight != nil || m.awaitShutdown:
		// The processor holds work: it is stalled when it has held it for
		// StallTimeout, past the grace of a first delivery (a failing
		// processor answers, but makes no progress).
		if m.inGrace(now) || now.Sub(m.busySince) < st {
			return ""
		}
		if m.inFlight != nil && m.inFlight.deadLettering {
			return "failure-destination"
		}
		return "processor"
	case now.Sub(m.lastProgress) < st:
		return ""
	case m.state == WaitingOnParentShards, m.state == ShuttingDown:
		return "dynamodb" // parent rows cannot be read, the release cannot be written
	case now.Sub(m.lastFetch) >= st:
		return "kinesis"
	}
	return ""
}

// inGrace: the processor holds the first delivery of a batch for less than
// ProcessTimeout; it is presumed at work on it. After a failed delivery it
// is not.
func (m *Machine) inGrace(now time.Time) bool {
	d := m.inFlight
	return d != nil && !d.waiting && !d.replaced && !d.deadLettering && d.failures == 0 &&
		(m.cfg.ProcessTimeout <= 0 || now.Sub(d.sentAt) < m.cfg.ProcessTimeout)
}

// armStallTimer sets the stall check for the earliest moment the shard can
// become stalled (or, when it is, a while later).
func (m *Machine) armStallTimer(now time.Time, out *effects) {
	st := m.cfg.StallTimeout
	if st <= 0 {
		return
	}
	next := m.lastProgress.Add(st)
	if m.inFlight != nil || m.awaitShutdown {
		next = m.busySince.Add(st)
	}
	if m.inGrace(now) && m.cfg.ProcessTimeout > 0 {
		if pt := m.inFlight.sentAt.Add(m.cfg.ProcessTimeout); pt.After(next) {
			next = pt
		}
	}
	if !m.w.failingSince.IsZero() {
		if sf := m.w.failingSince.Add(st); sf.Before(next) {
			next = sf
		}
	}
	if !next.After(now) {
		next = now.Add(max(st/5, 100*time.Millisecond))
	}
	m.timer(out, TimerStall, next.Sub(now))
}

func (m *Machine) onStallTimer(now time.Time, out *effects) {
	if c := m.stallCause(now); c != m.stalled {
		m.stalled = c
		out.add(Stalled{Cause: c})
	}
	m.armStallTimer(now, out)
}

// ---- WaitingOnParentShards -------------------------------------------------

func (m *Machine) waitParents(now time.Time, out *effects) {
	if len(m.parents) == 0 {
		m.initialize(now, out)
		return
	}
	out.add(CheckParents{ShardIDs: append([]string(nil), m.parents...)})
}

func (m *Machine) onParentsChecked(now time.Time, e ParentsChecked, out *effects) {
	if m.state != WaitingOnParentShards {
		return
	}
	if e.Err == nil {
		m.progressed(now, out)
	}
	if e.Done && e.Err == nil {
		m.initialize(now, out)
		return
	}
	m.timer(out, TimerParentPoll, m.cfg.ParentPollInterval)
}

// ---- Initializing ----------------------------------------------------------

func (m *Machine) initialize(now time.Time, out *effects) {
	m.state = Initializing
	if m.written.IsShardEnd() {
		// Finished on an earlier owner: nothing to read, let the lease go.
		m.shardEnded, m.childrenKnown = true, true
		m.beginShuttingDown(now, ShardEnd, out)
		return
	}
	out.add(GetIterator{Position: m.resumePosition()})
}

// resumePosition is where reading resumes: after the last record received
// (so an expired iterator loses nothing and repeats nothing), else after the
// checkpoint, else at the initial position.
func (m *Machine) resumePosition() stream.Position {
	switch cp := m.received; {
	case !cp.IsSentinel():
		// At the record itself, never after it: a checkpoint inside a KPL
		// aggregate (any sub-sequence number, 0 included) must resume at
		// the next user record of that aggregate. What is at or before cp
		// is dropped when the batch arrives (as the Java KCL does).
		return stream.Position{Type: ktypes.ShardIteratorTypeAtSequenceNumber, SequenceNumber: cp.SequenceNumber}
	case cp.SequenceNumber == lease.CheckpointTrimHorizon:
		return stream.Position{Type: ktypes.ShardIteratorTypeTrimHorizon}
	case cp.SequenceNumber == lease.CheckpointLatest:
		return stream.Position{Type: ktypes.ShardIteratorTypeLatest}
	case cp.SequenceNumber == lease.CheckpointAtTimestamp && m.cfg.InitialPosition.Type == ktypes.ShardIteratorTypeAtTimestamp:
		return m.cfg.InitialPosition
	}
	if m.cfg.InitialPosition.Type == "" {
		return stream.Position{Type: ktypes.ShardIteratorTypeLatest}
	}
	return m.cfg.InitialPosition
}

func (m *Machine) startingCheckpoint() string {
	if m.written.SequenceNumber != "" {
		return m.written.SequenceNumber
	}
	return string(m.resumePosition().Type)
}

func (m *Machine) onIterator(now time.Time, e IteratorReady, out *effects) {
	switch m.state {
	case Initializing:
		m.iterator = e.Iterator
		m.iterFailures = 0
		m.lastFetch = now
		m.progressed(now, out)
		m.state = Processing
		out.add(Notify{Msg: messages.Initialized{ShardID: m.pShard, Stream: m.pStream, Workers: max(m.cfg.Workers, 1), StartingCheckpoint: m.startingCheckpoint(), SubSequenceNumber: m.written.SubSequenceNumber}})
		m.scheduleFetch(now, out)
	case Processing: // fresh iterator after ExpiredIterator
		m.iterator = e.Iterator
		m.iterFailures = 0
		m.lastFetch = now
		m.progressed(now, out)
		m.scheduleFetch(now, out)
	}
}

func (m *Machine) onIteratorFailed(now time.Time, e IteratorFailed, out *effects) {
	if m.state != Initializing && m.state != Processing {
		return
	}
	if terminal(e.Err) {
		m.unreadable(now, e.Err, out)
		return
	}
	m.iterFailures++
	p := m.cfg.ErrorBackoff
	if errors.Is(e.Err, stream.ErrThrottled) {
		p = m.cfg.ThrottleBackoff
	}
	m.timer(out, TimerIterator, p.Delay(m.iterFailures, m.cfg.Rand))
}

// ---- Processing: fetching ---------------------------------------------------

// scheduleFetch starts a GetRecords call now, or sets a timer for the
// earliest moment the per-shard rate limit allows. It does nothing while a
// fetch is running, a batch is buffered, the shard has ended or the machine
// is no longer processing.
func (m *Machine) scheduleFetch(now time.Time, out *effects) {
	if m.state != Processing || m.fetching || m.buffered != nil || m.shardEnded || m.iterator == "" {
		return
	}
	if next := m.lastFetchStart.Add(m.cfg.MinFetchInterval); !m.lastFetchStart.IsZero() && now.Before(next) {
		m.timer(out, TimerFetch, next.Sub(now))
		return
	}
	m.fetchNow(now, out)
}

func (m *Machine) fetchNow(now time.Time, out *effects) {
	m.cancelTimer(TimerFetch)
	m.fetching = true
	m.lastFetchStart = now
	out.add(Fetch{Iterator: m.iterator, Limit: m.cfg.MaxRecords})
}

func (m *Machine) onFetched(now time.Time, b stream.Batch, out *effects) {
	if !m.fetching {
		return
	}
	m.fetching = false
	if m.state != Processing {
		return // stopping: a batch read now is simply not delivered
	}
	m.fetchFailures = 0
	m.lastFetch = now
	m.progressed(now, out)
	m.iterator = b.NextIterator
	if b.ShardEnd() {
		m.shardEnded = true
		if len(b.ChildShards) > 0 {
			m.childrenKnown = true
			m.children = m.children[:0]
			for _, c := range b.ChildShards {
				m.children = append(m.children, c.ID)
			}
		}
	}
	read := len(b.Records)
	b.Records = m.dropSeen(b.Records)
	if n := len(b.Records); n > 0 {
		last := b.Records[n-1]
		m.received = lease.Checkpoint{SequenceNumber: last.SequenceNumber, SubSequenceNumber: last.SubSequenceNumber}
		if m.inFlight == nil {
			if !m.deliver(now, b, out) {
				return
			}
		} else {
			m.buffered = &b
		}
	}
	if m.shardEnded {
		m.maybeEndShard(now, out)
		return
	}
	if len(b.Records) == 0 && read == 0 {
		// Nothing new: wait before asking again, unless far behind (a gap
		// of empty batches while catching up must not slow us down). A
		// batch of nothing but what was seen (the checkpointed record read
		// again on resuming AT it) is not "nothing new": ask again at once.
		idle := m.cfg.IdleTimeBetweenReads
		if b.MillisBehindLatest > 0 && idle > m.cfg.MinFetchInterval {
			idle = m.cfg.MinFetchInterval
		}
		m.timer(out, TimerFetch, idle)
		return
	}
	m.scheduleFetch(now, out)
}

// dropSeen removes records at or before the last one received (or the
// checkpoint, before anything was received): the user records of a KPL
// aggregate read again to resume inside it, and anything a server repeats.
// A record is never delivered twice by one machine.
func (m *Machine) dropSeen(recs []stream.Record) []stream.Record {
	if m.received.IsSentinel() || len(recs) == 0 {
		return recs
	}
	first := recs[0]
	if (lease.Checkpoint{SequenceNumber: first.SequenceNumber, SubSequenceNumber: first.SubSequenceNumber}).Compare(m.received) > 0 {
		return recs // the usual case: nothing to drop
	}
	kept := recs[:0:0]
	for _, r := range recs {
		if (lease.Checkpoint{SequenceNumber: r.SequenceNumber, SubSequenceNumber: r.SubSequenceNumber}).Compare(m.received) > 0 {
			kept = append(kept, r)
		}
	}
	return kept
}

func (m *Machine) onFetchFailed(now time.Time, err error, out *effects) {
	if !m.fetching {
		return
	}
	m.fetching = false
	if m.state != Processing {
		return
	}
	if terminal(err) {
		m.unreadable(now, err, out)
		return
	}
	m.fetchFailures++
	switch {
	case errors.Is(err, stream.ErrExpiredIterator):
		m.iterator = ""
		out.add(GetIterator{Position: m.resumePosition()})
	case errors.Is(err, stream.ErrThrottled):
		m.timer(out, TimerFetch, m.cfg.ThrottleBackoff.Delay(m.fetchFailures, m.cfg.Rand))
	default:
		m.timer(out, TimerFetch, m.cfg.ErrorBackoff.Delay(m.fetchFailures, m.cfg.Rand))
	}
}

// ---- Processing: the processor ---------------------------------------------
//
// A delivery is what is left of one fetched batch (rest, in order). It goes
// to the processor whole, or, after a failure with BisectOnError, a part at
// a time (split: the sizes of the parts still to deliver, the next one
// last). A success, or a partial failure (Processed.Failed), moves the head
// of rest forward: the records before the first failed one are done; that
// one and all after it stay. Each record counts its own failed deliveries
// (fails): a whole failure counts against every record delivered, unless
// it is split; a partial failure counts against the first record it names
// only. Once the head record has failed MaxProcessorAttempts times, the
// failure policy applies to the part delivered (with bisect, that one
// record; without, the whole rest, as a batch was before). Records at the
// head whose age exceeds MaxRecordAge are dead-lettered before anything is
// delivered. The checkpoint never passes a record that is neither
// acknowledged nor taken by the dead-letter handler.

// deliver hands a batch to the processor, unless the lease may have
// expired (then the machine finishes and deliver returns false).
func (m *Machine) deliver(now time.Time, b stream.Batch, out *effects) bool {
	if m.fenced(now, out) {
		return false
	}
	if m.w.verify {
		m.buffered = &b // held until the lease is known to be ours
		return false
	}
	d := &delivery{rest: b.Records, behind: b.MillisBehindLatest}
	m.inFlight = d
	m.busySince = now
	m.sendNext(now, out)
	return true
}

// sendNext delivers the next part of the in-flight delivery (or hands its
// expired head to the dead-letter handler).
func (m *Machine) sendNext(now time.Time, out *effects) {
	d := m.inFlight
	if k := m.expired(now, d.rest); k > 0 {
		d.split = d.split[:0] // the parts were counted from the old head
		m.startDeadLetter(d.rest[:k], fmt.Errorf("%w: %d records arrived before %s (MaxRecordAge %s)", ErrRecordTooOld, k, now.Add(-m.cfg.MaxRecordAge).Format(time.RFC3339), m.cfg.MaxRecordAge), true, out)
		return
	}
	n := len(d.rest)
	if len(d.split) > 0 {
		n = min(d.split[len(d.split)-1], n)
	}
	recs := d.rest[:n:n]
	same := len(d.batch.Records) == n && n > 0 && d.batch.Records[0].Pos() == recs[0].Pos()
	if !same || d.replaced || d.batch.BatchID == 0 {
		// A new part, or a new processor: a new id, so that a late answer
		// to another delivery is not taken for this one's.
		m.nextBatchID++
		d.batch.BatchID = m.nextBatchID
	}
	d.replaced = false
	d.batch.ShardID, d.batch.Stream, d.batch.Records, d.batch.MillisBehindLatest = m.pShard, m.pStream, recs, d.behind
	d.batch.Attempt = 1
	if d.fails != nil {
		d.batch.Attempt = d.fails[0] + 1
	}
	last := lease.Checkpoint{SequenceNumber: recs[n-1].SequenceNumber, SubSequenceNumber: recs[n-1].SubSequenceNumber}
	if m.maxSent.IsSentinel() || last.Compare(m.maxSent) > 0 {
		m.maxSent = last
	}
	m.send(now, d, out)
}

// expired counts the records at the head of recs that arrived before
// MaxRecordAge ago (records without an arrival time never expire).
func (m *Machine) expired(now time.Time, recs []messages.Record) int {
	if m.cfg.MaxRecordAge <= 0 {
		return 0
	}
	cutoff := now.Add(-m.cfg.MaxRecordAge)
	k := 0
	for k < len(recs) && !recs[k].ApproximateArrivalTimestamp.IsZero() && recs[k].ApproximateArrivalTimestamp.Before(cutoff) {
		k++
	}
	return k
}

// send delivers the in-flight part (again) with its deadline.
func (m *Machine) send(now time.Time, d *delivery, out *effects) {
	d.sentAt = now
	if pt := m.cfg.ProcessTimeout; pt > 0 {
		d.batch.Deadline = now.Add(pt)
		m.timer(out, TimerProcess, pt)
	}
	out.add(Deliver{Batch: d.batch})
}

func (m *Machine) onReply(now time.Time, r messages.Processed, out *effects) {
	d := m.inFlight
	if d == nil || d.waiting || d.replaced || d.deadLettering || r.BatchID != d.batch.BatchID {
		// A late reply to a batch already given up on (failed, with the
		// dead-letter handler, or its processor replaced), or a duplicate.
		return
	}
	if m.state != Processing && m.state != AwaitingShutdownAck {
		return
	}
	m.cancelTimer(TimerProcess)
	if r.Err == nil && len(r.Failed) > 0 {
		i, err := failedIndex(d.batch.Records, r.Failed)
		if err != nil {
			r.Err = fmt.Errorf("shard %s batch %d: %w", m.shardID, d.batch.BatchID, err)
		} else {
			m.onPartialFailure(now, i, out)
			return
		}
	}
	if r.Err != nil {
		// An answer, but no progress: a processor that fails every batch
		// (a poison batch under retry, a sink that refuses) is stalled.
		m.onProcessorFailure(now, r.Err, false, out)
		return
	}
	m.progressed(now, out)
	m.acceptCheckpoint(now, r.Checkpoint, &d.batch, out)
	m.advance(now, len(d.batch.Records), true, out)
}

// failedIndex returns the index in recs of the first record named in
// failed, or an error naming a position that is not a record of recs.
func failedIndex(recs []messages.Record, failed []messages.Position) (int, error) {
	first := len(recs)
	for _, p := range failed {
		i := sort.Search(len(recs), func(i int) bool { return comparePos(recs[i].Pos(), p) >= 0 })
		if i == len(recs) || recs[i].Pos() != p {
			if len(recs) == 0 {
				return 0, fmt.Errorf("%w: %s, and the batch is empty", ErrFailedNotInBatch, p)
			}
			return 0, fmt.Errorf("%w: %s (the batch holds %d records, %s to %s)", ErrFailedNotInBatch, p, len(recs), recs[0].Pos(), recs[len(recs)-1].Pos())
		}
		first = min(first, i)
	}
	return first, nil
}

func comparePos(a, b messages.Position) int {
	return lease.Checkpoint{SequenceNumber: a.SequenceNumber, SubSequenceNumber: a.SubSequenceNumber}.Compare(lease.Checkpoint{SequenceNumber: b.SequenceNumber, SubSequenceNumber: b.SubSequenceNumber})
}

// onPartialFailure: the processor named failed records, the first at
// index i of the part delivered. The records before it are done (and
// checkpointed); it failed once more; it and the records after it are
// delivered again.
func (m *Machine) onPartialFailure(now time.Time, i int, out *effects) {
	d := m.inFlight
	n := len(d.batch.Records)
	if i > 0 {
		m.progressed(now, out)
		last := d.batch.Records[i-1]
		m.acceptCheckpoint(now, messages.CheckpointAt(last.SequenceNumber, last.SubSequenceNumber), &d.batch, out)
		if m.cfg.BisectOnError && len(d.split) > 0 {
			d.split[len(d.split)-1] = n - i // what is left of this part
		}
		if !m.advance(now, i, false, out) {
			return
		}
	}
	if m.cfg.BisectOnError {
		// The failed record is named: deliver it on its own, then what is
		// left of its part.
		if len(d.split) > 0 && d.split[len(d.split)-1] > 1 {
			d.split[len(d.split)-1]--
			d.split = append(d.split, 1)
		} else if len(d.split) == 0 && len(d.rest) > 1 {
			d.split = append(d.split, len(d.rest)-1, 1)
		}
	}
	m.failed(now, fmt.Errorf("record %s failed (named in Processed.Failed)", d.rest[0].Pos()), false, 1, out)
}

// advance marks the first k records of the part delivered done: the head
// of the delivery moves past them. whole: the part is done (the next part
// is due). It reports whether the delivery goes on (false: it is done, or
// the machine is stopping and asked the processor to shut down).
func (m *Machine) advance(now time.Time, k int, whole bool, out *effects) bool {
	d := m.inFlight
	last := d.rest[k-1]
	m.acked = lease.Checkpoint{SequenceNumber: last.SequenceNumber, SubSequenceNumber: last.SubSequenceNumber}
	d.rest = d.rest[k:]
	if d.fails != nil {
		d.fails = d.fails[k:]
	}
	if whole && len(d.split) > 0 {
		d.split = d.split[:len(d.split)-1]
	}
	d.failures = 0
	if len(d.rest) == 0 {
		m.batchDone(now, out)
		return false
	}
	if m.state == AwaitingShutdownAck {
		// Stopping: what is left is not delivered, nor checkpointed; the
		// next owner reads it.
		m.inFlight = nil
		m.askShutdown(now, out)
		return false
	}
	m.busySince = now
	if whole {
		m.continueDelivery(now, out)
	}
	return true
}

// continueDelivery sends the next part of the delivery at once, unless the
// lease may have lapsed or is being verified.
func (m *Machine) continueDelivery(now time.Time, out *effects) {
	if m.fenced(now, out) {
		return
	}
	if m.w.verify {
		m.inFlight.waiting = true
		m.heldRedelivery = true
		return
	}
	m.sendNext(now, out)
}

// batchDone moves on after the in-flight batch is finished with.
func (m *Machine) batchDone(now time.Time, out *effects) {
	m.inFlight = nil
	if m.state == AwaitingShutdownAck {
		m.askShutdown(now, out)
		return
	}
	m.next(now, out)
}

// next delivers the buffered batch, if any, and reads on (or ends the
// shard) while the processor is free.
func (m *Machine) next(now time.Time, out *effects) {
	if m.buffered != nil {
		b := *m.buffered
		m.buffered = nil
		if !m.deliver(now, b, out) {
			return
		}
	}
	if m.shardEnded {
		m.maybeEndShard(now, out)
		return
	}
	m.scheduleFetch(now, out)
}

// onProcessorFailure: the part delivered failed as a whole (an error, a
// panic, a timeout).
func (m *Machine) onProcessorFailure(now time.Time, err error, crashed bool, out *effects) {
	d := m.inFlight
	if m.state == AwaitingShutdownAck && m.awaitShutdown && d == nil {
		// The processor died while handling ShutdownRequested: no checkpoint
		// from it; let the lease go so the next owner resumes at the last one.
		out.add(ProcessorFailure{Err: err, Crashed: crashed})
		m.beginShuttingDown(now, Released, out)
		return
	}
	if d == nil || d.waiting || d.deadLettering {
		return
	}
	n := len(d.batch.Records)
	if m.cfg.BisectOnError && n > 1 && m.state == Processing {
		// Split: the first half, then the second; no attempt counted.
		d.failures++
		d.crashed = d.crashed || crashed
		first := (n + 1) / 2
		if len(d.split) > 0 {
			d.split = d.split[:len(d.split)-1]
		}
		d.split = append(d.split, n-first, first)
		out.add(ProcessorFailure{BatchID: d.batch.BatchID, Attempt: d.batch.Attempt, Err: err, Crashed: crashed}, Bisected{BatchID: d.batch.BatchID, Records: n, First: first})
		d.waiting = true
		m.timer(out, TimerRedeliver, m.cfg.ProcessorBackoff.Delay(1, m.cfg.Rand))
		return
	}
	m.failed(now, err, crashed, n, out)
}

// failed counts a failed delivery against the first n records of the
// delivery and applies the failure policy once its head has used up its
// attempts (to those n records).
func (m *Machine) failed(now time.Time, err error, crashed bool, n int, out *effects) {
	d := m.inFlight
	d.failures++
	d.crashed = d.crashed || crashed
	if d.fails == nil {
		d.fails = make([]int, len(d.rest))
	}
	for j := range n {
		d.fails[j]++
	}
	out.add(ProcessorFailure{BatchID: d.batch.BatchID, Attempt: d.batch.Attempt, Err: err, Crashed: crashed})
	if m.state == AwaitingShutdownAck {
		// Stopping anyway: the batch is not checkpointed, the next owner
		// reads it again. Nothing is lost.
		m.inFlight = nil
		m.askShutdown(now, out)
		return
	}
	exhausted := m.cfg.MaxProcessorAttempts > 0 && d.fails[0] >= m.cfg.MaxProcessorAttempts
	switch {
	case exhausted && m.cfg.FailurePolicy == DeadLetter:
		m.startDeadLetter(d.rest[:n], err, false, out)
	case exhausted && m.cfg.FailurePolicy == StopShard:
		m.inFlight = nil
		m.err = fmt.Errorf("shard %s: record %s failed %d times: %w", m.shardID, d.rest[0].Pos(), d.fails[0], err)
		m.beginShuttingDown(now, Failed, out)
	default:
		d.waiting = true
		m.timer(out, TimerRedeliver, m.cfg.ProcessorBackoff.Delay(d.fails[0], m.cfg.Rand))
	}
}

// startDeadLetter hands recs, the head of the delivery, to the dead-letter
// handler; nothing is delivered, or checkpointed past them, before it took
// them.
func (m *Machine) startDeadLetter(recs []messages.Record, cause error, expired bool, out *effects) {
	d := m.inFlight
	id := d.batch.BatchID
	if expired || id == 0 {
		m.nextBatchID++
		id = m.nextBatchID
	}
	d.deadLettering, d.cause, d.dlExpired, d.dlFailures = true, cause, expired, 0
	attempt := 1 // deliveries of the head record so far (0: expired before any)
	switch {
	case d.fails != nil:
		attempt = d.fails[0]
	case expired:
		attempt = 0
	}
	d.dl = messages.Batch{ShardID: m.pShard, Stream: m.pStream, BatchID: id, Records: recs[:len(recs):len(recs)], MillisBehindLatest: d.behind, Attempt: attempt}
	out.add(DeadLetterBatch{Batch: d.dl, Err: cause, Attempt: 1})
}

func (m *Machine) redeliver(now time.Time, out *effects) {
	d := m.inFlight
	if d == nil || !d.waiting || m.state != Processing {
		return
	}
	if m.fenced(now, out) {
		return
	}
	if m.w.verify {
		m.heldRedelivery = true
		return
	}
	d.waiting = false
	if d.crashed {
		d.crashed = false
		out.add(Notify{Msg: messages.Initialized{ShardID: m.pShard, Stream: m.pStream, Workers: max(m.cfg.Workers, 1), StartingCheckpoint: m.startingCheckpoint(), SubSequenceNumber: m.written.SubSequenceNumber, Restarted: true}})
	}
	m.sendNext(now, out)
}

// onProcessTimeout: the processor holds the batch past ProcessTimeout. It
// is replaced and the failure counts like any other.
func (m *Machine) onProcessTimeout(now time.Time, out *effects) {
	d := m.inFlight
	if d == nil || d.waiting || d.deadLettering || (m.state != Processing && m.state != AwaitingShutdownAck) {
		return
	}
	d.replaced = true
	out.add(ReplaceProcessor{BatchID: d.batch.BatchID})
	m.onProcessorFailure(now, fmt.Errorf("%w (%s)", ErrProcessTimeout, m.cfg.ProcessTimeout), true, out)
}

// onDeadLettered: the dead-letter handler took the records (checkpoint past
// them and move on), or failed: it is called again after a backoff, for as
// long as it takes. The checkpoint never passes records it did not take;
// the shard stalls (on "failure-destination") instead, visibly.
func (m *Machine) onDeadLettered(now time.Time, e DeadLettered, out *effects) {
	d := m.inFlight
	if d == nil || !d.deadLettering || e.BatchID != d.dl.BatchID || m.state != Processing {
		return
	}
	if e.Err == nil {
		m.progressed(now, out)
		d.deadLettering = false
		out.add(RecordsDeadLettered{Records: len(d.dl.Records), Expired: d.dlExpired})
		m.acceptCheckpoint(now, messages.CheckpointBatchEnd(), &d.dl, out)
		whole := !d.dlExpired
		if !whole {
			d.batch.BatchID = 0 // the next part is a new delivery
		}
		if m.advance(now, len(d.dl.Records), whole, out) && !whole {
			m.continueDelivery(now, out)
		}
		return
	}
	d.dlFailures++
	out.add(ProcessorFailure{BatchID: d.dl.BatchID, Attempt: d.dl.Attempt, Err: fmt.Errorf("dead-letter handler: %w", e.Err)})
	m.timer(out, TimerDeadLetter, m.cfg.ProcessorBackoff.Delay(d.dlFailures, m.cfg.Rand))
}

// terminal reports whether a Kinesis error means the shard cannot be read
// at all here: retrying will not help.
func terminal(err error) bool {
	return errors.Is(err, stream.ErrShardNotFound) || errors.Is(err, stream.ErrInvalidArgument)
}

// unreadable gives the shard up after a terminal Kinesis error: release the
// lease (the coordinator refuses the shard for a while).
func (m *Machine) unreadable(now time.Time, err error, out *effects) {
	m.err = fmt.Errorf("shard %s: %w", m.shardID, err)
	if m.state == Processing && m.inFlight == nil {
		out.add(Notify{Msg: messages.LeaseLost{ShardID: m.pShard}})
	}
	m.inFlight, m.buffered = nil, nil
	m.beginShuttingDown(now, Unreadable, out)
}

// acceptCheckpoint validates a checkpoint request against what was
// delivered and queues the write, or refuses it.
func (m *Machine) acceptCheckpoint(now time.Time, req messages.Checkpoint, batch *messages.Batch, out *effects) {
	var cp lease.Checkpoint
	switch req.Mode {
	case messages.NoCheckpoint:
		return
	case messages.AtBatchEnd:
		if batch == nil {
			// Shutdown ack: after the last batch acknowledged (a batch that
			// failed on its way out was not processed).
			if m.acked.IsSentinel() {
				return
			}
			cp = m.acked
		} else {
			last, ok := batch.Last()
			if !ok {
				return
			}
			cp = lease.Checkpoint{SequenceNumber: last.SequenceNumber, SubSequenceNumber: last.SubSequenceNumber}
		}
	case messages.AtSequence:
		cp = lease.Checkpoint{SequenceNumber: req.SequenceNumber, SubSequenceNumber: req.SubSequenceNumber}
		if !seqnum.Valid(cp.SequenceNumber) || cp.SubSequenceNumber < 0 {
			m.refuse(batch, fmt.Errorf("%w: sequence number %q, sub-sequence %d", ErrCheckpointInvalid, cp.SequenceNumber, cp.SubSequenceNumber), out)
			return
		}
		if m.maxSent.IsSentinel() || cp.Compare(m.maxSent) > 0 {
			m.refuse(batch, fmt.Errorf("%w: asked %s, last delivered %s", ErrCheckpointAhead, fmtCP(cp), fmtCP(m.maxSent)), out)
			return
		}
	default:
		m.refuse(batch, fmt.Errorf("%w: mode %d", ErrCheckpointInvalid, req.Mode), out)
		return
	}
	if !m.target.IsSentinel() {
		switch c := cp.Compare(m.target); {
		case c < 0:
			m.refuse(batch, fmt.Errorf("%w: asked %s, already at %s", ErrCheckpointBackwards, fmtCP(cp), fmtCP(m.target)), out)
			return
		case c == 0:
			return // already there
		}
	}
	m.target = cp
	if !cp.IsShardEnd() {
		out.add(Acked{Checkpoint: cp})
	}
	m.queueWrite(now, &WriteCheckpoint{Checkpoint: cp}, out)
}

func (m *Machine) refuse(batch *messages.Batch, err error, out *effects) {
	var id uint64
	if batch != nil {
		id = batch.BatchID
	}
	out.add(Notify{Msg: messages.CheckpointRefused{ShardID: m.pShard, BatchID: id, Err: err}}, CheckpointRefusedEffect{Err: err})
}

func fmtCP(c lease.Checkpoint) string {
	if c.SubSequenceNumber == 0 {
		return c.SequenceNumber
	}
	return fmt.Sprintf("%s/%d", c.SequenceNumber, c.SubSequenceNumber)
}

// ---- Shard end --------------------------------------------------------------

// maybeEndShard finishes the shard once its last batch is acknowledged.
func (m *Machine) maybeEndShard(now time.Time, out *effects) {
	if m.state != Processing || !m.shardEnded || m.inFlight != nil || m.buffered != nil {
		return
	}
	if !m.childrenKnown {
		out.add(ListChildren{})
		return
	}
	m.writeShardEnd(now, out)
}

func (m *Machine) onChildren(now time.Time, e ChildrenFound, out *effects) {
	if m.state != Processing || !m.shardEnded || m.childrenKnown {
		return
	}
	if e.Err != nil {
		m.w.failures++
		m.timer(out, TimerStoreRetry, m.cfg.ErrorBackoff.Delay(m.w.failures, m.cfg.Rand))
		return
	}
	m.children, m.childrenKnown = append([]string(nil), e.IDs...), true
	m.writeShardEnd(now, out)
}

func (m *Machine) writeShardEnd(now time.Time, out *effects) {
	m.target = lease.Checkpoint{SequenceNumber: lease.CheckpointShardEnd}
	m.queueWrite(now, &WriteCheckpoint{Checkpoint: m.target, Children: append([]string(nil), m.children...)}, out)
	m.beginShuttingDown(now, ShardEnd, out)
}

// ---- Graceful stop -----------------------------------------------------------

func (m *Machine) onStop(now time.Time, out *effects) {
	switch m.state {
	case 0:
		m.finish(Released, nil, out) // never started: nothing to release
	case WaitingOnParentShards, Initializing:
		m.beginShuttingDown(now, Released, out)
	case Processing:
		if m.stalled == "processor" {
			// The processor does not answer: waiting ShutdownTimeout for its
			// last checkpoint would only delay the next owner. Accepted
			// checkpoints are still written before the release.
			m.inFlight, m.buffered = nil, nil
			m.beginShuttingDown(now, Released, out)
			return
		}
		m.state = AwaitingShutdownAck
		m.buffered = nil // never delivered, never checkpointed: the next owner reads it
		m.cancelTimer(TimerFetch)
		m.timer(out, TimerShutdown, m.cfg.ShutdownTimeout)
		if m.inFlight == nil || m.inFlight.waiting || m.inFlight.deadLettering {
			// No batch with the processor (or one waiting to be delivered
			// again, or with the dead-letter handler, which will not be
			// checkpointed now: the next owner reads it again): ask it to
			// checkpoint now.
			m.inFlight = nil
			m.askShutdown(now, out)
		}
	}
}

func (m *Machine) askShutdown(now time.Time, out *effects) {
	if m.awaitShutdown {
		return
	}
	m.awaitShutdown = true
	if m.inFlight == nil {
		m.busySince = now
	}
	out.add(Notify{Msg: messages.ShutdownRequested{ShardID: m.pShard}})
}

func (m *Machine) onShutdownAck(now time.Time, a messages.ShutdownAck, out *effects) {
	if m.state != AwaitingShutdownAck || !m.awaitShutdown {
		return
	}
	m.awaitShutdown = false
	m.acceptCheckpoint(now, a.Checkpoint, nil, out)
	m.beginShuttingDown(now, Released, out)
}

// beginShuttingDown enters ShuttingDown: pending checkpoint writes finish,
// then the lease is released.
func (m *Machine) beginShuttingDown(now time.Time, why Outcome, out *effects) {
	m.state = ShuttingDown
	m.outcome = why
	m.cancelTimer(TimerFetch)
	m.cancelTimer(TimerShutdown)
	m.cancelTimer(TimerRedeliver)
	m.cancelTimer(TimerParentPoll)
	m.cancelTimer(TimerIterator)
	m.w.pendingRenew = false
	m.w.pendingRelease = true
	m.pump(now, out)
}

func (m *Machine) finish(why Outcome, err error, out *effects) {
	m.state = ShutdownComplete
	m.outcome = why
	for k := range m.tokens {
		m.tokens[k]++
	}
	f := Finished{Outcome: why, Err: err}
	if why == ShardEnd {
		f.Children = append([]string(nil), m.children...)
	}
	out.add(f)
}

// ---- Timers ---------------------------------------------------------------------

func (m *Machine) onTimer(now time.Time, k TimerKind, out *effects) {
	switch k {
	case TimerParentPoll:
		if m.state == WaitingOnParentShards {
			out.add(CheckParents{ShardIDs: append([]string(nil), m.parents...)})
		}
	case TimerIterator:
		if m.state == Initializing || (m.state == Processing && m.iterator == "") {
			out.add(GetIterator{Position: m.resumePosition()})
		}
	case TimerFetch:
		if m.state == Processing && !m.fetching && m.buffered == nil && !m.shardEnded {
			m.fetchNow(now, out)
		}
	case TimerRedeliver:
		m.redeliver(now, out)
	case TimerStall:
		m.onStallTimer(now, out)
	case TimerProcess:
		m.onProcessTimeout(now, out)
	case TimerDeadLetter:
		if d := m.inFlight; d != nil && d.deadLettering && m.state == Processing {
			out.add(DeadLetterBatch{Batch: d.dl, Err: d.cause, Attempt: d.dlFailures + 1})
		}
	case TimerRenew:
		// Due RenewInterval after the last successful write was sent; a
		// failed renewal is retried on the store-retry timer, a successful
		// write sets this timer again.
		// (The self-fence was checked before: a lapsed lease finished.)
		if m.state == ShuttingDown || m.w.busy || now.Before(m.w.heldFrom.Add(m.cfg.RenewInterval)) {
			// Not due, or a write is in flight (it renews; its answer sets
			// this timer again): look again at the fence.
			m.armLeaseTimers(now, out)
			return
		}
		if m.w.pendingCP != nil {
			m.w.forceCP = true // a deferred checkpoint renews as well
		} else {
			m.w.pendingRenew = true
		}
		m.pump(now, out)
		m.armLeaseTimers(now, out)
	case TimerShutdown:
		if m.state == AwaitingShutdownAck {
			// The processor did not answer in time: release without its
			// checkpoint. The next owner resumes at the last checkpoint.
			m.awaitShutdown = false
			m.inFlight = nil
			m.beginShuttingDown(now, Released, out)
		}
	case TimerCheckpoint:
		m.w.cpTimer = false
		m.pump(now, out)
	case TimerStoreRetry:
		if m.state == Processing && m.shardEnded && !m.childrenKnown {
			out.add(ListChildren{})
			return
		}
		m.pump(now, out)
	}
}
