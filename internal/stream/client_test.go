package stream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
)

// fakeAPI is a hand-written API whose calls are answered by hooks and
// whose inputs are recorded.
type fakeAPI struct {
	listShards  func(*kinesis.ListShardsInput) (*kinesis.ListShardsOutput, error)
	getIterator func(*kinesis.GetShardIteratorInput) (*kinesis.GetShardIteratorOutput, error)
	getRecords  func(*kinesis.GetRecordsInput) (*kinesis.GetRecordsOutput, error)

	listIn []*kinesis.ListShardsInput
	iterIn []*kinesis.GetShardIteratorInput
	recsIn []*kinesis.GetRecordsInput
}

func (f *fakeAPI) ListShards(_ context.Context, in *kinesis.ListShardsInput, _ ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	f.listIn = append(f.listIn, in)
	return f.listShards(in)
}

func (f *fakeAPI) GetShardIterator(_ context.Context, in *kinesis.GetShardIteratorInput, _ ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	f.iterIn = append(f.iterIn, in)
	if f.getIterator == nil {
		return &kinesis.GetShardIteratorOutput{ShardIterator: aws.String("it-1")}, nil
	}
	return f.getIterator(in)
}

func (f *fakeAPI) GetRecords(_ context.Context, in *kinesis.GetRecordsInput, _ ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	f.recsIn = append(f.recsIn, in)
	if f.getRecords == nil {
		return &kinesis.GetRecordsOutput{NextShardIterator: aws.String("it-next")}, nil
	}
	return f.getRecords(in)
}

var _ API = (*kinesis.Client)(nil)

func TestClassify(t *testing.T) {
	// Errors wrapped the way the SDK returns them: an OperationError around
	// the typed (or generic) API error.
	sdk := func(err error) error {
		return &smithy.OperationError{ServiceID: "Kinesis", OperationName: "GetRecords", Err: err}
	}
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"provisioned throughput", &types.ProvisionedThroughputExceededException{Message: aws.String("slow down")}, ErrThrottled},
		{"kms throttling typed", &types.KMSThrottlingException{}, ErrThrottled},
		{"kms throttling generic", &smithy.GenericAPIError{Code: "KMSThrottlingException"}, ErrThrottled},
		{"limit exceeded", &types.LimitExceededException{}, ErrThrottled},
		{"limit exceeded generic", &smithy.GenericAPIError{Code: "LimitExceededException"}, ErrThrottled},
		{"expired iterator", &types.ExpiredIteratorException{}, ErrExpiredIterator},
		{"expired iterator generic", &smithy.GenericAPIError{Code: "ExpiredIteratorException"}, ErrExpiredIterator},
		{"resource not found", &types.ResourceNotFoundException{}, ErrShardNotFound},
		{"namespaced code", &smithy.GenericAPIError{Code: "Kinesis_20131202#ResourceNotFoundException"}, ErrShardNotFound},
		{"resource not found generic", &smithy.GenericAPIError{Code: "ResourceNotFoundException"}, ErrShardNotFound},
		{"invalid argument", &types.InvalidArgumentException{Message: aws.String("StartingSequenceNumber 1 used in GetShardIterator on shard shardId-000000000000 in stream s is invalid")}, ErrInvalidArgument},
		{"invalid argument generic", &smithy.GenericAPIError{Code: "InvalidArgumentException"}, ErrInvalidArgument},
		{"invalid argument namespaced", &smithy.GenericAPIError{Code: "Kinesis_20131202#InvalidArgumentException"}, ErrInvalidArgument},
		{"other api error", &smithy.GenericAPIError{Code: "ValidationException"}, nil},
		{"plain", errors.New("connection reset"), nil},
	}
	sentinels := []error{ErrThrottled, ErrExpiredIterator, ErrShardNotFound, ErrInvalidArgument}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			orig := sdk(tc.err)
			got := Classify(orig)
			for _, s := range sentinels {
				if errors.Is(got, s) != (s == tc.want) {
					t.Errorf("errors.Is(%v, %v) = %v", got, s, !(s == tc.want))
				}
			}
			if !errors.Is(got, orig) {
				t.Errorf("original error lost from chain: %v", got)
			}
			var ae smithy.APIError
			if _, isAPI := tc.err.(smithy.APIError); isAPI && !errors.As(got, &ae) {
				t.Errorf("errors.As(APIError) failed on %v", got)
			}
			if tc.want == nil && got != orig {
				t.Errorf("unclassified error changed: %v", got)
			}
			if again := Classify(got); again != got {
				t.Errorf("Classify not idempotent: %v", again)
			}
			if IsThrottle(orig) != (tc.want == ErrThrottled) {
				t.Errorf("IsThrottle = %v", !(tc.want == ErrThrottled))
			}
		})
	}
	if Classify(nil) != nil {
		t.Error("Classify(nil) != nil")
	}
}

