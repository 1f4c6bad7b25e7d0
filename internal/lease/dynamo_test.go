package lease

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/kinactor/kinactor/internal/backoff"
)

// fakeAPI scripts the answers of UpdateItem, PutItem, DeleteItem and GetItem,
// one function per call, for fault injection. It does not evaluate
// expressions: the real semantics are tested against real servers in
// dynamo_integration_test.go.
type fakeAPI struct {
	mu      sync.Mutex
	updates []func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error)
	puts    []func(*dynamodb.PutItemInput) (*dynamodb.PutItemOutput, error)
	deletes []func(*dynamodb.DeleteItemInput) (*dynamodb.DeleteItemOutput, error)
	gets    []func(*dynamodb.GetItemInput) (*dynamodb.GetItemOutput, error)
	calls   map[string]int
	sdkMax  []int // RetryMaxAttempts after applying each call's option functions
}

func (f *fakeAPI) record(op string, optFns []func(*dynamodb.Options)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[op]++
	var o dynamodb.Options
	for _, fn := range optFns {
		fn(&o)
	}
	f.sdkMax = append(f.sdkMax, o.RetryMaxAttempts)
}

func (f *fakeAPI) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// next pops the next scripted answer; the last one repeats.
func next[F any](f *fakeAPI, q *[]F) F {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(*q) == 0 {
		panic("fakeAPI: unexpected call")
	}
	fn := (*q)[0]
	if len(*q) > 1 {
		*q = (*q)[1:]
	}
	return fn
}

func (f *fakeAPI) CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error) {
	panic("not scripted")
}

func (f *fakeAPI) DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	panic("not scripted")
}

func (f *fakeAPI) Scan(ctx context.Context, in *dynamodb.ScanInput, optFns ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	panic("not scripted")
}

func (f *fakeAPI) GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	f.record("get", optFns)
	if !aws.ToBool(in.ConsistentRead) {
		return nil, errors.New("fake: GetItem must be consistent")
	}
	return next(f, &f.gets)(in)
}

func (f *fakeAPI) PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	f.record("put", optFns)
	return next(f, &f.puts)(in)
}

func (f *fakeAPI) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	f.record("update", optFns)
	return next(f, &f.updates)(in)
}

func (f *fakeAPI) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	f.record("delete", optFns)
	return next(f, &f.deletes)(in)
}

// Errors as the SDK returns them.

func opErr(op string, err error) error {
	return &smithy.OperationError{ServiceID: "DynamoDB", OperationName: op, Err: err}
}

func httpErr(status int, err error) error {
	return opErr("UpdateItem", &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err:      err,
		},
		RequestID: "test",
	})
}

var (
	errThroughput = httpErr(400, &types.ProvisionedThroughputExceededException{Message: aws.String("slow down")})
	errThrottling = httpErr(400, &smithy.GenericAPIError{Code: "ThrottlingException", Message: "rate exceeded"})
	errLimit      = httpErr(400, &types.RequestLimitExceeded{Message: aws.String("account limit")})
	errInternal   = httpErr(500, &types.InternalServerError{Message: aws.String("internal")})
	err503        = httpErr(503, &smithy.GenericAPIError{Code: "ServiceUnavailable"})
	err502Plain   = httpErr(502, errors.New("bad gateway"))
	errReset      = opErr("UpdateItem", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET})
	errValidation = httpErr(400, &smithy.GenericAPIError{Code: "ValidationException", Message: "bad expression"})
	errNoTable    = httpErr(400, &types.ResourceNotFoundException{Message: aws.String("no table")})
)

func ccf(item map[string]types.AttributeValue) error {
	return httpErr(400, &types.ConditionalCheckFailedException{Message: aws.String("The conditional request failed"), Item: item})
}

func row(l Lease) map[string]types.AttributeValue {
	item := map[string]types.AttributeValue{
		AttrLeaseKey:                     str(l.Key),
		AttrLeaseCounter:                 num(l.Counter),
		AttrCheckpoint:                   str(l.Checkpoint.SequenceNumber),
		AttrCheckpointSubSequenceNumber:  num(l.Checkpoint.SubSequenceNumber),
		AttrOwnerSwitchesSinceCheckpoint: num(l.OwnerSwitchesSinceCheckpoint),
	}
	if l.Owner != "" {
		item[AttrLeaseOwner] = str(l.Owner)
	}
	if ss := stringSet(l.ChildShardIDs); ss != nil {
		item[AttrChildShardIDs] = ss
	}
	return item
}

func updOK(l Lease) func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error) {
	return func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error) {
		return &dynamodb.UpdateItemOutput{Attributes: row(l)}, nil
	}
}

func updErr(err error) func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error) {
	return func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error) { return nil, err }
}

type writeLog struct {
	mu  sync.Mutex
	ops []string
}

