// Package actors is what a user needs to write a processor: as a plain
// function (FuncProcessor) or as a protoactor actor (ActorProcessor) that
// speaks the protocol of package messages, and the dead-letter handler's
// type. The shard and coordinator actors that drive processors are
// internal to kinactor.
//
// This package must not import the root package or anything internal.
package actors

import (
	"context"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kinactor/kinactor/messages"
)

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
// nil. An error has it called again after a backoff; after
// MaxProcessorAttempts failed calls the shard stops on this node without
// checkpointing, so the batch is read again, never lost.
type DeadLetterFunc func(ctx context.Context, shardID string, batch messages.Batch, cause error) error

// ProcessorFunc is the plain-function way to process records. It is called
// with one batch at a time, in order, for one shard; its context ends when
// the batch's deadline (Config.ProcessTimeout) passes or the shard stops
// here, and a function that outlives it is abandoned. Returning nil
// acknowledges the batch and checkpoints after its last record (the write is
// coalesced; see Config.CheckpointInterval). Returning an error, or
// panicking, has the same batch delivered again after a backoff.
type ProcessorFunc func(ctx context.Context, batch messages.Batch) error

// FuncProcessor turns fn into processor props. Each shard gets its own
// actor; fn may be called concurrently for different shards.
func FuncProcessor(fn ProcessorFunc) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &funcProcessor{fn: fn} })
}

type funcProcessor struct {
	fn     ProcessorFunc
	ctx    context.Context
	cancel context.CancelFunc
}

func (p *funcProcessor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		p.ctx, p.cancel = context.WithCancel(context.Background())
	case *actor.Stopping, *actor.Restarting:
		if p.cancel != nil {
			p.cancel()
		}
	case messages.Batch:
		// A panic in fn propagates: the supervisor restarts this actor and
		// the shard actor delivers the batch again. The batch's context
		// ends at its deadline (ProcessTimeout), when the shard actor gives
		// up on this processor and replaces it.
		bctx, cancel := p.ctx, context.CancelFunc(func() {})
		if !msg.Deadline.IsZero() {
			bctx, cancel = context.WithDeadline(p.ctx, msg.Deadline)
		}
		err := p.fn(bctx, msg)
		cancel()
		if err != nil {
			ctx.Respond(messages.Processed{BatchID: msg.BatchID, Err: err})
			return
		}
		ctx.Respond(messages.Processed{BatchID: msg.BatchID, Checkpoint: messages.CheckpointBatchEnd()})
	case messages.ShutdownRequested:
		// Every batch acknowledged so far was processed: checkpoint there.
		ctx.Respond(messages.ShutdownAck{Checkpoint: messages.CheckpointBatchEnd()})
	case messages.LeaseLost:
		if p.cancel != nil {
			p.cancel()
		}
	}
}
