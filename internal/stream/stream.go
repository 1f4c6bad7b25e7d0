// Package stream owns every call kinactor makes to Kinesis: listing shards
// and their lineage, getting iterators from a checkpoint or an initial
// position, and polling GetRecords within Kinesis' per-shard limits.
//
// Calls block and take a context; they are made off the actor goroutines and
// their results travel back to the actors as messages. Errors are classified
// into the sentinel errors below so that callers (the shard state machine)
// branch on kind, never on strings.
//
// This package must not import actors, cluster, lease or the root package.
package stream

import (
	"context"
	"errors"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/messages"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrThrottled: ProvisionedThroughputExceededException,
	// KMSThrottlingException or LimitExceededException. Back off and retry.
	ErrThrottled = errors.New("stream: throttled by Kinesis")
	// ErrExpiredIterator: the iterator is older than 5 minutes; get a fresh
	// one after the last record delivered.
	ErrExpiredIterator = errors.New("stream: shard iterator expired")
	// ErrShardNotFound: the shard or stream does not exist
	// (ResourceNotFoundException).
	ErrShardNotFound = errors.New("stream: stream or shard not found")
	// ErrInvalidArgument: Kinesis rejected the request's arguments
	// (InvalidArgumentException), e.g. a sequence number that is not in the
	// shard or an iterator that does not belong to it. Retrying the same
	// request cannot succeed: it is terminal for the call (and the shard).
	ErrInvalidArgument = errors.New("stream: invalid argument")
)

// API is the subset of the Kinesis client that this package uses; the SDK's
// *kinesis.Client implements it, and unit tests may inject faults through it.
type API interface {
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, opts ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error)
	GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error)
}

// Shard is one shard and its lineage as ListShards reports it.
type Shard struct {
	ID                     string
	ParentShardID          string // "" if none
	AdjacentParentShardID  string // "" if none (set for merges)
	StartingHashKey        string
	EndingHashKey          string
	StartingSequenceNumber string
	EndingSequenceNumber   string // "" while the shard is open
}

// Parents returns the non-empty parent and adjacent parent ids.
func (s Shard) Parents() []string {
	var p []string
	if s.ParentShardID != "" {
		p = append(p, s.ParentShardID)
	}
	if s.AdjacentParentShardID != "" {
		p = append(p, s.AdjacentParentShardID)
	}
	return p
}

// Closed reports whether the shard has an ending sequence number.
func (s Shard) Closed() bool { return s.EndingSequenceNumber != "" }

// PositionType says where to start reading a shard: the SDK's iterator
// types (types.ShardIteratorTypeTrimHorizon, …AtSequenceNumber, …), the one
// home of these strings.
type PositionType = types.ShardIteratorType

// Position is a starting point in a shard.
type Position struct {
	Type           PositionType
	SequenceNumber string    // for AFTER_/AT_SEQUENCE_NUMBER
	Timestamp      time.Time // for AT_TIMESTAMP
}

// Record is one Kinesis record; the same type the processor gets
// (messages.Record), so a batch is handed over without copying.
type Record = messages.Record

// Batch is the result of one GetRecords call.
type Batch struct {
	Records            []Record
	MillisBehindLatest int64
	// NextIterator is "" when the shard has ended (all its records read).
	NextIterator string
	// ChildShards is set at shard end when the server reports them; nil
	// otherwise (kinesalite never does: use ListShards).
	ChildShards []Shard
}

// ShardEnd reports whether the batch was the last of its shard.
func (b Batch) ShardEnd() bool { return b.NextIterator == "" }
