// Package actorprocessor is an example processor written as a protoactor
// actor. It does what examples/funcprocessor does (counts records per shard
// and per partition key, detects duplicates by shard and sequence number),
// but handles the whole processor protocol of package messages itself:
//
//   - messages.Initialized: remembers the shard and where it starts;
//   - messages.Batch: counts the batch and replies Processed with the
//     same BatchID, checkpointing at the end of the batch;
//   - messages.ShutdownRequested: replies ShutdownAck, checkpointing after
//     the last batch delivered;
//   - messages.ShardEnded, messages.LeaseLost: recorded, no reply.
//
// Every shard gets its own actor; the actors share one Sink.
//
//	sink := actorprocessor.NewSink()
//	node, err := kinactor.NewNode(cfg, actorprocessor.Props(sink))
package actorprocessor

import (
	"sort"
	"sync"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/messages"
)

// Sink collects what the processor actors saw. It is safe for concurrent
// use by the actors of all shards.
type Sink struct {
	mu         sync.Mutex
	total      int
	perShard   map[string]int
	perKey     map[string]int
	seen       map[string]int // shard + "/" + sequence number
	duplicates int
	ended      []string // shards that reached SHARD_END
	lost       []string // shards whose lease was lost
}

// NewSink returns an empty sink.
func NewSink() *Sink {
	return &Sink{perShard: map[string]int{}, perKey: map[string]int{}, seen: map[string]int{}}
}

func (s *Sink) add(batch messages.Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range batch.Records {
		k := batch.ShardID + "/" + r.SequenceNumber
		s.seen[k]++
		if s.seen[k] == 2 {
			s.duplicates++
		}
		s.total++
		s.perShard[batch.ShardID]++
		s.perKey[r.PartitionKey]++
	}
}

// Total is the number of records delivered, duplicates included.
func (s *Sink) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Duplicates is the number of distinct records delivered more than once.
func (s *Sink) Duplicates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.duplicates
}

// PerShard returns the number of records delivered per shard.
func (s *Sink) PerShard() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.perShard))
	for k, v := range s.perShard {
		out[k] = v
	}
	return out
}

// PerKey returns the number of records delivered per partition key.
func (s *Sink) PerKey() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.perKey))
	for k, v := range s.perKey {
		out[k] = v
	}
	return out
}

// Ended returns the shards that reached SHARD_END, sorted.
func (s *Sink) Ended() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]string(nil), s.ended...)
	sort.Strings(out)
	return out
}

// Lost returns the shards whose lease this node lost, sorted.
func (s *Sink) Lost() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]string(nil), s.lost...)
	sort.Strings(out)
	return out
}

// Processor is the processor actor of one shard.
type Processor struct {
	sink    *Sink
	shardID string
	start   string // the checkpoint reading resumed after
}

// Props returns processor props for kinactor.NewNode: a fresh Processor per
// shard, all feeding sink.
func Props(sink *Sink) *actor.Props {
	return actors.ActorProcessor(func() actor.Actor { return &Processor{sink: sink} })
}

// Receive implements actor.Actor.
func (p *Processor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case messages.Initialized:
		p.shardID, p.start = msg.ShardID, msg.StartingCheckpoint
	case messages.Batch:
		p.sink.add(msg)
		ctx.Respond(messages.Processed{BatchID: msg.BatchID, Checkpoint: messages.CheckpointBatchEnd()})
	case messages.ShutdownRequested:
		// Every batch delivered so far was processed: checkpoint after it.
		ctx.Respond(messages.ShutdownAck{Checkpoint: messages.CheckpointBatchEnd()})
	case messages.ShardEnded:
		p.sink.mu.Lock()
		p.sink.ended = append(p.sink.ended, msg.ShardID)
		p.sink.mu.Unlock()
	case messages.LeaseLost:
		p.sink.mu.Lock()
		p.sink.lost = append(p.sink.lost, msg.ShardID)
		p.sink.mu.Unlock()
	}
}
