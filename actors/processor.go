// Package actors is what a user needs to write a processor, in one of three
// forms, and the dead-letter handler's type. Each form gives the processor
// props that kinactor.NewNode takes:
//
//   - A Processor, a Go interface, with optional interfaces for the rest of
//     a shard's life (Initializer, ShutdownHandler, ShardEnder, LeaseLoser,
//     RefusalHandler), checked by type assertion as memberlist checks its
//     optional delegates. FromProcessor makes one per shard. The compiler
//     sees to it that every batch is answered: ProcessRecords returns a
//     Result or an error. Start here.
//   - A plain function (FuncProcessor): returning nil checkpoints after the
//     batch. The one-liner for processors without state.
//   - A protoactor actor (ActorProcessor) that speaks the protocol of
//     package messages itself, answering with ctx.Respond.
//
// Why all three are *actor.Props, and NewNode keeps taking props: the
// shard actor spawns one thing, so the shard actor shell and the shard
// machine know a single form, and a user's own actor stays possible. The
// interface and function forms are adapter actors built here, so a user of
// either never imports protoactor: the type appears only in NewNode's
// signature, and is inferred. A NewNode taking a Processor would have
// needed a second entry point for actors, and a type of our own wrapping
// the props would hide nothing they do not. For the actor form the
// compiler checks nothing about the replies; for the other two it checks
// that every batch gets a Result or an error.
//
// Per-key parallelism: with Config.ParallelizationFactor N > 1 (told in
// messages.Initialized.Workers) the adapters of FromProcessor and
// FuncProcessor run N workers per shard, each with the records of its own
// partition keys (WorkerOf), so that every key keeps its order: a batch is
// split among them, they run at once, and the batch is answered once all
// have returned, with a checkpoint never ahead of a record some worker has
// not acknowledged and checkpointed (see FromProcessor). With N = 1 (or 0)
// nothing of this runs. An actor processor is one worker and may ignore N.
//
// The shard and coordinator actors that drive processors are internal to
// kinactor. This package must not import the root package or anything
// internal.
package actors

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kinactor/kinactor/messages"
)

// ErrNoProcessor is the error every batch of a shard is answered with when
// the function given to FromProcessor returned nil for it.
var ErrNoProcessor = errors.New("actors: the processor factory returned nil")

// Result is a Processor's answer to a batch: where to checkpoint. The zero
// Result acknowledges the batch but checkpoints nothing: the checkpoint
// stays where an earlier Result put it, and the shard resumes there after a
// crash or a move. But when the shard ends, SHARD_END is checkpointed once
// its last batch is acknowledged, whatever that batch's Result: hold
// nothing of an acknowledged batch that a later batch would have to
// checkpoint.
type Result struct {
	// Checkpoint is messages.CheckpointBatchEnd() (after the last record of
	// the batch), messages.CheckpointAt(seq, subSeq) (after a record
	// delivered so far, not behind the last checkpoint), or the zero value
	// (no checkpoint). A checkpoint that is invalid is refused (see
	// RefusalHandler); the batch still counts as processed.
	Checkpoint messages.Checkpoint
	// Failed names the records of the batch that failed, by position
	// (record.Pos()): a partial batch failure, Lambda's
	// ReportBatchItemFailures. The records before the first of them, in
	// batch order, are processed and checkpointed (Checkpoint is then
	// ignored); that record and every one after it are delivered again
	// after a backoff. A position that is not a record of the batch fails
	// the whole batch, with an error that names it.
	Failed []messages.Position
}

