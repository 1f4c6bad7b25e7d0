package kinactor

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/failure"
	"github.com/kinactor/kinactor/messages"
)

// FailureEntry is one record of a batch that failed for good, as a failure
// destination stores it: Stream (when known), Shard, SequenceNumber,
// SubSequenceNumber, PartitionKey, ArrivalTime, Data (the payload), Error
// (the cause's text), Attempts (failed deliveries of the record; 0 for a
// record MaxRecordAge turned away before any) and FailedAt. Its
// JSON form (a line of a FailureDir file, the data of a FailureStream
// record) has stable names, the payload in standard base64 and the times
// in RFC 3339:
//
//	{"stream":"orders","shard":"shardId-000000000001","seq":"4959…","sub":0,
//	 "pk":"k7","arrival":"2026-05-01T12:00:00.123Z","data":"eyJuIjoxfQ==",
//	 "error":"poison","attempts":5,"failed_at":"2026-05-01T12:00:09.5Z"}
//
// stream and data are absent when empty. Destinations are at least once:
// dedupe by (shard, seq, sub).
type FailureEntry = failure.Entry

// FailureDestination stores the records of failed batches: FailureDir,
// FailureStream, FailureTable, or one of your own. Write returns nil only
// once every entry is durable; an error means some may be stored and some
// not, and the caller writes them all again. It must be safe for
// concurrent use: the dead-letter calls of many shards write at once
// (those of one shard never overlap).
//
//	type FailureDestination interface {
//		Write(ctx context.Context, entries []FailureEntry) error
//	}
type FailureDestination = failure.Destination

// FailureKinesisAPI is the part of *kinesis.Client FailureStream uses.
type FailureKinesisAPI interface {
	PutRecords(ctx context.Context, in *kinesis.PutRecordsInput, optFns ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error)
}

// FailureDynamoDBAPI is the part of *dynamodb.Client FailureTable uses.
type FailureDynamoDBAPI interface {
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	BatchWriteItem(ctx context.Context, in *dynamodb.BatchWriteItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error)
}

// FailureDir returns a destination appending each entry's JSON form as one
// line to path/SHARD.jsonl (one file per shard; characters of the shard id
// outside a-zA-Z0-9_.- become '_'), fsynced before Write returns; the
// directory is created if missing.
func FailureDir(path string) FailureDestination { return failure.NewDir(path) }

// FailureStream returns a destination putting each entry's JSON form into
// the named Kinesis stream as one record under the record's own partition
// key (the entries of a key stay in one shard, in order as far as
// PutRecords' partial failures allow: failed entries are resent alone, in
// order). An entry over Kinesis's 1 MiB per record (a payload of about
// 750 KiB) cannot be written.
func FailureStream(client FailureKinesisAPI, stream string) FailureDestination {
	return failure.NewStream(client, stream)
}

// FailureTable creates the DynamoDB table (PAY_PER_REQUEST) unless it
// exists, waits until it is ACTIVE, and returns a destination writing one
// item per entry: hash key "shard" (S), range key "position" (S: the
// sequence number zero-padded to 128 digits, '#', the sub-sequence number
// zero-padded to 20, so a shard's items sort in stream order); attributes
// "stream" (S, when known), "seq" (S), "sub" (N), "pk" (S), "arrival" (S,
// RFC 3339), "data" (B, the payload, when not empty), "error" (S),
// "attempts" (N), "failed_at" (S, RFC 3339). An entry written twice is one
// item. Use one table per stream. DynamoDB's 400 KB per item bounds the
// payload.
func FailureTable(ctx context.Context, client FailureDynamoDBAPI, table string) (FailureDestination, error) {
	t := failure.NewTable(client, table)
	if err := t.EnsureTable(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// DeadLetterRetryBase and DeadLetterRetryCap are the backoff DeadLetterTo
// retries a destination's failed writes with: 200ms doubling to 10s, with
// jitter.
const (
	DeadLetterRetryBase = 200 * time.Millisecond
	DeadLetterRetryCap  = 10 * time.Second
)

// DeadLetterTo returns a DeadLetterFunc for Config.DeadLetter (with
// FailurePolicy PolicyDeadLetter, or MaxRecordAge) that writes every record of the batch to
// d as a FailureEntry: Stream streamName, the shard, the record's fields,
// the cause's text as Error, batch.Attempt as Attempts. A failed write is
// retried with capped exponential backoff (DeadLetterRetryBase to
// DeadLetterRetryCap; each failure logged at warn on log, nil:
// slog.Default()) until the call's context ends (ProcessTimeout); it
// returns nil only once d wrote every record. The node checkpoints past
// the batch only then: a call that ends in an error is made again after
// ProcessorBackoff, for as long as it fails (the shard stalls on
// "failure-destination" meanwhile), so the batch is never skipped.
func DeadLetterTo(d FailureDestination, streamName string, log *slog.Logger) actors.DeadLetterFunc {
	if log == nil {
		log = slog.Default()
	}
	if d == nil {
		return func(context.Context, string, messages.Batch, error) error {
			return errors.New("kinactor: DeadLetterTo: no failure destination")
		}
	}
	policy := backoff.Policy{Base: DeadLetterRetryBase, Cap: DeadLetterRetryCap}
	return func(ctx context.Context, shardID string, batch messages.Batch, cause error) error {
		r := failure.Retry(d, policy, func(attempt int, err error) {
			log.Warn("failure destination write failed; retrying", "shard", shardID, "batch", batch.BatchID, "records", len(batch.Records), "attempt", attempt, "err", err)
		})
		return failure.DeadLetter(r, streamName)(ctx, shardID, batch, cause)
	}
}
