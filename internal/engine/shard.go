// Package engine owns the actor shells of a kinactor node: the coordinator,
// which carries out the effects of the ownership machine (package
// internal/ownership) and supervises one shard actor per owned shard, and
// the shard actor, which carries out the effects of its shard machine
// (package internal/shardfsm) and supervises the user's processor actor.
//
// The shells hold no decision logic. They turn mailbox messages into
// machine events and run the effects: every Kinesis, DynamoDB and
// dead-letter call runs on a goroutine of its own, bounded by a timeout, and
// comes back as a message, so a mailbox never blocks. Beside them: the
// proofs of death of lease owners outside the view (proof.go) and the
// watch that tells shards the process was paused, or declared dead while
// alive (pausewatch.go): a shard then, or a shard whose take such a pause
// overlapped, delivers nothing more until a lease write sent after it
// succeeds.
//
// This package must not import the root package or cmd.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/metrics"
	"github.com/kinactor/kinactor/internal/shardfsm"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

// StreamAPI is what a shard actor needs from Kinesis; *stream.Client has it.
type StreamAPI interface {
	ListShards(ctx context.Context) ([]stream.Shard, error)
	Iterator(ctx context.Context, shardID string, pos stream.Position) (string, error)
	GetRecords(ctx context.Context, iterator string, limit int32) (stream.Batch, error)
}

// Deps is what every shard actor of a node shares.
type Deps struct {
	Owner      string // this node's worker id, written as leaseOwner
	Store      lease.Store
	Stream     StreamAPI
	Processor  *actor.Props // the user's processor; one instance per shard
	Machine    shardfsm.Config
	DeadLetter actors.DeadLetterFunc
	Metrics    *metrics.Metrics
	Logger     *slog.Logger
	// Board is where shard actors show their progress (status, health,
	// metrics); nil: a board of the coordinator's own.
	Board *Board
	// Identity is where this node runs, written with every take (others
	// prove it dead by it).
	Identity lease.Identity
	// Pauses tells shard actors that the process was paused (nil: never).
	Pauses *PauseWatch
	// StreamName is the stream's name in single-stream mode, for the
	// stream label; multi-stream keys carry their own.
	StreamName string
}

// Messages between the coordinator and shard actors.
type (
	// ShardFinished is sent by a shard actor to its parent when its machine
	// reaches ShutdownComplete; the parent then stops it.
	ShardFinished struct {
		ShardID  string
		Outcome  shardfsm.Outcome
		Children []string
		Err      error
		Counter  int64  // the lease counter after the release (Released, ShardEnd)
		Cause    string // the service it was stalled on, if any
	}
	// ShardStateChanged is sent by a shard actor to its parent on every
	// state change.
	ShardStateChanged struct {
		ShardID    string
		State      shardfsm.State
		Checkpoint lease.Checkpoint
	}
	// shardWrote: a lease write of the shard actor succeeded (the parent
	// tells the shard's successors by heartbeat).
	shardWrote struct{ lease lease.Lease }
	// shardAcked: the processor acknowledged records up to cp.
	shardAcked struct {
		shardID string
		cp      lease.Checkpoint
	}
	// shardStalled: the shard's stall state changed.
	shardStalled struct {
		shardID string
		cause   string // "" when it moves again
	}
)

// Results of the shell's asynchronous calls.
type (
	storeResult struct {
		op    shardfsm.StoreOp
		lease lease.Lease // the row as written; for a failed write, the row it was fenced on
		held  lease.Lease // the lease the write was made under (after adopting an ambiguous write)
		err   error
	}
	fetchResult struct {
		batch stream.Batch
		err   error
		took  time.Duration
	}
	processorCrashed struct{ reason any }
	// pauseNotice: the pause watch started a new epoch (see PauseWatch).
	pauseNotice struct{}
)

type shardActor struct {
	deps  *Deps
	lease lease.Lease
	taken TakeSent // the take that gave us the lease
	m     *shardfsm.Machine

	self      *actor.PID
	sys       *actor.ActorSystem
	proc      *actor.PID
	live      *shardLive
	ambiguous bool // the last write failed without an answer: it may have been applied
	timers    [16]scheduler.CancelFunc
	sched     *scheduler.TimerScheduler
	ctx       context.Context
	cancel    context.CancelFunc
	log       *slog.Logger
	state     shardfsm.State
	inflight  messages.Batch
	sentAt    time.Time
	finished  bool
	told      bool // LeaseLost or ShardEnded was sent to the processor: see finish
	stopping  bool
	restarted atomic.Int64
	epoch     uint64 // the pause epoch this shard last verified its lease in
	unwatch   func() // ends the subscription to the pause watch
}

