// Package messages owns the protocol between a shard actor and the
// processor actor it supervises: what a processor receives (Initialized,
// Batch, ShutdownRequested, ShardEnded, LeaseLost, CheckpointRefused) and
// what it replies (Processed, ShutdownAck).
//
// A processor written as an actors.Processor, or an actors.ProcessorFunc,
// sees these messages as method calls and arguments, and its adapter
// answers them; only an actor processor (actors.ActorProcessor) speaks the
// protocol itself. The protocol, seen from a processor:
//
//  1. Initialized arrives first (and again after every restart of the
//     processor, before the batch is delivered again).
//  2. Each Batch message must be answered with ctx.Respond(Processed{...})
//     carrying the same BatchID. The next batch is not delivered before the
//     reply. A processor that panics is restarted by its supervisor and gets
//     the same batch again; replying with Processed{Err: err} does the same
//     without the restart. A batch is never skipped silently.
//  3. ShutdownRequested (graceful: the shard is moving to another node or the
//     node is stopping) must be answered with ctx.Respond(ShutdownAck{...});
//     it is the last chance to checkpoint.
//  4. ShardEnded and LeaseLost are informational and need no reply. At shard
//     end the SHARD_END checkpoint is written for the processor once it has
//     acknowledged the last batch. After LeaseLost the processor cannot
//     checkpoint any more: another node owns the shard.
//
// This package is the leaf of the module: it imports nothing of kinactor.
package messages

import (
	"fmt"
	"time"
)

// Record is one Kinesis record.
type Record struct {
	SequenceNumber              string
	SubSequenceNumber           int64 // 0 unless de-aggregated from a KPL record
	PartitionKey                string
	Data                        []byte
	ApproximateArrivalTimestamp time.Time
}

// Initialized tells the processor which shard it serves and where reading
// starts: after the checkpoint, or at the initial position when the shard has
// none.
type Initialized struct {
	ShardID string
	Stream  string // the stream's name
	// StartingCheckpoint is the sequence number the shard resumes after, or
	// TRIM_HORIZON / LATEST / AT_TIMESTAMP when it starts fresh.
	StartingCheckpoint string
	SubSequenceNumber  int64
	// Restarted is true when the processor was restarted after a failure and
	// the previous batch is about to be delivered again.
	Restarted bool
	// Workers is Config.ParallelizationFactor: how many workers the
	// processor runs for this shard, each with the records of its own
	// partition keys. The adapters of actors.FromProcessor and
	// actors.FuncProcessor honour it; an actor processor is one worker
	// and may ignore it. 0 means 1.
	Workers int
}

// Position names one record: its sequence number and, for a user record
// of a KPL aggregate, its sub-sequence number (0 otherwise).
type Position struct {
	SequenceNumber    string
	SubSequenceNumber int64
}

// Pos returns the record's position.
func (r Record) Pos() Position {
	return Position{SequenceNumber: r.SequenceNumber, SubSequenceNumber: r.SubSequenceNumber}
}

func (p Position) String() string {
	if p.SubSequenceNumber == 0 {
		return p.SequenceNumber
	}
	return fmt.Sprintf("%s/%d", p.SequenceNumber, p.SubSequenceNumber)
}

// Batch is one batch of records for the processor (batch.Records, in
// order). Reply with Processed.
type Batch struct {
	// ShardID is the Kinesis shard id and Stream the name of its stream
	// (in a multi-stream application, shard ids repeat across streams).
	ShardID string
	Stream  string
	// BatchID identifies this delivery: echo it in Processed. A batch
	// delivered again to the same processor keeps its id; one delivered
	// to a replacement processor (after ProcessTimeout) gets a new one, so
	// that a late answer of the old processor cannot be taken for the new
	// one's.
	BatchID            uint64
	Records            []Record
	MillisBehindLatest int64
	// Attempt is 1 on the first delivery of this batch and grows with each
	// redelivery after a failure.
	Attempt int
	// Deadline: a batch not answered by then counts as a failed delivery
	// (Config.ProcessTimeout); the processor is replaced and the batch
	// delivered again. The context of actors.Processor's ProcessRecords
	// (and of a FuncProcessor) ends at the deadline.
	// Zero: no deadline.
	Deadline time.Time
}

// Last returns the last record of the batch, or false if it is empty.
func (b *Batch) Last() (Record, bool) {
	if len(b.Records) == 0 {
		return Record{}, false
	}
	return b.Records[len(b.Records)-1], true
}

// CheckpointMode says where a reply asks to checkpoint.
type CheckpointMode int

const (
	// NoCheckpoint: the batch is processed, but do not move the checkpoint.
	NoCheckpoint CheckpointMode = iota
	// AtBatchEnd: checkpoint after the last record of the batch.
	AtBatchEnd
	// AtSequence: checkpoint after the given record, which must lie between
	// the current checkpoint and the last record delivered.
	AtSequence
)

// Checkpoint is a checkpoint request carried by a reply.
type Checkpoint struct {
	Mode              CheckpointMode
	SequenceNumber    string // for AtSequence
	SubSequenceNumber int64  // for AtSequence
}

// CheckpointAt asks to checkpoint after the record with this sequence number.
func CheckpointAt(seq string, subSeq int64) Checkpoint {
	return Checkpoint{Mode: AtSequence, SequenceNumber: seq, SubSequenceNumber: subSeq}
}

// CheckpointBatchEnd asks to checkpoint after the last record of the batch.
func CheckpointBatchEnd() Checkpoint { return Checkpoint{Mode: AtBatchEnd} }

func (c Checkpoint) String() string {
	switch c.Mode {
	case NoCheckpoint:
		return "none"
	case AtBatchEnd:
		return "batch-end"
	default:
		return fmt.Sprintf("%s/%d", c.SequenceNumber, c.SubSequenceNumber)
	}
}

// Processed is the reply to Batch.
type Processed struct {
	BatchID    uint64
	Checkpoint Checkpoint
	// Err, when set, means the batch was not processed: it is delivered
	// again after a backoff, and the failure policy applies once the
	// configured number of attempts is used up.
	Err error
	// Failed names the records of the batch that failed (partial batch
	// failure, as Lambda's ReportBatchItemFailures). The records before
	// the first of them (in batch order) count as processed and are
	// checkpointed; that record and every one after it are delivered again
	// after a backoff (with Config.BisectOnError the failed record first on
	// its own). Checkpoint is then ignored. A position that is not a
	// record of the batch makes the whole batch fail, with an error naming
	// it. With Err set, Failed is ignored.
	Failed []Position
}

// ShutdownRequested asks the processor to finish: reply with ShutdownAck,
// usually with a checkpoint at the last record it processed.
type ShutdownRequested struct {
	ShardID string
}

// ShutdownAck is the reply to ShutdownRequested. With Mode AtBatchEnd it
// checkpoints after the last batch delivered.
type ShutdownAck struct {
	Checkpoint Checkpoint
}

// ShardEnded tells the processor that every record of the shard has been
// processed and SHARD_END was checkpointed for it. No reply is needed.
type ShardEnded struct {
	ShardID  string
	Children []string
}

// LeaseLost tells the processor that another node owns the shard now; its
// checkpoints would be refused. No reply is needed.
type LeaseLost struct {
	ShardID string
}

// CheckpointRefused tells the processor that a checkpoint it asked for was
// not written because it was invalid (backwards, or beyond what was
// delivered). The batch still counts as processed.
type CheckpointRefused struct {
	ShardID string
	BatchID uint64
	Err     error
}