// Processor processes the records of one shard, one batch at a time.
//
// Concurrency: a Processor value serves one shard, and its methods (this
// one and the optional ones) are always called from one goroutine at a
// time, the processor actor's, one call after the other, never
// concurrently. The next batch is not delivered before ProcessRecords
// returns. FromProcessor's newProcessor makes the value: once when the
// shard starts on this node, and again after a panic or after a batch
// outlived its deadline, so a value is never used again once it failed
// mid-batch. Values of different shards are called concurrently; a value
// that newProcessor returns for several shards must be safe for concurrent
// use.
//
// With Config.ParallelizationFactor N > 1, newProcessor makes N values per
// shard, one per worker (see FromProcessor). Each value is still called by
// one goroutine at a time, one call after the other, but ProcessRecords
// runs on a goroutine of its own, at the same time as the other workers'
// values of the shard; the optional methods are called from the actor's
// goroutine, one value after the other, while no ProcessRecords runs.
type Processor interface {
	// ProcessRecords processes batch (batch.Records, in order) and says
	// where to checkpoint. Its context ends at batch.Deadline
	// (Config.ProcessTimeout), when the shard gives up on this value and
	// delivers the batch to a fresh one; a call that outlives it is
	// abandoned, its Result ignored.
	//
	// An error, or a panic, means the batch was not processed: the Result
	// is ignored and the same batch is delivered again after a backoff
	// (after a panic, to a fresh value from newProcessor), with
	// batch.Attempt one higher; the failure policy applies once
	// Config.MaxProcessorAttempts are used up. A batch is never skipped
	// silently.
	ProcessRecords(ctx context.Context, batch messages.Batch) (Result, error)
}

// Initializer is implemented by a Processor that wants to know where its
// shard starts. Initialize is called first, when the shard is ready to be
// read and before its first batch, from the processor's goroutine; a value
// made after a failure gets Initialized.Restarted set, and the failed
// batch right after. Its context is the processor's (it has no deadline):
// return promptly, the first batch waits for it and its deadline runs.
//
// An error fails the batches that follow, each as ProcessRecords failing
// would (delivered again after a backoff, the failure policy applies), and
// Initialize is called again before each of them, under that batch's
// context, until it returns nil.
type Initializer interface {
	Initialize(ctx context.Context, init messages.Initialized) error
}

// ShutdownHandler is implemented by a Processor that checkpoints itself
// when the shard stops here gracefully (the node stops, or the shard moves
// to another node). Shutdown is called from the processor's goroutine after
// the last batch's ProcessRecords returned, or instead of a batch that is
// waiting to be delivered again; no batch follows. It must return within
// Config.ShutdownTimeout, after which the lease is released without its
// checkpoint (its context is the processor's and has no deadline).
//
// The checkpoint returned is written before the lease is released:
// messages.CheckpointBatchEnd() is after the last batch acknowledged
// (ProcessRecords returned nil for it), messages.CheckpointAt a record as
// in Result; the zero Checkpoint (a flush failed) adds nothing to what the
// Results asked for, and the next owner reads the rest again. Without a
// ShutdownHandler, the zero Checkpoint is what the shard gets.
type ShutdownHandler interface {
	Shutdown(ctx context.Context, req messages.ShutdownRequested) messages.Checkpoint
}

// ShardEnder is implemented by a Processor that wants to know its shard
// ended (split or merged): every record was acknowledged and SHARD_END was
// checkpointed for it. ShardEnded is called from the processor's goroutine
// after the last ProcessRecords returned; nothing follows it.
type ShardEnder interface {
	ShardEnded(ctx context.Context, end messages.ShardEnded)
}

// LeaseLoser is implemented by a Processor that wants to know another node
// owns its shard now. LeaseLost is called from the processor's goroutine
// after the last ProcessRecords returned; no batch follows, and
// checkpoints would be refused. The processor's context ends once it
// returns.
type LeaseLoser interface {
	LeaseLost(ctx context.Context, lost messages.LeaseLost)
}

// RefusalHandler is implemented by a Processor that wants to know a
// checkpoint it asked for was refused (backwards, or beyond what was
// delivered). CheckpointRefused is called from the processor's goroutine,
// after the ProcessRecords (or Shutdown) whose checkpoint it was; the batch
// still counts as processed.
type RefusalHandler interface {
	CheckpointRefused(ctx context.Context, refused messages.CheckpointRefused)
}