func (w *writeLog) hook(op string, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := op + ":fail"
	if ok {
		s = op + ":ok"
	}
	w.ops = append(w.ops, s)
}

func (w *writeLog) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.ops...)
}

func fastStore(f *fakeAPI, attempts int, opts ...Option) *DynamoStore {
	opts = append([]Option{WithRetryPolicy(backoff.Policy{Base: time.Millisecond, Cap: 2 * time.Millisecond}, attempts)}, opts...)
	return NewDynamoStore(f, "leases", opts...)
}

var (
	heldA = Lease{Key: "shardId-000000000001", Owner: "A", Counter: 7, Checkpoint: Checkpoint{SequenceNumber: "100"}}
)

func TestDynamoThrottlingIsRetried(t *testing.T) {
	renewed := heldA
	renewed.Counter++
	f := &fakeAPI{updates: []func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error){
		updErr(errThroughput), updErr(errThrottling), updErr(errLimit), updErr(errReset), updOK(renewed),
	}}
	var w writeLog
	s := fastStore(f, 8, WithOnWrite(w.hook))
	got, err := s.Renew(context.Background(), heldA)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if got.Counter != heldA.Counter+1 || got.Owner != "A" {
		t.Fatalf("Renew returned %+v", got)
	}
	if n := f.count("update"); n != 5 {
		t.Fatalf("UpdateItem called %d times, want 5", n)
	}
	if ops := w.get(); len(ops) != 1 || ops[0] != "renew:ok" {
		t.Fatalf("OnWrite saw %v, want [renew:ok]", ops)
	}
	for i, m := range f.sdkMax {
		if m != 1 {
			t.Fatalf("call %d: SDK RetryMaxAttempts = %d, want 1 (SDK retries off)", i, m)
		}
	}
}

func TestDynamoServerErrorsExhausted(t *testing.T) {
	for name, e := range map[string]error{"500": errInternal, "503": err503, "502 unmodeled": err502Plain, "reset": errReset} {
		t.Run(name, func(t *testing.T) {
			f := &fakeAPI{updates: []func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error){updErr(e)}}
			var w writeLog
			s := fastStore(f, 4, WithOnWrite(w.hook))
			_, err := s.Take(context.Background(), heldA, "B", TakeOptions{})
			if err == nil {
				t.Fatal("Take succeeded")
			}
			if errors.Is(err, ErrLeaseLost) {
				t.Fatalf("server errors reported as lease lost: %v", err)
			}
			if !errors.Is(err, e) {
				t.Fatalf("error %v does not wrap the last server error", err)
			}
			if n := f.count("update"); n != 4 {
				t.Fatalf("UpdateItem called %d times, want 4", n)
			}
			if n := f.count("get"); n != 0 {
				t.Fatalf("GetItem called %d times, want 0", n)
			}
			if ops := w.get(); len(ops) != 1 || ops[0] != "take:fail" {
				t.Fatalf("OnWrite saw %v", ops)
			}
		})
	}
}

func TestDynamoNonRetryableReturnsAtOnce(t *testing.T) {
	for name, e := range map[string]error{"validation": errValidation, "no table": errNoTable} {
		t.Run(name, func(t *testing.T) {
			f := &fakeAPI{updates: []func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error){updErr(e)}}
			s := fastStore(f, 8)
			_, err := s.Checkpoint(context.Background(), heldA, Checkpoint{SequenceNumber: "200"}, nil)
			if err == nil || errors.Is(err, ErrLeaseLost) || !errors.Is(err, e) {
				t.Fatalf("Checkpoint error = %v", err)
			}
			if n := f.count("update"); n != 1 {
				t.Fatalf("UpdateItem called %d times, want 1", n)
			}
		})
	}
}

func TestDynamoConditionFailedIsLeaseLost(t *testing.T) {
	other := heldA
	other.Owner, other.Counter = "B", heldA.Counter+1
	f := &fakeAPI{updates: []func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error){updErr(ccf(row(other)))}}
	var w writeLog
	s := fastStore(f, 8, WithOnWrite(w.hook))
	_, err := s.Renew(context.Background(), heldA)
	if !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Renew error = %v, want ErrLeaseLost", err)
	}
	if want := "renew " + heldA.Key + ": "; len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
		t.Fatalf("error %q does not name op and shard", err)
	}
	if f.count("update") != 1 || f.count("get") != 0 {
		t.Fatalf("calls = %v", f.calls)
	}
	if ops := w.get(); len(ops) != 1 || ops[0] != "renew:fail" {
		t.Fatalf("OnWrite saw %v", ops)
	}
}