// TakeSent is when the take that gave this node a lease was sent, and the
// pause epoch then (Deps.Pauses.Mark just before it was sent).
type TakeSent struct {
	At    time.Time
	Epoch uint64
}

// NewShardProps returns the props of a shard actor for a lease this node
// holds, taken by a write sent at taken.At (the self-fencing clock starts
// there). If the pause epoch at the actor's start is not taken.Epoch, a
// pause overlapped the take (from its send to the start): the take proves
// nothing about the time after it, and the shard delivers nothing until a
// lease write sent after its start succeeds (shardfsm.Start.VerifyFirst).
// Its children (the processor) are supervised by a strategy that
// restarts them on panic and tells the shard actor, which delivers the
// batch again.
func NewShardProps(deps *Deps, held lease.Lease, taken TakeSent) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &shardActor{deps: deps, lease: held, taken: taken}
	}, actor.WithSupervisor(processorSupervisor{}))
}

// processorSupervisor restarts a panicking processor and reports the panic
// to the shard actor (its parent) as a message, so the shard actor can
// deliver the same batch again: protoactor drops the message that caused
// the panic.
type processorSupervisor struct{}

func (processorSupervisor) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason, _ any) {
	if c, ok := sup.(interface{ Self() *actor.PID }); ok {
		sys.Root.Send(c.Self(), processorCrashed{reason: reason})
	}
	sup.RestartChildren(child)
}

func (a *shardActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.self, a.sys = ctx.Self(), ctx.ActorSystem()
		a.sched = scheduler.NewTimerScheduler(a.sys.Root)
		a.ctx, a.cancel = context.WithCancel(context.Background())
		a.log = a.deps.Logger.With("shard", a.lease.Key)
		a.m = shardfsm.NewShared(&a.deps.Machine, a.lease.Key, a.lease.ParentShardIDs, a.lease.Checkpoint)
		if a.deps.Board != nil {
			a.live = a.deps.Board.add(a.lease.Key)
		}
		a.proc = ctx.Spawn(a.deps.Processor)
		self, sys := a.self, a.sys
		a.unwatch = a.deps.Pauses.Subscribe(func() { sys.Root.Send(self, pauseNotice{}) })
		a.epoch = a.taken.Epoch // step compares it with the epoch now
		a.step(ctx, shardfsm.Start{LeaseWrittenAt: a.taken.At})
	case *actor.Stopping, *actor.Restarting:
		a.stopping = true
		a.endWatch()
		a.stopTimers()
		if a.cancel != nil {
			a.cancel()
		}
		a.setState(ctx, 0)
		a.forgetShard()
	case *actor.Stopped:
	case shardfsm.Event:
		a.step(ctx, msg)
	case storeResult:
		a.onStore(ctx, msg)
	case fetchResult:
		a.onFetch(ctx, msg)
	case pauseNotice:
		a.step(ctx, nil) // the epoch check alone
	case processorCrashed:
		a.deps.Metrics.ProcessorRestarts.Inc()
		a.step(ctx, shardfsm.ProcessorCrashed{Reason: fmt.Sprint(msg.reason)})
	case messages.Processed:
		a.onProcessed(ctx, msg)
	case messages.ShutdownAck:
		a.step(ctx, shardfsm.ShutdownAcked{Ack: msg})
	}
}

func (a *shardActor) onProcessed(ctx actor.Context, r messages.Processed) {
	if r.BatchID == a.inflight.BatchID && !a.sentAt.IsZero() {
		took := time.Since(a.sentAt)
		a.deps.Metrics.ProcessingLatency.Observe(took.Seconds())
		if a.live != nil {
			a.live.worked(took)
		}
		if r.Err == nil {
			n, b := len(a.inflight.Records), 0
			for _, rec := range a.inflight.Records {
				b += len(rec.Data)
			}
			a.deps.Metrics.RecordsProcessed.WithLabelValues(a.deps.shardLabels(a.lease.Key)).Add(float64(n))
			a.deps.Metrics.BytesProcessed.WithLabelValues(a.deps.shardLabels(a.lease.Key)).Add(float64(b))
			a.sentAt = time.Time{}
		}
	}
	a.step(ctx, shardfsm.ProcessorReplied{Reply: r})
}

