// Package funcprocessor is an example processor written as a plain function
// (actors.ProcessorFunc). It counts records per shard and per partition
// key and detects duplicates: a record seen more than once, identified by
// (shard, sequence number, sub-sequence number).
//
// The demo (`kinactor demo`) uses it to check that every record is processed
// exactly once.
//
//	counter, fn := funcprocessor.New()
//	node, err := kinactor.NewNode(cfg, actors.FuncProcessor(fn))
//	...
//	fmt.Println(counter.Total(), counter.Duplicates())
package funcprocessor

import (
	"context"
	"sort"
	"sync"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/messages"
)

// recordKey identifies one record of a stream.
type recordKey struct {
	shard  string
	seq    string
	subSeq int64
}

// ShardStats is what the counter saw on one shard.
type ShardStats struct {
	ShardID  string
	Records  int    // records delivered, duplicates included
	FirstSeq string // sequence number of the first record seen
	LastSeq  string // sequence number of the last record seen
}

// Counter counts what the processor function saw. It is safe for
// concurrent use: the node calls the function concurrently for different
// shards, and the caller reads the counts while it runs.
type Counter struct {
	mu         sync.Mutex
	total      int
	perShard   map[string]*ShardStats
	perKey     map[string]int
	seen       map[recordKey]int
	duplicates int
}

// New returns a counter and the processor function that feeds it. Pass the
// function to actors.FuncProcessor.
func New() (*Counter, actors.ProcessorFunc) {
	c := &Counter{
		perShard: map[string]*ShardStats{},
		perKey:   map[string]int{},
		seen:     map[recordKey]int{},
	}
	return c, c.Process
}

// Process counts one batch. It never fails, so every batch is acknowledged
// and checkpointed after its last record.
func (c *Counter) Process(_ context.Context, batch messages.Batch) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.perShard[batch.ShardID]
	if s == nil {
		s = &ShardStats{ShardID: batch.ShardID}
		c.perShard[batch.ShardID] = s
	}
	for _, r := range batch.Records {
		k := recordKey{shard: batch.ShardID, seq: r.SequenceNumber, subSeq: r.SubSequenceNumber}
		c.seen[k]++
		if c.seen[k] == 2 { // count each duplicated record once
			c.duplicates++
		}
		c.total++
		c.perKey[r.PartitionKey]++
		if s.FirstSeq == "" {
			s.FirstSeq = r.SequenceNumber
		}
		s.LastSeq = r.SequenceNumber
		s.Records++
	}
	return nil
}

// Total is the number of records delivered, duplicates included.
func (c *Counter) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// Unique is the number of distinct records delivered.
func (c *Counter) Unique() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// Duplicates is the number of distinct records delivered more than once.
func (c *Counter) Duplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.duplicates
}

// Shards returns per-shard statistics, sorted by shard id.
func (c *Counter) Shards() []ShardStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ShardStats, 0, len(c.perShard))
	for _, s := range c.perShard {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ShardID < out[j].ShardID })
	return out
}

// Keys returns the number of records delivered per partition key.
func (c *Counter) Keys() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.perKey))
	for k, v := range c.perKey {
		out[k] = v
	}
	return out
}
