package lease

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kinactor/kinactor/internal/backoff"
)

// tableAPI scripts DescribeTable (one answer per call, the last repeating)
// and counts CreateTable calls.
type tableAPI struct {
	*fakeAPI
	describes []func() (*dynamodb.DescribeTableOutput, error)
	created   int
}

func (f *tableAPI) CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error) {
	f.record("create-table", optFns)
	f.created++
	return &dynamodb.CreateTableOutput{}, nil
}

func (f *tableAPI) DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	f.record("describe", optFns)
	return next(f.fakeAPI, &f.describes)()
}

func notFound() (*dynamodb.DescribeTableOutput, error) { return nil, errNoTable }

func table(status types.TableStatus, key string) func() (*dynamodb.DescribeTableOutput, error) {
	return func() (*dynamodb.DescribeTableOutput, error) {
		return &dynamodb.DescribeTableOutput{Table: &types.TableDescription{
			TableStatus: status,
			KeySchema:   []types.KeySchemaElement{{AttributeName: aws.String(key), KeyType: types.KeyTypeHash}},
		}}, nil
	}
}

func TestEnsureTable(t *testing.T) {
	ctx := context.Background()
	policy := WithRetryPolicy(backoff.Policy{Base: time.Millisecond, Cap: 2 * time.Millisecond}, DefaultMaxAttempts)

	// Missing: created; the describes right after may still miss it, then
	// it is CREATING, then ACTIVE. Every call has the SDK's retries off;
	// a throttled describe is retried by the store.
	f := &tableAPI{fakeAPI: &fakeAPI{}, describes: []func() (*dynamodb.DescribeTableOutput, error){
		notFound, notFound, func() (*dynamodb.DescribeTableOutput, error) { return nil, errThroughput },
		table(types.TableStatusCreating, AttrLeaseKey), table(types.TableStatusActive, AttrLeaseKey),
	}}
	if err := NewDynamoStore(f, "t", policy).EnsureTable(ctx); err != nil {
		t.Fatalf("missing table: %v", err)
	}
	if f.created != 1 || f.count("describe") != 5 {
		t.Fatalf("created %d, %d describes; want 1, 5", f.created, f.count("describe"))
	}
	for i, m := range f.sdkMax {
		if m != 1 {
			t.Fatalf("call %d with RetryMaxAttempts %d, want 1 (the store's retries)", i, m)
		}
	}

	// ACTIVE already: one describe.
	f = &tableAPI{fakeAPI: &fakeAPI{}, describes: []func() (*dynamodb.DescribeTableOutput, error){table(types.TableStatusActive, AttrLeaseKey)}}
	if err := NewDynamoStore(f, "t", policy).EnsureTable(ctx); err != nil || f.created != 0 || f.count("describe") != 1 {
		t.Fatalf("active table: %v, created %d, %d describes", err, f.created, f.count("describe"))
	}

	// Another key: an error at once, whether it is found at first or
	// while it is being created.
	for _, ds := range [][]func() (*dynamodb.DescribeTableOutput, error){
		{table(types.TableStatusCreating, "ShardID")},
		{table(types.TableStatusCreating, AttrLeaseKey), table(types.TableStatusCreating, "ShardID")},
	} {
		f = &tableAPI{fakeAPI: &fakeAPI{}, describes: ds}
		err := NewDynamoStore(f, "t", policy).EnsureTable(ctx)
		if err == nil || !strings.Contains(err.Error(), `not the single hash key "leaseKey"`) || f.count("describe") != len(ds) {
			t.Fatalf("other key: %v after %d describes", err, f.count("describe"))
		}
	}

	// Never ACTIVE: the table wait timeout ends it.
	f = &tableAPI{fakeAPI: &fakeAPI{}, describes: []func() (*dynamodb.DescribeTableOutput, error){table(types.TableStatusCreating, AttrLeaseKey)}}
	began := time.Now()
	err := NewDynamoStore(f, "t", policy, WithTableWaitTimeout(400*time.Millisecond)).EnsureTable(ctx)
	if err == nil || !strings.Contains(err.Error(), "lease: table t not ACTIVE") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %v", err)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("timeout took %s", d)
	}
}