func (a *shardActor) onStore(ctx actor.Context, r storeResult) {
	res := "ok"
	a.lease = r.held // an ambiguous write found applied: carry on from it
	switch {
	case errors.Is(r.err, lease.ErrLeaseLost):
		res = "lost"
		a.deps.Metrics.LeaseLosses.Inc()
		a.log.Warn("lease lost", "op", r.op.String(), "err", r.err)
	case r.err != nil:
		res = "error"
		a.ambiguous = true
		a.log.Warn("lease write failed, will retry", "op", r.op.String(), "err", r.err)
	default:
		a.ambiguous = false
		a.lease = r.lease
		if r.op == shardfsm.OpCheckpoint {
			a.deps.Metrics.CheckpointsWritten.Inc()
			a.report(ctx, r.lease.Checkpoint)
		}
		if r.op != shardfsm.OpRelease && ctx.Parent() != nil {
			ctx.Send(ctx.Parent(), shardWrote{lease: r.lease})
		}
	}
	a.deps.Metrics.LeaseWrites.WithLabelValues(r.op.String(), res).Inc()
	a.step(ctx, shardfsm.StoreDone{Op: r.op, Err: r.err})
}

func (a *shardActor) onFetch(ctx actor.Context, r fetchResult) {
	a.deps.Metrics.GetRecordsLatency.Observe(r.took.Seconds())
	a.log.Debug("fetched", "records", len(r.batch.Records), "behind_ms", r.batch.MillisBehindLatest, "end", r.err == nil && r.batch.ShardEnd(), "err", r.err)
	if r.err != nil {
		a.countFetchError(r.err)
		a.step(ctx, shardfsm.FetchFailed{Err: r.err})
		return
	}
	a.deps.Metrics.MillisBehindLatest.WithLabelValues(a.deps.shardLabels(a.lease.Key)).Set(float64(r.batch.MillisBehindLatest))
	if a.live != nil {
		a.live.behind.Store(r.batch.MillisBehindLatest)
		b := 0
		for _, rec := range r.batch.Records {
			b += len(rec.Data)
		}
		a.live.read(len(r.batch.Records), b)
	}
	a.step(ctx, shardfsm.FetchSucceeded{Batch: deaggregate(r.batch, a.lease.StartingHashKey, a.lease.EndingHashKey, a.deps.Metrics)})
}

func (a *shardActor) countFetchError(err error) {
	kind := "other"
	switch {
	case errors.Is(err, stream.ErrThrottled):
		kind = "throttled"
	case errors.Is(err, stream.ErrExpiredIterator):
		kind = "expired_iterator"
	}
	a.deps.Metrics.FetchErrors.WithLabelValues(kind).Inc()
	if kind == "other" {
		a.log.Warn("kinesis call failed, backing off", "err", err)
	}
}

// step feeds one event to the machine (nil: none) and runs the effects.
// First it looks at the pause epoch: in a new one (a pause, a death
// declared, or either between the take and the start), the machine
// verifies its lease before it delivers more.
func (a *shardActor) step(ctx actor.Context, ev shardfsm.Event) {
	if a.finished {
		return
	}
	pw := a.deps.Pauses
	if e := pw.Mark(); e != a.epoch {
		a.epoch = e
		p := shardfsm.Paused{For: pw.Gap(), Reason: pw.Reason()}
		if st, ok := ev.(shardfsm.Start); ok && a.m.State() == 0 {
			st.VerifyFirst, st.Pause = true, p // the take proves nothing after it
			ev = st
		} else if a.m.State() != 0 {
			for _, eff := range a.m.Step(time.Now(), p) {
				a.run(ctx, eff)
			}
			if a.finished {
				return
			}
		}
	}
	if ev != nil {
		for _, eff := range a.m.Step(time.Now(), ev) {
			a.run(ctx, eff)
		}
	}
	if a.live != nil {
		a.live.lastProgress.Store(a.m.LastProgress().UnixNano())
	}
	if !a.finished {
		a.setState(ctx, a.m.State())
	}
}

func (a *shardActor) setState(ctx actor.Context, s shardfsm.State) {
	if s == a.state {
		return
	}
	if a.state != 0 {
		a.deps.Metrics.ShardStates.WithLabelValues(a.state.String()).Dec()
	}
	if s != 0 {
		a.deps.Metrics.ShardStates.WithLabelValues(s.String()).Inc()
	}
	a.state = s
	if s != 0 {
		a.log.Debug("shard state", "state", s.String())
		a.report(ctx, a.m.Checkpoint())
	}
}

