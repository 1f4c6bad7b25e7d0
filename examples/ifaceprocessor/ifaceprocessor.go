// Package ifaceprocessor is an example processor written as an
// actors.Processor, the interface form. It does what examples/actorprocessor
// does (counts records per shard and per partition key, detects duplicates
// by shard and sequence number, notes shard ends and lost leases), without
// protoactor: ProcessRecords returns a Result, so the compiler sees to it
// that every batch is answered.
//
// Each shard gets its own Processor value, called from one goroutine at a
// time, so its own fields need no lock; the values of all shards share one
// Sink, which has one. It implements the optional interfaces
// actors.Initializer, actors.ShutdownHandler, actors.ShardEnder and
// actors.LeaseLoser.
//
//	sink := ifaceprocessor.NewSink()
//	node, err := kinactor.NewNode(cfg, actors.FromProcessor(ifaceprocessor.New(sink)))
package ifaceprocessor

import (
	"context"
	"sort"
	"sync"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/messages"
)

// Sink collects what the processors of all shards saw. It is safe for
// concurrent use.
type Sink struct {
	mu         sync.Mutex
	total      int
	perShard   map[string]int
	perKey     map[string]int
	seen       map[string]int // shard + "/" + sequence number
	duplicates int
	starts     []string // shard@checkpoint, for every Initialize
	ended      []string // shards that reached SHARD_END
	lost       []string // shards whose lease was lost
}

// NewSink returns an empty sink.
func NewSink() *Sink {
	return &Sink{perShard: map[string]int{}, perKey: map[string]int{}, seen: map[string]int{}}
}

// New returns the function that makes a shard's Processor, for
// actors.FromProcessor.
func New(sink *Sink) func(shardID string) actors.Processor {
	return func(shardID string) actors.Processor { return &Processor{sink: sink, shardID: shardID} }
}

// Processor is the processor of one shard.
type Processor struct {
	sink    *Sink
	shardID string
}

// The optional interfaces it implements, checked at compile time.
var (
	_ actors.Initializer     = (*Processor)(nil)
	_ actors.ShutdownHandler = (*Processor)(nil)
	_ actors.ShardEnder      = (*Processor)(nil)
	_ actors.LeaseLoser      = (*Processor)(nil)
)

// Initialize notes where the shard starts.
func (p *Processor) Initialize(_ context.Context, in messages.Initialized) error {
	p.sink.mu.Lock()
	p.sink.starts = append(p.sink.starts, in.ShardID+"@"+in.StartingCheckpoint)
	p.sink.mu.Unlock()
	return nil
}

// ProcessRecords counts the batch and checkpoints after its last record.
func (p *Processor) ProcessRecords(_ context.Context, batch messages.Batch) (actors.Result, error) {
	p.sink.add(p.shardID, batch.Records)
	return actors.Result{Checkpoint: messages.CheckpointBatchEnd()}, nil
}

// Shutdown checkpoints after the last batch acknowledged: every one was
// processed.
func (p *Processor) Shutdown(context.Context, messages.ShutdownRequested) messages.Checkpoint {
	return messages.CheckpointBatchEnd()
}

// ShardEnded notes the end of the shard.
func (p *Processor) ShardEnded(_ context.Context, e messages.ShardEnded) {
	p.sink.mu.Lock()
	p.sink.ended = append(p.sink.ended, e.ShardID)
	p.sink.mu.Unlock()
}

// LeaseLost notes that another node owns the shard now.
func (p *Processor) LeaseLost(_ context.Context, l messages.LeaseLost) {
	p.sink.mu.Lock()
	p.sink.lost = append(p.sink.lost, l.ShardID)
	p.sink.mu.Unlock()
}

func (s *Sink) add(shardID string, recs []messages.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		k := shardID + "/" + r.SequenceNumber
		s.seen[k]++
		if s.seen[k] == 2 {
			s.duplicates++
		}
		s.total++
		s.perShard[shardID]++
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

// Starts returns shard@checkpoint for every Initialize, in order.
func (s *Sink) Starts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.starts...)
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