func TestCallsClassifyErrors(t *testing.T) {
	ctx := context.Background()
	f := &fakeAPI{
		listShards: func(*kinesis.ListShardsInput) (*kinesis.ListShardsOutput, error) {
			return nil, &types.LimitExceededException{}
		},
		getIterator: func(*kinesis.GetShardIteratorInput) (*kinesis.GetShardIteratorOutput, error) {
			return nil, &types.ResourceNotFoundException{}
		},
		getRecords: func(*kinesis.GetRecordsInput) (*kinesis.GetRecordsOutput, error) {
			return nil, &types.ExpiredIteratorException{}
		},
	}
	c := NewClient(f, "s", "")
	if _, err := c.ListShards(ctx); !errors.Is(err, ErrThrottled) {
		t.Errorf("ListShards: %v", err)
	}
	if _, err := c.Iterator(ctx, "shardId-000000000000", Position{Type: types.ShardIteratorTypeTrimHorizon}); !errors.Is(err, ErrShardNotFound) {
		t.Errorf("Iterator: %v", err)
	}
	_, err := c.GetRecords(ctx, "it", 100)
	var eie *types.ExpiredIteratorException
	if !errors.Is(err, ErrExpiredIterator) || !errors.As(err, &eie) {
		t.Errorf("GetRecords: %v", err)
	}
	f.getRecords = func(*kinesis.GetRecordsInput) (*kinesis.GetRecordsOutput, error) {
		return nil, &smithy.GenericAPIError{Code: "KMSThrottlingException"}
	}
	if _, err := c.GetRecords(ctx, "it", 100); !errors.Is(err, ErrThrottled) {
		t.Errorf("GetRecords KMS: %v", err)
	}
	f.getIterator = func(*kinesis.GetShardIteratorInput) (*kinesis.GetShardIteratorOutput, error) {
		return nil, &types.InvalidArgumentException{Message: aws.String("sequence number out of range")}
	}
	_, err = c.Iterator(ctx, "shardId-000000000000", Position{Type: types.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: "1"})
	var iae *types.InvalidArgumentException
	if !errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrShardNotFound) || !errors.As(err, &iae) {
		t.Errorf("Iterator invalid argument: %v", err)
	}
}