// FromProcessor returns processor props for kinactor.NewNode that run the
// Processor newProcessor makes for each shard (and again after a failure;
// see Processor). It returns nil (which NewNode refuses) if newProcessor is
// nil.
//
// With messages.Initialized.Workers N > 1 (Config.ParallelizationFactor)
// the adapter calls newProcessor N times per shard (and N times again after
// a failure: a panic in one worker restarts them all, with fresh values).
// Worker w gets the records whose partition key has WorkerOf(key, N) == w,
// in order, as a batch of its own with the batch's ShardID, BatchID,
// MillisBehindLatest, Attempt and Deadline; a worker with no record is not
// called. The workers run at once, under the batch's context, and the
// batch is answered once all of them returned:
//
//   - Checkpoints: a value's Result.Checkpoint concerns its own records,
//     cumulatively: CheckpointBatchEnd is all of them so far, CheckpointAt(p)
//     those at or before p, the zero Checkpoint nothing new. The batch's
//     checkpoint is the last record before the earliest one that some
//     worker has not covered yet: never ahead of it. Shutdown is asked of
//     every value, and combined the same way. The adapter keeps the
//     positions of the records not covered yet: a value that never
//     checkpoints before Shutdown makes that list grow with every record.
//   - Failures: a value that names records in Result.Failed failed at the
//     first of them (and, as with one value, lets its records before that
//     one be checkpointed); one that returns an error, at its first record.
//     The earliest of these failure points F is answered as
//     Processed.Failed (F first, then the other workers' failure points)
//     when F is known to be a failed record (named, or the one record its
//     worker had): the records before F count as processed and are
//     checkpointed. Otherwise the whole batch is answered with the error,
//     so that the shard retries or bisects it: when F is the first record
//     of a worker that had several (which of them failed is not known), and
//     when a record before F is held, processed by a worker that has not
//     covered it with its checkpoints yet (F first in the batch excepted:
//     nothing is checkpointed then). A position named that is not a record
//     of the worker's batch fails the whole batch, with an error naming it.
//   - No duplicates: the records that succeeded are remembered, and when
//     the shard delivers them again (the rest of a batch after a failure)
//     they are not given to a worker again, until a delivery starts after
//     them. A restart of the adapter forgets them: at-least-once.
//
// Initialize, ShardEnded, LeaseLost and CheckpointRefused are called on
// every value that implements them (a failed Initialize is called again,
// on that value, before the next batch).
func FromProcessor(newProcessor func(shardID string) Processor) *actor.Props {
	if newProcessor == nil {
		return nil
	}
	return actor.PropsFromProducer(func() actor.Actor { return &adapter{newProcessor: newProcessor} })
}

// adapter is the processor actor of the interface form: it answers every
// Batch with Processed and every ShutdownRequested with ShutdownAck, and
// calls the optional interfaces that the Processor implements.
type adapter struct {
	newProcessor func(shardID string) Processor
	p            Processor // made at the first Initialized or Batch
	made         bool
	init         *messages.Initialized // Initialize failed with it: call again before the next batch
	ctx          context.Context       // ends when the actor stops or restarts, or the lease is lost
	cancel       context.CancelFunc

	// With Initialized.Workers > 1: one value per worker (values[0] is p),
	// the Initialize calls still to make again, and the fan-out's state.
	values []Processor
	inits  []*messages.Initialized
	fan    *fanout
}