// report tells the parent the shard's state and checkpoint (for /status).
func (a *shardActor) report(ctx actor.Context, cp lease.Checkpoint) {
	if a.state != 0 && ctx.Parent() != nil {
		ctx.Send(ctx.Parent(), ShardStateChanged{ShardID: a.lease.Key, State: a.state, Checkpoint: cp})
	}
}

// async runs f off the actor and sends its result back to the actor.
// OpTimeout bounds every Kinesis and DynamoDB call a shard actor or the
// coordinator makes: a call that hangs (a stalled server, a half-open
// connection) fails and is retried instead of stalling the shard for good.
const OpTimeout = 30 * time.Second

func (a *shardActor) async(f func(ctx context.Context) any) {
	self, sys, parent := a.self, a.sys, a.ctx
	go func() {
		c, cancel := context.WithTimeout(parent, OpTimeout)
		defer cancel()
		msg := f(c)
		if parent.Err() == nil {
			sys.Root.Send(self, msg)
		}
	}()
}

func (a *shardActor) run(ctx actor.Context, eff shardfsm.Effect) {
	id := a.lease.Key
	switch e := eff.(type) {
	case shardfsm.CheckParents:
		a.log.Debug("waiting on parents", "parents", e.ShardIDs)
		store := a.deps.Store
		a.async(func(c context.Context) any {
			for _, p := range e.ShardIDs {
				l, err := store.Get(c, p)
				if errors.Is(err, lease.ErrNotFound) {
					continue // expired from the stream: nothing to wait for
				}
				if err != nil {
					return shardfsm.ParentsChecked{Err: err}
				}
				if !l.Checkpoint.IsShardEnd() {
					return shardfsm.ParentsChecked{Done: false}
				}
			}
			return shardfsm.ParentsChecked{Done: true}
		})
	case shardfsm.GetIterator:
		s := a.deps.Stream
		a.async(func(c context.Context) any {
			it, err := s.Iterator(c, id, e.Position)
			if err != nil {
				return shardfsm.IteratorFailed{Err: err}
			}
			return shardfsm.IteratorReady{Iterator: it}
		})
	case shardfsm.Fetch:
		s := a.deps.Stream
		a.async(func(c context.Context) any {
			start := time.Now()
			b, err := s.GetRecords(c, e.Iterator, e.Limit)
			return fetchResult{batch: b, err: err, took: time.Since(start)}
		})
	case shardfsm.ListChildren:
		s := a.deps.Stream
		a.async(func(c context.Context) any {
			all, err := s.ListShards(c)
			if err != nil {
				return shardfsm.ChildrenFound{Err: err}
			}
			var ids []string
			for _, ch := range stream.ChildrenFromList(all, id) {
				ids = append(ids, ch.ID)
			}
			return shardfsm.ChildrenFound{IDs: ids}
		})
	case shardfsm.Deliver:
		a.inflight, a.sentAt = e.Batch, time.Now()
		ctx.Request(a.proc, e.Batch)
	case shardfsm.Notify:
		switch e.Msg.(type) {
		case messages.LeaseLost, messages.ShardEnded:
			a.told = true
		}
		if _, ok := e.Msg.(messages.ShutdownRequested); ok {
			ctx.Request(a.proc, e.Msg)
		} else {
			ctx.Send(a.proc, e.Msg)
		}
	case shardfsm.WriteCheckpoint:
		store := a.deps.Store
		a.write(shardfsm.OpCheckpoint, func(c context.Context, held lease.Lease) (lease.Lease, error) {
			return store.Checkpoint(c, held, e.Checkpoint, e.Children)
		})
	case shardfsm.Renew:
		store := a.deps.Store
		a.write(shardfsm.OpRenew, func(c context.Context, held lease.Lease) (lease.Lease, error) {
			return store.Renew(c, held)
		})
	case shardfsm.Release:
		store := a.deps.Store
		a.write(shardfsm.OpRelease, func(c context.Context, held lease.Lease) (lease.Lease, error) {
			if err := store.Release(c, held); err != nil {
				return lease.Lease{}, err
			}
			return Released(held), nil
		})
	case shardfsm.StartTimer:
		a.startTimer(e)
	case shardfsm.DeadLetterBatch:
		a.deadLetter(e)
	case shardfsm.ReplaceProcessor:
		a.deps.Metrics.ProcessorRestarts.Inc()
		a.log.Warn("processor did not answer in time; replacing it", "batch", e.BatchID, "timeout", a.deps.Machine.ProcessTimeout)
		// Stop takes effect when the processor returns from the batch (a
		// FuncProcessor's context ended at the batch's deadline); until then
		// it keeps its name, and the new one gets a name of its own.
		ctx.Stop(a.proc)
		a.proc = ctx.Spawn(a.deps.Processor)
	case shardfsm.VerifyingLease:
		if e.Reason != "" {
			a.log.Info("verifying the lease before delivering more", "why", e.Reason)
		} else {
			a.log.Info("the process was paused: verifying the lease before delivering more", "paused", e.Paused.Round(time.Millisecond))
		}
	case shardfsm.Acked:
		if p := ctx.Parent(); p != nil {
			ctx.Send(p, shardAcked{shardID: a.lease.Key, cp: e.Checkpoint})
		}
	case shardfsm.Stalled:
		if a.live != nil {
			a.live.setStalled(e.Cause)
		}
		if e.Cause != "" {
			a.log.Warn("shard stalled", "on", e.Cause, "since_progress", time.Since(a.m.LastProgress()).Round(time.Millisecond))
		} else {
			a.log.Info("shard moves again")
		}
		if p := ctx.Parent(); p != nil {
			ctx.Send(p, shardStalled{shardID: a.lease.Key, cause: e.Cause})
		}
	case shardfsm.CheckpointRefusedEffect:
		a.deps.Metrics.CheckpointsRefused.Inc()
		a.log.Warn("checkpoint refused", "err", e.Err)
	case shardfsm.ProcessorFailure:
		outcome := "retried"
		if a.m.State() != shardfsm.Processing {
			outcome = "during_shutdown"
		}
		if a.m.State() == shardfsm.ShuttingDown && a.m.Outcome() == shardfsm.Failed {
			outcome = "shard_stopped"
		}
		a.deps.Metrics.ProcessorFailures.WithLabelValues(outcome).Inc()
		a.log.Warn("processor failed", "batch", e.BatchID, "attempt", e.Attempt, "crashed", e.Crashed, "err", e.Err)
	case shardfsm.Bisected:
		a.deps.Metrics.Bisections.Inc()
		a.log.Info("failed delivery split in halves", "batch", e.BatchID, "records", e.Records, "first", e.First)
	case shardfsm.RecordsDeadLettered:
		reason := "failed"
		if e.Expired {
			reason = "expired"
		}
		a.deps.Metrics.RecordsDeadLettered.WithLabelValues(reason).Add(float64(e.Records))
	case shardfsm.Finished:
		a.finish(ctx, e)
	}
}