// The first attempt is applied server-side but its answer is lost (500 or a
// reset connection); the retry fails its condition because the counter moved
// — moved by this very write. That is a success, not a lost lease.
func TestDynamoRetryAfterAppliedWriteIsSuccess(t *testing.T) {
	taken := heldA
	taken.Owner, taken.Counter, taken.OwnerSwitchesSinceCheckpoint = "B", heldA.Counter+1, 1

	t.Run("ALL_OLD on condition failure", func(t *testing.T) {
		f := &fakeAPI{updates: []func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error){
			updErr(errInternal), updErr(ccf(row(taken))),
		}}
		s := fastStore(f, 8)
		got, err := s.Take(context.Background(), heldA, "B", TakeOptions{})
		if err != nil {
			t.Fatalf("Take: %v", err)
		}
		if got.Owner != "B" || got.Counter != heldA.Counter+1 {
			t.Fatalf("Take returned %+v", got)
		}
		if f.count("get") != 0 {
			t.Fatal("read the row although ALL_OLD had it")
		}
	})

	t.Run("server without ReturnValuesOnConditionCheckFailure", func(t *testing.T) {
		f := &fakeAPI{
			updates: []func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error){updErr(errReset), updErr(ccf(nil))},
			gets: []func(*dynamodb.GetItemInput) (*dynamodb.GetItemOutput, error){
				func(*dynamodb.GetItemInput) (*dynamodb.GetItemOutput, error) {
					return &dynamodb.GetItemOutput{Item: row(taken)}, nil
				},
			},
		}
		var w writeLog
		s := fastStore(f, 8, WithOnWrite(w.hook))
		got, err := s.Take(context.Background(), heldA, "B", TakeOptions{})
		if err != nil {
			t.Fatalf("Take: %v", err)
		}
		if got.Owner != "B" || got.Counter != heldA.Counter+1 {
			t.Fatalf("Take returned %+v", got)
		}
		if f.count("get") != 1 {
			t.Fatalf("GetItem called %d times, want 1", f.count("get"))
		}
		if ops := w.get(); len(ops) != 1 || ops[0] != "take:ok" {
			t.Fatalf("OnWrite saw %v", ops)
		}
	})

	t.Run("checkpoint", func(t *testing.T) {
		cp := Checkpoint{SequenceNumber: "200", SubSequenceNumber: 3}
		done := heldA
		done.Counter, done.Checkpoint = heldA.Counter+1, cp
		f := &fakeAPI{updates: []func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error){
			updErr(err503), updErr(ccf(row(done))),
		}}
		got, err := fastStore(f, 8).Checkpoint(context.Background(), heldA, cp, nil)
		if err != nil || got.Checkpoint != cp {
			t.Fatalf("Checkpoint = %+v, %v", got, err)
		}
	})

	t.Run("release", func(t *testing.T) {
		free := heldA
		free.Owner, free.Counter = "", heldA.Counter+1
		f := &fakeAPI{updates: []func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error){
			updErr(errInternal), updErr(ccf(row(free))),
		}}
		if err := fastStore(f, 8).Release(context.Background(), heldA); err != nil {
			t.Fatalf("Release: %v", err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		f := &fakeAPI{
			deletes: []func(*dynamodb.DeleteItemInput) (*dynamodb.DeleteItemOutput, error){
				func(*dynamodb.DeleteItemInput) (*dynamodb.DeleteItemOutput, error) { return nil, errInternal },
				func(*dynamodb.DeleteItemInput) (*dynamodb.DeleteItemOutput, error) { return nil, ccf(nil) },
			},
			gets: []func(*dynamodb.GetItemInput) (*dynamodb.GetItemOutput, error){
				func(*dynamodb.GetItemInput) (*dynamodb.GetItemOutput, error) { return &dynamodb.GetItemOutput{}, nil },
			},
		}
		if err := fastStore(f, 8).Delete(context.Background(), heldA); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	})

	t.Run("create", func(t *testing.T) {
		l := Lease{Key: "shardId-000000000009", Checkpoint: Checkpoint{SequenceNumber: CheckpointLatest}}
		f := &fakeAPI{puts: []func(*dynamodb.PutItemInput) (*dynamodb.PutItemOutput, error){
			func(*dynamodb.PutItemInput) (*dynamodb.PutItemOutput, error) { return nil, errReset },
			func(in *dynamodb.PutItemInput) (*dynamodb.PutItemOutput, error) { return nil, ccf(in.Item) },
		}}
		if err := fastStore(f, 8).Create(context.Background(), l); err != nil {
			t.Fatalf("Create: %v", err)
		}
	})

	// But if the row shows that someone else moved it, the lease is lost.
	t.Run("someone else won", func(t *testing.T) {
		stolen := heldA
		stolen.Owner, stolen.Counter = "C", heldA.Counter+1
		f := &fakeAPI{updates: []func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error){
			updErr(errInternal), updErr(ccf(row(stolen))),
		}}
		_, err := fastStore(f, 8).Take(context.Background(), heldA, "B", TakeOptions{})
		if !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Take error = %v, want ErrLeaseLost", err)
		}
	})

	t.Run("our write then another", func(t *testing.T) {
		later := taken
		later.Owner, later.Counter = "C", taken.Counter+1
		f := &fakeAPI{updates: []func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error){
			updErr(errInternal), updErr(ccf(row(later))),
		}}
		_, err := fastStore(f, 8).Take(context.Background(), heldA, "B", TakeOptions{})
		if !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Take error = %v, want ErrLeaseLost", err)
		}
	})

	t.Run("create by someone else", func(t *testing.T) {
		l := Lease{Key: "shardId-000000000009", Checkpoint: Checkpoint{SequenceNumber: CheckpointLatest}}
		theirs := row(Lease{Key: l.Key, Owner: "Z", Counter: 4, Checkpoint: Checkpoint{SequenceNumber: "55"}})
		f := &fakeAPI{puts: []func(*dynamodb.PutItemInput) (*dynamodb.PutItemOutput, error){
			func(*dynamodb.PutItemInput) (*dynamodb.PutItemOutput, error) { return nil, errReset },
			func(in *dynamodb.PutItemInput) (*dynamodb.PutItemOutput, error) { return nil, ccf(theirs) },
		}}
		if err := fastStore(f, 8).Create(context.Background(), l); !errors.Is(err, ErrExists) {
			t.Fatalf("Create error = %v, want ErrExists", err)
		}
	})
}