func (a *adapter) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.ctx, a.cancel = context.WithCancel(context.Background())
	case *actor.Stopping, *actor.Restarting:
		if a.cancel != nil {
			a.cancel()
		}
	case messages.Initialized:
		a.make(msg.ShardID, msg.Workers)
		for w, v := range a.all() {
			in, ok := v.(Initializer)
			if !ok {
				continue
			}
			var pending *messages.Initialized
			if err := in.Initialize(a.ctx, msg); err != nil {
				pending = &msg
			}
			if a.fan != nil {
				a.inits[w] = pending
			} else {
				a.init = pending
			}
		}
	case messages.Batch:
		// A panic propagates: the shard actor's supervisor restarts this
		// actor (a fresh value from newProcessor) and the batch is
		// delivered again.
		if a.fan != nil {
			ctx.Respond(a.processParallel(msg))
		} else {
			ctx.Respond(a.process(msg))
		}
	case messages.ShutdownRequested:
		if a.fan != nil {
			cps := make([]messages.Checkpoint, len(a.values))
			for w, v := range a.values {
				if h, ok := v.(ShutdownHandler); ok && a.inits[w] == nil {
					cps[w] = h.Shutdown(a.ctx, msg)
				}
			}
			ctx.Respond(messages.ShutdownAck{Checkpoint: a.fan.shutdown(cps)})
			return
		}
		var cp messages.Checkpoint
		if h, ok := a.p.(ShutdownHandler); ok && a.init == nil {
			cp = h.Shutdown(a.ctx, msg)
		}
		ctx.Respond(messages.ShutdownAck{Checkpoint: cp})
	case messages.ShardEnded:
		for _, v := range a.all() {
			if h, ok := v.(ShardEnder); ok {
				h.ShardEnded(a.ctx, msg)
			}
		}
	case messages.LeaseLost:
		for _, v := range a.all() {
			if h, ok := v.(LeaseLoser); ok {
				h.LeaseLost(a.ctx, msg)
			}
		}
		if a.cancel != nil {
			a.cancel()
		}
	case messages.CheckpointRefused:
		for _, v := range a.all() {
			if h, ok := v.(RefusalHandler); ok {
				h.CheckpointRefused(a.ctx, msg)
			}
		}
	}
}

// make makes the shard's Processor values, once per actor: one, or one per
// worker.
func (a *adapter) make(shardID string, workers int) {
	if a.made {
		return
	}
	a.p, a.made = a.newProcessor(shardID), true
	if workers > 1 {
		a.values = make([]Processor, workers)
		a.values[0] = a.p
		for w := 1; w < workers; w++ {
			a.values[w] = a.newProcessor(shardID)
		}
		a.inits = make([]*messages.Initialized, workers)
		a.fan = newFanout(workers)
	}
}

// all returns the values made (nil ones left out).
func (a *adapter) all() []Processor {
	if a.fan != nil {
		var vs []Processor
		for _, v := range a.values {
			if v != nil {
				vs = append(vs, v)
			}
		}
		return vs
	}
	if a.p == nil {
		return nil
	}
	return []Processor{a.p}
}

// process runs one batch, under a context that ends at its deadline, and
// returns the answer.
func (a *adapter) process(b messages.Batch) messages.Processed {
	a.make(b.ShardID, 1)
	if a.p == nil {
		return messages.Processed{BatchID: b.BatchID, Err: ErrNoProcessor}
	}
	bctx, cancel := a.batchContext(b)
	defer cancel()
	if a.init != nil {
		if err := a.p.(Initializer).Initialize(bctx, *a.init); err != nil {
			return messages.Processed{BatchID: b.BatchID, Err: fmt.Errorf("actors: initialize: %w", err)}
		}
		a.init = nil
	}
	res, err := a.p.ProcessRecords(bctx, b)
	if err != nil {
		return messages.Processed{BatchID: b.BatchID, Err: err}
	}
	return messages.Processed{BatchID: b.BatchID, Checkpoint: res.Checkpoint, Failed: res.Failed}
}

// processParallel runs one batch on the workers (see fanout).
func (a *adapter) processParallel(b messages.Batch) messages.Processed {
	if slices.Contains(a.values, nil) {
		return messages.Processed{BatchID: b.BatchID, Err: ErrNoProcessor}
	}
	bctx, cancel := a.batchContext(b)
	defer cancel()
	for w, in := range a.inits {
		if in == nil || a.values[w] == nil {
			continue
		}
		if err := a.values[w].(Initializer).Initialize(bctx, *in); err != nil {
			return messages.Processed{BatchID: b.BatchID, Err: fmt.Errorf("actors: initialize worker %d: %w", w, err)}
		}
		a.inits[w] = nil
	}
	parts := a.fan.split(b)
	outs, p := runWorkers(bctx, a.values, b, parts)
	if p != nil {
		panic(p) // in the actor's goroutine: its supervisor restarts it
	}
	return a.fan.combine(b, parts, outs)
}

func (a *adapter) batchContext(b messages.Batch) (context.Context, context.CancelFunc) {
	if !b.Deadline.IsZero() {
		return context.WithDeadline(a.ctx, b.Deadline)
	}
	return a.ctx, func() {}
}