// deadLetter calls the dead-letter handler off the mailbox, bounded by
// ProcessTimeout, and answers the machine with DeadLettered.
func (a *shardActor) deadLetter(e shardfsm.DeadLetterBatch) {
	fn, key, m, log := a.deps.DeadLetter, a.lease.Key, a.deps.Metrics, a.log
	timeout := a.deps.Machine.ProcessTimeout
	if timeout <= 0 {
		timeout = OpTimeout
	}
	self, sys, parent := a.self, a.sys, a.ctx
	go func() {
		var err error
		if fn == nil {
			err = errors.New("no dead-letter handler configured")
		} else {
			c, cancel := context.WithTimeout(parent, timeout)
			err = fn(c, key, e.Batch, e.Err)
			cancel()
		}
		if err != nil {
			log.Error("dead-letter handler failed; the batch is not checkpointed", "batch", e.Batch.BatchID, "attempt", e.Attempt, "err", err)
		} else {
			m.ProcessorFailures.WithLabelValues("dead_lettered").Inc()
		}
		if parent.Err() == nil {
			sys.Root.Send(self, shardfsm.DeadLettered{BatchID: e.Batch.BatchID, Err: err})
		}
	}()
}

// write runs one fenced lease write off the actor. After a write that
// failed without a clear answer (a timeout, a 5xx on its last attempt: it
// may have been applied), a failed condition is not taken for a lost lease
// at once: if the row shows what that write would have produced (our owner
// and the counter after it; for a release, no owner and that counter), it
// was ours, and the write is made again on top of it.
func (a *shardActor) write(op shardfsm.StoreOp, do func(context.Context, lease.Lease) (lease.Lease, error)) {
	store, held, ambiguous := a.deps.Store, a.lease, a.ambiguous
	a.async(func(c context.Context) any {
		l, err := do(c, held)
		if ambiguous && errors.Is(err, lease.ErrLeaseLost) {
			if row, gerr := store.Get(c, held.Key); gerr == nil {
				if adopted, ok := AppliedEarlier(held, row); ok {
					held = adopted
					if op == shardfsm.OpRelease && adopted.Owner == "" {
						return storeResult{op: op, lease: adopted, held: held} // the release itself was applied
					}
					l, err = do(c, held)
				}
			}
		}
		return storeResult{op: op, lease: l, held: held, err: err}
	})
}