func TestDynamoContextCancelStopsRetrying(t *testing.T) {
	called := make(chan struct{}, 16)
	f := &fakeAPI{updates: []func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error){
		func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error) {
			called <- struct{}{}
			return nil, errThroughput
		},
	}}
	// A long backoff: without cancellation the call would wait an hour.
	s := NewDynamoStore(f, "leases", WithRetryPolicy(backoff.Policy{Base: time.Hour, Cap: time.Hour}, 8))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s.Renew(ctx, heldA)
		done <- err
	}()
	<-called
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Renew error = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Renew kept retrying after ctx was cancelled")
	}
	if n := f.count("update"); n != 1 {
		t.Fatalf("UpdateItem called %d times after cancel, want 1", n)
	}
}

func TestIsRetryable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"throughput", errThroughput, true},
		{"throttling", errThrottling, true},
		{"request limit", errLimit, true},
		{"internal", errInternal, true},
		{"503", err503, true},
		{"502 unmodeled", err502Plain, true},
		{"connection reset", errReset, true},
		{"connection refused", opErr("GetItem", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), true},
		{"condition failed", ccf(nil), false},
		{"validation", errValidation, false},
		{"resource not found", errNoTable, false},
		{"canceled", opErr("GetItem", context.Canceled), false},
		{"deadline", opErr("GetItem", context.DeadlineExceeded), false},
		{"nil", nil, false},
	} {
		if got := IsRetryable(tc.err); got != tc.want {
			t.Errorf("%s: IsRetryable = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLeaseFromItemTolerant(t *testing.T) {
	// A Java KCL row: no owner, counter as N, parents as SS, extra attributes.
	l, err := leaseFromItem(map[string]types.AttributeValue{
		AttrLeaseKey:      str("shardId-000000000003"),
		AttrLeaseCounter:  &types.AttributeValueMemberN{Value: "42"},
		AttrCheckpoint:    str("49590338271490256608559692538361571095921575989136588898"),
		AttrParentShardID: &types.AttributeValueMemberSS{Value: []string{"shardId-000000000001", "shardId-000000000000"}},
		"throughputKBps":  &types.AttributeValueMemberN{Value: "1.5"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if l.Owner != "" || l.Counter != 42 || l.Checkpoint.SubSequenceNumber != 0 || l.OwnerSwitchesSinceCheckpoint != 0 {
		t.Fatalf("parsed %+v", l)
	}
	if len(l.ParentShardIDs) != 2 || l.ParentShardIDs[0] != "shardId-000000000000" {
		t.Fatalf("parents %v", l.ParentShardIDs)
	}
	if _, err := leaseFromItem(map[string]types.AttributeValue{AttrLeaseKey: str("x"), AttrLeaseCounter: str("nope")}); err == nil {
		t.Fatal("accepted a non-numeric counter")
	}
	if _, err := leaseFromItem(map[string]types.AttributeValue{AttrLeaseCounter: num(1)}); err == nil {
		t.Fatal("accepted a row without leaseKey")
	}
}

func TestStringSetOmitsEmpty(t *testing.T) {
	if stringSet(nil) != nil || stringSet([]string{""}) != nil {
		t.Fatal("empty set not omitted")
	}
	ss := stringSet([]string{"a", "b", "a", ""}).(*types.AttributeValueMemberSS)
	if len(ss.Value) != 2 {
		t.Fatalf("duplicates kept: %v", ss.Value)
	}
}