func TestListShardsPagination(t *testing.T) {
	for _, arn := range []string{"", "arn:aws:kinesis:us-east-1:000000000000:stream/s"} {
		f := &fakeAPI{}
		pages := map[string]*kinesis.ListShardsOutput{
			"": {Shards: []types.Shard{
				{ShardId: aws.String("shardId-0"), HashKeyRange: &types.HashKeyRange{StartingHashKey: aws.String("0"), EndingHashKey: aws.String("9")},
					SequenceNumberRange: &types.SequenceNumberRange{StartingSequenceNumber: aws.String("100"), EndingSequenceNumber: aws.String("200")}},
			}, NextToken: aws.String("t1")},
			"t1": {Shards: []types.Shard{
				{ShardId: aws.String("shardId-1"), ParentShardId: aws.String("shardId-0"),
					SequenceNumberRange: &types.SequenceNumberRange{StartingSequenceNumber: aws.String("300")}},
			}, NextToken: aws.String("t2")},
			"t2": {Shards: []types.Shard{
				{ShardId: aws.String("shardId-2"), ParentShardId: aws.String("shardId-1"), AdjacentParentShardId: aws.String("shardId-9")},
			}},
		}
		f.listShards = func(in *kinesis.ListShardsInput) (*kinesis.ListShardsOutput, error) {
			return pages[aws.ToString(in.NextToken)], nil
		}
		c := NewClient(f, "s", arn)
		c.ListShardsMaxResults = 5000
		shards, err := c.ListShards(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(f.listIn) != 3 {
			t.Fatalf("%d calls, want 3", len(f.listIn))
		}
		for i, in := range f.listIn {
			if aws.ToInt32(in.MaxResults) != MaxListShardsResults {
				t.Errorf("call %d: MaxResults %v, want clamped to %d", i, aws.ToInt32(in.MaxResults), MaxListShardsResults)
			}
			if i == 0 {
				if in.NextToken != nil {
					t.Errorf("first call has NextToken")
				}
				if arn == "" && (aws.ToString(in.StreamName) != "s" || in.StreamARN != nil) {
					t.Errorf("first call: name %v arn %v", in.StreamName, in.StreamARN)
				}
				if arn != "" && (aws.ToString(in.StreamARN) != arn || in.StreamName != nil) {
					t.Errorf("first call: name %v arn %v", in.StreamName, in.StreamARN)
				}
				continue
			}
			if in.NextToken == nil || in.StreamName != nil || in.StreamARN != nil || in.StreamCreationTimestamp != nil {
				t.Errorf("call %d: token %v name %v arn %v", i, in.NextToken, in.StreamName, in.StreamARN)
			}
		}
		want := []Shard{
			{ID: "shardId-0", StartingHashKey: "0", EndingHashKey: "9", StartingSequenceNumber: "100", EndingSequenceNumber: "200"},
			{ID: "shardId-1", ParentShardID: "shardId-0", StartingSequenceNumber: "300"},
			{ID: "shardId-2", ParentShardID: "shardId-1", AdjacentParentShardID: "shardId-9"},
		}
		if fmt.Sprint(shards) != fmt.Sprint(want) {
			t.Errorf("shards\n got %v\nwant %v", shards, want)
		}
		if !shards[0].Closed() || shards[1].Closed() {
			t.Error("Closed() wrong")
		}
		kids := ChildrenFromList(shards, "shardId-1")
		if len(kids) != 1 || kids[0].ID != "shardId-2" {
			t.Errorf("children of 1: %v", kids)
		}
		if kids := ChildrenFromList(shards, "shardId-9"); len(kids) != 1 || kids[0].ID != "shardId-2" {
			t.Errorf("children of 9 (adjacent): %v", kids)
		}
		if kids := ChildrenFromList(shards, "shardId-2"); len(kids) != 0 {
			t.Errorf("children of 2: %v", kids)
		}
	}
}

func TestListShardsRepeatedToken(t *testing.T) {
	f := &fakeAPI{listShards: func(*kinesis.ListShardsInput) (*kinesis.ListShardsOutput, error) {
		return &kinesis.ListShardsOutput{NextToken: aws.String("same")}, nil
	}}
	if _, err := NewClient(f, "s", "").ListShards(context.Background()); err == nil {
		t.Fatal("no error for a server looping on one NextToken")
	}
}

func TestGetRecordsLimitClampAndMapping(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	f := &fakeAPI{}
	c := NewClient(f, "s", "")
	for _, tc := range []struct{ in, want int32 }{{-5, 1}, {0, 1}, {1, 1}, {500, 500}, {10000, 10000}, {10001, 10000}, {1 << 30, 10000}} {
		if _, err := c.GetRecords(context.Background(), "it", tc.in); err != nil {
			t.Fatal(err)
		}
		if got := aws.ToInt32(f.recsIn[len(f.recsIn)-1].Limit); got != tc.want {
			t.Errorf("limit %d sent as %d, want %d", tc.in, got, tc.want)
		}
	}
	if _, err := c.GetRecords(context.Background(), "", 10); err == nil {
		t.Error("empty iterator accepted")
	}

	f.getRecords = func(in *kinesis.GetRecordsInput) (*kinesis.GetRecordsOutput, error) {
		return &kinesis.GetRecordsOutput{
			Records: []types.Record{
				{SequenceNumber: aws.String("1"), PartitionKey: aws.String("pk"), Data: []byte("a"), ApproximateArrivalTimestamp: aws.Time(now)},
				{SequenceNumber: aws.String("2"), PartitionKey: aws.String("pk2"), Data: []byte("b")},
			},
			MillisBehindLatest: aws.Int64(42),
			ChildShards: []types.ChildShard{
				{ShardId: aws.String("c1"), ParentShards: []string{"p"}, HashKeyRange: &types.HashKeyRange{StartingHashKey: aws.String("0"), EndingHashKey: aws.String("5")}},
				{ShardId: aws.String("c2"), ParentShards: []string{"p", "q"}},
			},
		}, nil
	}
	b, err := c.GetRecords(context.Background(), "it", 10)
	if err != nil {
		t.Fatal(err)
	}
	if !b.ShardEnd() || b.NextIterator != "" || b.MillisBehindLatest != 42 || len(b.Records) != 2 {
		t.Fatalf("batch %+v", b)
	}
	r := b.Records[0]
	if r.SequenceNumber != "1" || r.PartitionKey != "pk" || string(r.Data) != "a" || !r.ApproximateArrivalTimestamp.Equal(now) {
		t.Errorf("record %+v", r)
	}
	want := []Shard{
		{ID: "c1", ParentShardID: "p", StartingHashKey: "0", EndingHashKey: "5"},
		{ID: "c2", ParentShardID: "p", AdjacentParentShardID: "q"},
	}
	if fmt.Sprint(b.ChildShards) != fmt.Sprint(want) {
		t.Errorf("children %v, want %v", b.ChildShards, want)
	}
}

func TestGetRecordsStreamARN(t *testing.T) {
	f := &fakeAPI{}
	if _, err := NewClient(f, "s", "arn:x").GetRecords(context.Background(), "it", 1); err != nil {
		t.Fatal(err)
	}
	if aws.ToString(f.recsIn[0].StreamARN) != "arn:x" {
		t.Errorf("StreamARN %v", f.recsIn[0].StreamARN)
	}
}

func TestIterator(t *testing.T) {
	ctx := context.Background()
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := &fakeAPI{}
	c := NewClient(f, "s", "")
	ok := []Position{
		{Type: types.ShardIteratorTypeTrimHorizon},
		{Type: types.ShardIteratorTypeLatest},
		{Type: types.ShardIteratorTypeAtTimestamp, Timestamp: ts},
		{Type: types.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: "123"},
		{Type: types.ShardIteratorTypeAtSequenceNumber, SequenceNumber: "456"},
	}
	for _, p := range ok {
		it, err := c.Iterator(ctx, "shardId-1", p)
		if err != nil || it != "it-1" {
			t.Fatalf("%v: %q %v", p, it, err)
		}
		in := f.iterIn[len(f.iterIn)-1]
		if string(in.ShardIteratorType) != string(p.Type) || aws.ToString(in.ShardId) != "shardId-1" || aws.ToString(in.StreamName) != "s" || in.StreamARN != nil {
			t.Errorf("%v: input %+v", p, in)
		}
		if aws.ToString(in.StartingSequenceNumber) != p.SequenceNumber {
			t.Errorf("%v: sequence %v", p, in.StartingSequenceNumber)
		}
		if p.Type == types.ShardIteratorTypeAtTimestamp && !aws.ToTime(in.Timestamp).Equal(ts) || p.Type != types.ShardIteratorTypeAtTimestamp && in.Timestamp != nil {
			t.Errorf("%v: timestamp %v", p, in.Timestamp)
		}
	}

	calls := len(f.iterIn)
	bad := []struct {
		pos  Position
		want string
	}{
		{Position{Type: types.ShardIteratorTypeAfterSequenceNumber}, "AFTER_SEQUENCE_NUMBER"},
		{Position{Type: types.ShardIteratorTypeAtSequenceNumber}, "AT_SEQUENCE_NUMBER"},
		{Position{Type: types.ShardIteratorTypeAtTimestamp}, "AT_TIMESTAMP"},
		{Position{Type: "AT_SOMEWHERE"}, `"AT_SOMEWHERE"`},
		{Position{}, `""`},
	}
	for _, tc := range bad {
		_, err := c.Iterator(ctx, "shardId-1", tc.pos)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one naming %s", tc.pos, err, tc.want)
		}
	}
	if _, err := c.Iterator(ctx, "", Position{Type: types.ShardIteratorTypeLatest}); err == nil {
		t.Error("empty shard id accepted")
	}
	if len(f.iterIn) != calls {
		t.Error("invalid positions reached the API")
	}

	arn := NewClient(f, "s", "arn:aws:kinesis:us-east-1:0:stream/s")
	if _, err := arn.Iterator(ctx, "shardId-1", Position{Type: types.ShardIteratorTypeLatest}); err != nil {
		t.Fatal(err)
	}
	if in := f.iterIn[len(f.iterIn)-1]; in.StreamName != nil || aws.ToString(in.StreamARN) == "" {
		t.Errorf("ARN client sent name %v arn %v", in.StreamName, in.StreamARN)
	}
}

