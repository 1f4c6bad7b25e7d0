package awswait

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/stream"
)

// fakeStream answers DescribeStream with the statuses in order ("" for
// ResourceNotFound, "!" for another error), the last one for ever.
type fakeStream struct {
	statuses  []string
	describes int
	created   []int32
	createErr error
}

func (f *fakeStream) DescribeStream(_ context.Context, in *kinesis.DescribeStreamInput, _ ...func(*kinesis.Options)) (*kinesis.DescribeStreamOutput, error) {
	s := f.statuses[min(f.describes, len(f.statuses)-1)]
	f.describes++
	switch s {
	case "":
		return nil, &ktypes.ResourceNotFoundException{Message: aws.String("not found")}
	case "!":
		return nil, errors.New("access denied")
	}
	return &kinesis.DescribeStreamOutput{StreamDescription: &ktypes.StreamDescription{
		StreamName: in.StreamName, StreamStatus: ktypes.StreamStatus(s), StreamARN: aws.String("arn:" + aws.ToString(in.StreamName)),
	}}, nil
}

func (f *fakeStream) CreateStream(_ context.Context, in *kinesis.CreateStreamInput, _ ...func(*kinesis.Options)) (*kinesis.CreateStreamOutput, error) {
	f.created = append(f.created, aws.ToInt32(in.ShardCount))
	return &kinesis.CreateStreamOutput{}, f.createErr
}

func TestStream(t *testing.T) {
	ctx := context.Background()
	f := &fakeStream{statuses: []string{"", "CREATING", "UPDATING", "ACTIVE"}}
	arn, err := Stream(ctx, f, "s", 10*time.Second)
	if err != nil || arn != "arn:s" || f.describes != 4 {
		t.Fatalf("Stream = %q, %v after %d describes", arn, err, f.describes)
	}
	f = &fakeStream{statuses: []string{"CREATING", "!"}}
	if _, err := Stream(ctx, f, "s", 10*time.Second); err == nil || !strings.Contains(err.Error(), "access denied") || f.describes != 2 {
		t.Fatalf("another error: %v after %d describes", err, f.describes)
	}
	f = &fakeStream{statuses: []string{"CREATING"}}
	if _, err := Stream(ctx, f, "s", 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "not ACTIVE within 200ms") {
		t.Fatalf("timeout: %v", err)
	}
}

func TestEnsureStream(t *testing.T) {
	ctx := context.Background()
	// Missing: created, then waited for.
	f := &fakeStream{statuses: []string{"", "CREATING", "ACTIVE"}}
	if _, err := EnsureStream(ctx, f, "s", 3, 10*time.Second); err != nil || len(f.created) != 1 || f.created[0] != 3 {
		t.Fatalf("missing: %v, created %v", err, f.created)
	}
	// Created meanwhile by someone else: fine.
	f = &fakeStream{statuses: []string{"", "ACTIVE"}, createErr: &ktypes.ResourceInUseException{Message: aws.String("in use")}}
	if _, err := EnsureStream(ctx, f, "s", 3, 10*time.Second); err != nil {
		t.Fatalf("in use: %v", err)
	}
	// Existing: used as it is.
	f = &fakeStream{statuses: []string{"UPDATING", "ACTIVE"}}
	if _, err := EnsureStream(ctx, f, "s", 3, 10*time.Second); err != nil || len(f.created) != 0 {
		t.Fatalf("existing: %v, created %v", err, f.created)
	}
	// Other errors end it.
	f = &fakeStream{statuses: []string{"!"}}
	if _, err := EnsureStream(ctx, f, "s", 3, 10*time.Second); err == nil || len(f.created) != 0 {
		t.Fatalf("describe error: %v, created %v", err, f.created)
	}
	f = &fakeStream{statuses: []string{""}, createErr: errors.New("limit exceeded")}
	if _, err := EnsureStream(ctx, f, "s", 3, 10*time.Second); err == nil || !strings.Contains(err.Error(), "creating stream s: limit exceeded") {
		t.Fatalf("create error: %v", err)
	}
}

type fakeTable struct {
	statuses  []string // "" for ResourceNotFound
	describes int
}

func (f *fakeTable) DescribeTable(_ context.Context, in *dynamodb.DescribeTableInput, _ ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	s := f.statuses[min(f.describes, len(f.statuses)-1)]
	f.describes++
	if s == "" {
		return nil, &dtypes.ResourceNotFoundException{Message: aws.String("not found")}
	}
	return &dynamodb.DescribeTableOutput{Table: &dtypes.TableDescription{TableName: in.TableName, TableStatus: dtypes.TableStatus(s)}}, nil
}

func TestTable(t *testing.T) {
	f := &fakeTable{statuses: []string{"", "CREATING", "ACTIVE"}}
	if err := Table(context.Background(), f, "t", 10*time.Second); err != nil || f.describes != 3 {
		t.Fatalf("Table: %v after %d describes", err, f.describes)
	}
	f = &fakeTable{statuses: []string{"CREATING"}}
	if err := Table(context.Background(), f, "t", 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "table t not ACTIVE") {
		t.Fatalf("timeout: %v", err)
	}
}

// lister lists shards: n shards from the nth listing on, 1 before.
type lister struct{ calls, from, n int }

func (l *lister) ListShards(context.Context) ([]stream.Shard, error) {
	l.calls++
	k := 1
	if l.calls >= l.from {
		k = l.n
	}
	return make([]stream.Shard, k), nil
}

func TestShards(t *testing.T) {
	ctx := context.Background()
	// Right after a split: ACTIVE with the old shard, then UPDATING, then
	// ACTIVE with three.
	f := &fakeStream{statuses: []string{"ACTIVE", "UPDATING", "ACTIVE"}}
	l := &lister{from: 2, n: 3}
	shards, err := Shards(ctx, f, l, "s", 10*time.Second, func(s []stream.Shard) bool { return len(s) > 1 })
	if err != nil || len(shards) != 3 || l.calls != 2 {
		t.Fatalf("Shards = %d shards, %v after %d listings", len(shards), err, l.calls)
	}
	l = &lister{from: 1 << 30}
	if _, err := Shards(ctx, f, l, "s", 300*time.Millisecond, func(s []stream.Shard) bool { return len(s) > 1 }); err == nil || !strings.Contains(err.Error(), "not listed within 300ms") {
		t.Fatalf("timeout: %v", err)
	}
}