// Released is a held lease as a successful release leaves it.
func Released(held lease.Lease) lease.Lease {
	l := held
	l.Owner, l.Counter = "", held.Counter+1
	return l
}

// AppliedEarlier reports whether row is what an earlier write under held,
// whose answer was lost, produced: the counter it would have written and
// our owner (a renew or checkpoint), or no owner (a release). Then row is
// the lease to carry on with.
func AppliedEarlier(held, row lease.Lease) (lease.Lease, bool) {
	if row.Key != held.Key || row.Counter != held.Counter+1 {
		return lease.Lease{}, false
	}
	if row.Owner == held.Owner || row.Owner == "" {
		return row, true
	}
	return lease.Lease{}, false
}

func (a *shardActor) startTimer(e shardfsm.StartTimer) {
	if int(e.Kind) < len(a.timers) {
		if c := a.timers[e.Kind]; c != nil {
			c()
		}
		a.timers[e.Kind] = a.sched.SendOnce(e.After, a.self, shardfsm.TimerFired{Kind: e.Kind, Token: e.Token})
	}
}

// endWatch ends the subscription to the pause watch.
func (a *shardActor) endWatch() {
	if a.unwatch != nil {
		a.unwatch()
		a.unwatch = nil
	}
}

func (a *shardActor) stopTimers() {
	for i, c := range a.timers {
		if c != nil {
			c()
			a.timers[i] = nil
		}
	}
}

// forgetShard removes the shard's per-shard metric series and board entry:
// a former owner shows nothing stale.
func (a *shardActor) forgetShard() {
	if a.live == nil && a.m == nil {
		return
	}
	key := a.lease.Key
	if a.deps.Board != nil && a.live != nil {
		a.deps.Board.remove(key, a.live)
	}
	a.live = nil
	m := a.deps.Metrics
	stream, shard := a.deps.shardLabels(key)
	m.RecordsProcessed.DeleteLabelValues(stream, shard)
	m.BytesProcessed.DeleteLabelValues(stream, shard)
	m.MillisBehindLatest.DeleteLabelValues(stream, shard)
	m.ShardLoad.DeleteLabelValues(stream, shard)
}

func (a *shardActor) finish(ctx actor.Context, f shardfsm.Finished) {
	a.finished = true
	a.endWatch()
	a.stopTimers()
	a.forgetShard()
	if c, ok := a.deps.Stream.(interface{ CloseShard(string) }); ok {
		c.CloseShard(a.lease.Key) // a fan-out subscription would block the next owner's
	}
	a.setState(ctx, 0)
	a.deps.Metrics.ShardsFinished.WithLabelValues(f.Outcome.String()).Inc()
	a.log.Info("shard finished", "outcome", f.Outcome.String(), "checkpoint", a.m.Checkpoint().SequenceNumber, "err", f.Err)
	done := ShardFinished{ShardID: a.lease.Key, Outcome: f.Outcome, Children: f.Children, Err: f.Err, Counter: a.lease.Counter, Cause: a.m.StalledOn()}
	end := func() {
		if p := ctx.Parent(); p != nil {
			// The parent stops this actor when it has read ShardFinished,
			// so that Terminated (a system message, delivered first) cannot
			// overtake it.
			ctx.Send(p, done)
			return
		}
		ctx.Stop(a.self)
	}
	if !a.told {
		end()
		return
	}
	// Stopping this actor stops the processor by a system message, which
	// overtakes the processor's mail: the LeaseLost or ShardEnded just
	// sent would be dropped. End once the processor has read it (it
	// answers a Touch sent after it), or after NotifyGrace.
	ctx.ReenterAfter(ctx.RequestFuture(a.proc, &actor.Touch{}, NotifyGrace), func(any, error) {
		if !a.stopping {
			end()
		}
	})
}

// NotifyGrace bounds how long a finished shard actor waits for its
// processor to read its last message (LeaseLost, ShardEnded) before it
// ends: a processor stuck in a batch is stopped without it.
const NotifyGrace = time.Second
