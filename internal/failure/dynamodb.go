package failure

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kinactor/kinactor/internal/awswait"
	"github.com/kinactor/kinactor/internal/backoff"
)

// The attributes of a Table item. The key is (AttrShard, AttrPosition).
const (
	AttrShard        = "shard"     // S, hash key: the shard id
	AttrPosition     = "position"  // S, range key: Position(seq, sub)
	AttrStream       = "stream"    // S, absent when unknown
	AttrSeq          = "seq"       // S
	AttrSub          = "sub"       // N
	AttrPartitionKey = "pk"        // S
	AttrArrival      = "arrival"   // S, RFC 3339 with nanoseconds
	AttrData         = "data"      // B, absent when empty
	AttrError        = "error"     // S
	AttrAttempts     = "attempts"  // N
	AttrFailedAt     = "failed_at" // S, RFC 3339 with nanoseconds
)

// TableAPI is the part of *dynamodb.Client a Table uses.
type TableAPI interface {
	dynamodb.DescribeTableAPIClient
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	BatchWriteItem(ctx context.Context, in *dynamodb.BatchWriteItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error)
}

// TableWaitTimeout bounds EnsureTable.
const TableWaitTimeout = 5 * time.Minute

// Table is a Destination writing one item per Entry to a DynamoDB table:
// hash key "shard" (S), range key "position" (S, Position: the sequence
// number zero-padded to 128 digits, '#', the sub-sequence number
// zero-padded to 20, so that a shard's items sort in stream order), and
// the other fields as the attributes Attr* name (the payload as B). An
// entry written twice is one item (a plain put of the same key). One table
// serves one stream: entries of two streams with the same shard id and
// position would overwrite each other. DynamoDB's 400 KB per item bounds
// the payload: a larger entry fails every time (use a dir or kinesis
// destination for large records).
type Table struct {
	api   TableAPI
	table string
}

// NewTable returns the Table destination of the named table. Call
// EnsureTable before the first Write.
func NewTable(api TableAPI, table string) *Table { return &Table{api: api, table: table} }

// EnsureTable creates the table (PAY_PER_REQUEST) unless it exists, and
// waits until it is ACTIVE (awswait.Table), within TableWaitTimeout.
func (t *Table) EnsureTable(ctx context.Context) error {
	_, err := t.api.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(t.table)})
	var nf *types.ResourceNotFoundException
	if errors.As(err, &nf) {
		_, err = t.api.CreateTable(ctx, &dynamodb.CreateTableInput{
			TableName: aws.String(t.table),
			AttributeDefinitions: []types.AttributeDefinition{
				{AttributeName: aws.String(AttrShard), AttributeType: types.ScalarAttributeTypeS},
				{AttributeName: aws.String(AttrPosition), AttributeType: types.ScalarAttributeTypeS},
			},
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String(AttrShard), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String(AttrPosition), KeyType: types.KeyTypeRange},
			},
			BillingMode: types.BillingModePayPerRequest,
		})
		var inUse *types.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) {
			return fmt.Errorf("failure destination dynamodb:%s: creating the table: %w", t.table, err)
		}
	} else if err != nil {
		return fmt.Errorf("failure destination dynamodb:%s: %w", t.table, err)
	}
	if err := awswait.Table(ctx, t.api, t.table, TableWaitTimeout); err != nil {
		return fmt.Errorf("failure destination dynamodb:%s: %w", t.table, err)
	}
	return nil
}

// Position is the range key of an entry: seq zero-padded to 128 digits,
// '#', sub zero-padded to 20 digits.
func Position(seq string, sub int64) string {
	return strings.Repeat("0", max(128-len(seq), 0)) + seq + "#" + fmt.Sprintf("%020d", sub)
}

// Item is the item of an entry.
func Item(e Entry) map[string]types.AttributeValue {
	s := func(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
	n := func(v int64) types.AttributeValue {
		return &types.AttributeValueMemberN{Value: strconv.FormatInt(v, 10)}
	}
	item := map[string]types.AttributeValue{
		AttrShard:        s(e.Shard),
		AttrPosition:     s(Position(e.SequenceNumber, e.SubSequenceNumber)),
		AttrSeq:          s(e.SequenceNumber),
		AttrSub:          n(e.SubSequenceNumber),
		AttrPartitionKey: s(e.PartitionKey),
		AttrArrival:      s(e.ArrivalTime.UTC().Format(time.RFC3339Nano)),
		AttrError:        s(e.Error),
		AttrAttempts:     n(int64(e.Attempts)),
		AttrFailedAt:     s(e.FailedAt.UTC().Format(time.RFC3339Nano)),
	}
	if e.Stream != "" {
		item[AttrStream] = s(e.Stream)
	}
	if len(e.Data) > 0 {
		item[AttrData] = &types.AttributeValueMemberB{Value: e.Data}
	}
	return item
}

// maxBatchWrite is BatchWriteItem's limit of items per call;
// maxUnprocessed bounds the calls for one chunk's unprocessed items.
const (
	maxBatchWrite  = 25
	maxUnprocessed = 20
)

var unprocessedBackoff = backoff.Policy{Base: 50 * time.Millisecond, Cap: 2 * time.Second}

// Write puts one item per entry, with BatchWriteItem in chunks of 25; the
// items a call leaves unprocessed are sent again (after a backoff), and
// Write returns nil only once every item is written.
func (t *Table) Write(ctx context.Context, entries []Entry) error {
	for start := 0; start < len(entries); start += maxBatchWrite {
		chunk := entries[start:min(start+maxBatchWrite, len(entries))]
		// BatchWriteItem refuses two requests with one key: the last wins.
		seen := map[string]int{}
		var reqs []types.WriteRequest
		for _, e := range chunk {
			k := e.Shard + "\x00" + Position(e.SequenceNumber, e.SubSequenceNumber)
			r := types.WriteRequest{PutRequest: &types.PutRequest{Item: Item(e)}}
			if i, ok := seen[k]; ok {
				reqs[i] = r
				continue
			}
			seen[k] = len(reqs)
			reqs = append(reqs, r)
		}
		if err := t.batch(ctx, reqs); err != nil {
			return fmt.Errorf("failure destination dynamodb:%s: %w", t.table, err)
		}
	}
	return nil
}

func (t *Table) batch(ctx context.Context, reqs []types.WriteRequest) error {
	for attempt := 1; ; attempt++ {
		out, err := t.api.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{t.table: reqs}})
		if err != nil {
			return err
		}
		reqs = out.UnprocessedItems[t.table]
		if len(reqs) == 0 {
			return nil
		}
		if attempt >= maxUnprocessed {
			return fmt.Errorf("BatchWriteItem: %d items unprocessed after %d calls", len(reqs), attempt)
		}
		if err := backoff.Sleep(ctx, unprocessedBackoff.Delay(attempt, nil)); err != nil {
			return fmt.Errorf("BatchWriteItem: %d items unprocessed: %w", len(reqs), err)
		}
	}
}