// ProcessorFunc is the plain-function way to process records. It is called
// with one batch at a time, in order, for one shard; its context ends when
// the batch's deadline (Config.ProcessTimeout) passes or the shard stops
// here, and a function that outlives it is abandoned. Returning nil
// acknowledges the batch and checkpoints after its last record (the write is
// coalesced; see Config.CheckpointInterval). Returning an error, or
// panicking, has the same batch delivered again after a backoff.
//
// A function reports a partial batch failure by returning FailRecords with
// the positions of the records that failed: the records before the first of
// them are processed and checkpointed, it and the ones after it delivered
// again (see Result.Failed).
//
// With Config.ParallelizationFactor N > 1 the function is called from up to
// N goroutines at once for one shard, each with the records of its own
// partition keys (in order; see FromProcessor): it must be safe for
// concurrent use. After a worker's error (or FailRecords) the batch, or its
// rest, is delivered again, but only the records that failed, or were not
// reached, are given to the function again: the other workers' are
// remembered as processed.
type ProcessorFunc func(ctx context.Context, batch messages.Batch) error

// BatchItemFailures is the error a ProcessorFunc returns to name the
// records of its batch that failed (a partial batch failure); make it with
// FailRecords.
type BatchItemFailures struct {
	Records []messages.Position
}

func (f *BatchItemFailures) Error() string {
	if len(f.Records) == 0 {
		return "actors: batch item failures naming no record"
	}
	return fmt.Sprintf("actors: %d records failed, the first named %s", len(f.Records), f.Records[0])
}

// FailRecords returns the error by which a ProcessorFunc says that the
// records at these positions (record.Pos()) failed and the others
// succeeded. With no position it is an ordinary error: the whole batch
// failed.
func FailRecords(positions ...messages.Position) error {
	return &BatchItemFailures{Records: positions}
}

// FuncProcessor turns fn into processor props. Each shard gets its own
// actor; fn may be called concurrently for different shards, and, with
// Config.ParallelizationFactor > 1, for different partition keys of one
// shard (the workers share fn). It is a Processor (FromProcessor) whose
// every Result, and whose Shutdown, checkpoint at the end of what was
// acknowledged.
func FuncProcessor(fn ProcessorFunc) *actor.Props {
	p := funcProcessor{fn: fn}
	return FromProcessor(func(string) Processor { return p })
}

type funcProcessor struct{ fn ProcessorFunc }

func (p funcProcessor) ProcessRecords(ctx context.Context, batch messages.Batch) (Result, error) {
	if err := p.fn(ctx, batch); err != nil {
		var f *BatchItemFailures
		if errors.As(err, &f) && len(f.Records) > 0 {
			return Result{Failed: f.Records}, nil
		}
		return Result{}, err
	}
	return Result{Checkpoint: messages.CheckpointBatchEnd()}, nil
}

// Shutdown: every batch acknowledged so far was processed; checkpoint there.
func (funcProcessor) Shutdown(context.Context, messages.ShutdownRequested) messages.Checkpoint {
	return messages.CheckpointBatchEnd()
}

// ActorProcessor returns the props of a processor that is a user actor,
// made fresh by produce for each shard (and after each restart). It
// receives the messages of package messages and replies as that package
// documents.
func ActorProcessor(produce func() actor.Actor) *actor.Props {
	return actor.PropsFromProducer(produce)
}

// DeadLetterFunc receives a batch that exhausted its attempts under the
// dead-letter policy. It runs off the shard's mailbox, bounded by
// ProcessTimeout; the checkpoint moves past the batch only once it returned
// nil. An error has it called again after a backoff, for as long as it
// fails (the shard is stalled on "failure-destination" meanwhile), so the
// records are never skipped. It also receives the records Config.MaxRecordAge
// turns away (cause wrapping an error that says so, batch.Attempt 0 if they
// were never delivered), and, after a partial failure or a bisect, only the
// records that used up their attempts.
type DeadLetterFunc func(ctx context.Context, shardID string, batch messages.Batch, cause error) error