// TestSDKDoesNotRetryThrottling checks the retry policy on a real SDK client
// against an HTTP server answering every call with one error: throttling
// is tried once, other retryable errors are retried.
func TestSDKDoesNotRetryThrottling(t *testing.T) {
	var calls atomic.Int32
	var status atomic.Int32
	var code atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(int(status.Load()))
		fmt.Fprintf(w, `{"__type":%q,"message":"injected"}`, code.Load().(string))
	}))
	defer srv.Close()

	cfg := aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("x", "y", ""),
		BaseEndpoint: aws.String(srv.URL),
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 3
				o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
			})
		},
	}
	plain := kinesis.NewFromConfig(cfg)
	wrapped := NewSDKClient(cfg)
	ctx := context.Background()
	try := func(api API, viaClient bool) (int32, error) {
		calls.Store(0)
		var err error
		if viaClient {
			_, err = NewClient(api, "s", "").GetRecords(ctx, "it", 10)
		} else {
			_, err = api.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String("it")})
		}
		return calls.Load(), err
	}

	status.Store(400)
	code.Store("ProvisionedThroughputExceededException")
	if n, err := try(plain, false); n != 3 || err == nil {
		t.Errorf("bare SDK client: %d attempts (%v); the test assumes the SDK retries throttling", n, err)
	}
	if n, err := try(wrapped, false); n != 1 || !IsThrottle(err) {
		t.Errorf("NewSDKClient: %d attempts on throttling, want 1 (%v)", n, err)
	}
	if n, err := try(plain, true); n != 1 || !errors.Is(err, ErrThrottled) {
		t.Errorf("Client over a bare SDK client: %d attempts on throttling, want 1 (%v)", n, err)
	}
	if n, err := try(wrapped, true); n != 1 || !errors.Is(err, ErrThrottled) {
		t.Errorf("Client over NewSDKClient: %d attempts on throttling, want 1 (%v)", n, err)
	}
	code.Store("LimitExceededException")
	if n, err := try(wrapped, true); n != 1 || !errors.Is(err, ErrThrottled) {
		t.Errorf("LimitExceeded: %d attempts, want 1 (%v)", n, err)
	}

	status.Store(500)
	code.Store("InternalFailure")
	if n, err := try(wrapped, true); n != 3 || err == nil {
		t.Errorf("500: %d attempts, want 3 (%v)", n, err)
	}
	// Caller-chosen max attempts are kept.
	custom := NewSDKClient(cfg, func(o *kinesis.Options) { o.RetryMaxAttempts = 2 })
	if n, err := try(custom, true); n != 2 || err == nil {
		t.Errorf("RetryMaxAttempts 2: %d attempts (%v)", n, err)
	}
}
