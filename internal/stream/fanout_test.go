package stream

// Unit tests of FanOut on hand-built event streams. The SDK's
// SubscribeToShardOutput keeps its event stream in an unexported field, so
// a fake FanOutAPI cannot return a usable one; FanOut has an internal seam
// instead: its subscribe function returns a subscription (Events, Err,
// Close), which *kinesis.SubscribeToShardEventStream implements and these
// tests fake.

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/backoff"
)

// fakeSub is a subscription whose events the test feeds.
type fakeSub struct {
	ch     chan types.SubscribeToShardEventStream
	err    error // returned by Err once ch is closed
	closed chan struct{}
	once   sync.Once
}

func newFakeSub(events ...types.SubscribeToShardEventStream) *fakeSub {
	s := &fakeSub{ch: make(chan types.SubscribeToShardEventStream, len(events)+1), closed: make(chan struct{})}
	for _, e := range events {
		s.ch <- e
	}
	return s
}

// end closes the event channel, as the SDK does when the stream ends.
func (s *fakeSub) end(err error) *fakeSub { s.err = err; close(s.ch); return s }

func (s *fakeSub) Events() <-chan types.SubscribeToShardEventStream { return s.ch }
func (s *fakeSub) Err() error                                       { return s.err }
func (s *fakeSub) Close() error                                     { s.once.Do(func() { close(s.closed) }); return nil }

func (s *fakeSub) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// event builds a SubscribeToShardEvent with records seqs; cont "" means a
// nil ContinuationSequenceNumber (the shard ended).
func event(cont string, mbl int64, children []types.ChildShard, seqs ...string) types.SubscribeToShardEventStream {
	e := types.SubscribeToShardEvent{MillisBehindLatest: aws.Int64(mbl), ChildShards: children, Records: []types.Record{}}
	if cont != "" {
		e.ContinuationSequenceNumber = aws.String(cont)
	}
	for _, s := range seqs {
		e.Records = append(e.Records, types.Record{SequenceNumber: aws.String(s), PartitionKey: aws.String("pk"), Data: []byte("d" + s)})
	}
	return &types.SubscribeToShardEventStreamMemberSubscribeToShardEvent{Value: e}
}

// opener scripts the subscribe seam: each call takes the next result.
type opener struct {
	mu      sync.Mutex
	results []func() (subscription, error)
	calls   []Position
	called  chan struct{}
}

func (o *opener) subscribe(ctx context.Context, consumerARN, shardID string, pos Position) (subscription, error) {
	o.mu.Lock()
	o.calls = append(o.calls, pos)
	var next func() (subscription, error)
	if len(o.results) > 0 {
		next, o.results = o.results[0], o.results[1:]
	}
	o.mu.Unlock()
	select {
	case o.called <- struct{}{}:
	default:
	}
	if next == nil { // script exhausted: an open, silent subscription
		return newFakeSub(), nil
	}
	return next()
}

func (o *opener) positions() []Position {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.calls)
}

func sub(s *fakeSub) func() (subscription, error) {
	return func() (subscription, error) { return s, nil }
}
func fail(err error) func() (subscription, error) {
	return func() (subscription, error) { return nil, err }
}

// fakeFanOutAPI serves Register: RegisterStreamConsumer says the consumer exists,
// DescribeStreamConsumer reports CREATING then ACTIVE.
type fakeFanOutAPI struct {
	FanOutAPI // nil: other calls panic
	mu        sync.Mutex
	describes int
}

func (a *fakeFanOutAPI) DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, _ ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error) {
	return &kinesis.DescribeStreamSummaryOutput{StreamDescriptionSummary: &types.StreamDescriptionSummary{
		StreamARN: aws.String("arn:aws:kinesis:us-east-1:000000000000:stream/" + aws.ToString(in.StreamName)),
	}}, nil
}

func (a *fakeFanOutAPI) RegisterStreamConsumer(context.Context, *kinesis.RegisterStreamConsumerInput, ...func(*kinesis.Options)) (*kinesis.RegisterStreamConsumerOutput, error) {
	return nil, &types.ResourceInUseException{Message: aws.String("consumer exists")}
}

func (a *fakeFanOutAPI) DescribeStreamConsumer(_ context.Context, in *kinesis.DescribeStreamConsumerInput, _ ...func(*kinesis.Options)) (*kinesis.DescribeStreamConsumerOutput, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.describes++
	status := types.ConsumerStatusCreating
	if a.describes >= 2 {
		status = types.ConsumerStatusActive
	}
	return &kinesis.DescribeStreamConsumerOutput{ConsumerDescription: &types.ConsumerDescription{
		ConsumerARN:    aws.String(aws.ToString(in.StreamARN) + "/consumer/" + aws.ToString(in.ConsumerName) + ":1"),
		ConsumerStatus: status,
	}}, nil
}

// newTestFanOut returns a registered FanOut whose subscriptions come from o
// and whose backoff sleeps are recorded (and not slept).
func newTestFanOut(t *testing.T, o *opener, opts ...FanOutOption) (*FanOut, *[]time.Duration) {
	t.Helper()
	api := &fakeFanOutAPI{}
	f := NewFanOut(api, "s1", "c1", append([]FanOutOption{
		WithFanOutBackoff(backoff.Policy{Base: 100 * time.Millisecond, Cap: 400 * time.Millisecond}),
		WithFanOutMaxWait(2 * time.Second),
	}, opts...)...)
	var mu sync.Mutex
	var sleeps []time.Duration
	f.sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ctx.Value(registerKey{}) == nil {
			sleeps = append(sleeps, d)
		}
		return nil
	}
	if err := f.Register(context.WithValue(context.Background(), registerKey{}, true)); err != nil {
		t.Fatal(err)
	}
	if api.describes != 2 {
		t.Errorf("Register: %d DescribeStreamConsumer calls, want 2 (CREATING, ACTIVE)", api.describes)
	}
	if f.ConsumerARN() == "" || f.StreamARN() == "" {
		t.Fatalf("Register left ARNs empty: consumer %q stream %q", f.ConsumerARN(), f.StreamARN())
	}
	if o != nil {
		f.subscribe = o.subscribe
	}
	t.Cleanup(f.Close)
	return f, &sleeps
}

type registerKey struct{}

func seqsOf(rs []Record) []string {
	var s []string
	for _, r := range rs {
		s = append(s, r.SequenceNumber)
	}
	return s
}

func mustGet(t *testing.T, f *FanOut, token string, limit int32) Batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := f.GetRecords(ctx, token, limit)
	if err != nil {
		t.Fatalf("GetRecords(%s): %v", token, err)
	}
	return b
}

func TestFanOutClosedShard(t *testing.T) {
	children := []types.ChildShard{
		{ShardId: aws.String("shardId-000000000001"), ParentShards: []string{"shardId-000000000000"}},
		{ShardId: aws.String("shardId-000000000002"), ParentShards: []string{"shardId-000000000000"}},
	}
	o := &opener{results: []func() (subscription, error){
		sub(newFakeSub(
			event("2", 10, nil, "1", "2"),
			event("", 0, children, "3"),
		).end(nil)),
	}}
	f, _ := newTestFanOut(t, o)
	tok, err := f.Iterator(context.Background(), "shardId-000000000000", Position{Type: types.ShardIteratorTypeTrimHorizon})
	if err != nil {
		t.Fatal(err)
	}
	b := mustGet(t, f, tok, 100)
	if got := seqsOf(b.Records); !slices.Equal(got, []string{"1", "2"}) || b.NextIterator != tok || b.MillisBehindLatest != 10 {
		t.Fatalf("first batch = %v next %q mbl %d; want [1 2] next %q mbl 10", got, b.NextIterator, b.MillisBehindLatest, tok)
	}
	b = mustGet(t, f, tok, 100)
	if got := seqsOf(b.Records); !slices.Equal(got, []string{"3"}) || !b.ShardEnd() || len(b.ChildShards) != 2 {
		t.Fatalf("last batch = %v next %q children %v; want [3], shard end, 2 children", got, b.NextIterator, b.ChildShards)
	}
	if b.ChildShards[0].ID != "shardId-000000000001" || b.ChildShards[0].ParentShardID != "shardId-000000000000" {
		t.Errorf("child = %+v", b.ChildShards[0])
	}
	if _, err := f.GetRecords(context.Background(), tok, 100); !errors.Is(err, ErrExpiredIterator) {
		t.Errorf("GetRecords after shard end: %v, want ErrExpiredIterator", err)
	}
	if n := len(o.positions()); n != 1 {
		t.Errorf("%d subscriptions, want 1 (no resubscribe after shard end)", n)
	}
}

func TestFanOutResubscribeContinuesWithoutLossOrRepeat(t *testing.T) {
	first := newFakeSub(
		event("2", 5, nil, "1", "2"),
		event("3", 0, nil, "3"),
	).end(nil) // the regular end of a subscription (AWS: after 5 minutes)
	second := newFakeSub(
		event("5", 0, nil, "3", "4", "5"), // "3" again: must not be repeated
		event("6", 0, nil, "6"),
	)
	o := &opener{results: []func() (subscription, error){sub(first), sub(second)}}
	f, sleeps := newTestFanOut(t, o)
	tok, err := f.Iterator(context.Background(), "shard-0", Position{Type: types.ShardIteratorTypeAtSequenceNumber, SequenceNumber: "1"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 6 {
		b := mustGet(t, f, tok, 1) // limit 1 also splits events
		if len(b.Records) > 1 {
			t.Fatalf("batch of %d > limit 1", len(b.Records))
		}
		if b.NextIterator != tok {
			t.Fatalf("NextIterator %q, want the same token %q", b.NextIterator, tok)
		}
		got = append(got, seqsOf(b.Records)...)
	}
	if want := []string{"1", "2", "3", "4", "5", "6"}; !slices.Equal(got, want) {
		t.Errorf("records %v, want %v", got, want)
	}
	pos := o.positions()
	want := []Position{{Type: types.ShardIteratorTypeAtSequenceNumber, SequenceNumber: "1"}, {Type: types.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: "3"}}
	if len(pos) < 2 || !slices.Equal(pos[:2], want) {
		t.Errorf("subscribe positions %v, want %v", pos, want)
	}
	if len(*sleeps) != 0 {
		t.Errorf("backed off %v after a regular end, want no delay", *sleeps)
	}
	if !first.isClosed() {
		t.Errorf("ended subscription not closed")
	}
}

func TestFanOutResourceInUseBacksOff(t *testing.T) {
	inUse := &types.ResourceInUseException{Message: aws.String("Another active subscription exists")}
	limit := &types.LimitExceededException{Message: aws.String("too many subscribes")}
	o := &opener{results: []func() (subscription, error){
		fail(inUse),
		sub(newFakeSub().end(inUse)), // the exception arrives inside the event stream (kinesis-mock, AWS)
		fail(limit),
		sub(newFakeSub(event("7", 0, nil, "7"))),
	}}
	f, sleeps := newTestFanOut(t, o, WithFanOutBuffer(8))
	tok, err := f.Iterator(context.Background(), "shard-0", Position{Type: types.ShardIteratorTypeLatest})
	if err != nil {
		t.Fatal(err)
	}
	var throttled int
	for {
		b, err := f.GetRecords(context.Background(), tok, 10)
		if errors.Is(err, ErrThrottled) {
			throttled++
			continue
		}
		if err != nil {
			t.Fatalf("GetRecords: %v", err)
		}
		if got := seqsOf(b.Records); !slices.Equal(got, []string{"7"}) {
			t.Fatalf("records %v, want [7]", got)
		}
		break
	}
	if throttled != 3 {
		t.Errorf("%d ErrThrottled results, want 3 (ResourceInUse, ResourceInUse in stream, LimitExceeded)", throttled)
	}
	p := backoff.Policy{Base: 100 * time.Millisecond, Cap: 400 * time.Millisecond}
	if len(*sleeps) != 3 {
		t.Fatalf("backoff delays %v, want 3", *sleeps)
	}
	for i, d := range *sleeps {
		if c := p.Ceiling(i + 1); d < c/2 || d > c {
			t.Errorf("delay %d = %v, want in [%v, %v]", i+1, d, c/2, c)
		}
	}
	for _, pos := range o.positions() {
		if pos.Type != types.ShardIteratorTypeLatest {
			t.Errorf("resubscribed at %+v before any event, want LATEST again", pos)
		}
	}
}

func TestFanOutStaleToken(t *testing.T) {
	subs := []*fakeSub{newFakeSub(event("1", 0, nil, "1")), newFakeSub(event("2", 0, nil, "2")), newFakeSub()}
	o := &opener{results: []func() (subscription, error){sub(subs[0]), sub(subs[1]), sub(subs[2])}, called: make(chan struct{}, 3)}
	f, _ := newTestFanOut(t, o)
	ctx := context.Background()
	old, err := f.Iterator(ctx, "shard-0", Position{Type: types.ShardIteratorTypeTrimHorizon})
	if err != nil {
		t.Fatal(err)
	}
	<-o.called
	tok, err := f.Iterator(ctx, "shard-0", Position{Type: types.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if tok == old {
		t.Fatalf("same token %q for a new subscription", tok)
	}
	if !subs[0].isClosed() {
		t.Errorf("the older subscription of the shard was not closed")
	}
	for _, bad := range []string{old, "efo:shard-0:999", "efo:other:1", "AAAA-polling-iterator", ""} {
		if _, err := f.GetRecords(ctx, bad, 10); !errors.Is(err, ErrExpiredIterator) {
			t.Errorf("GetRecords(%q) = %v, want ErrExpiredIterator", bad, err)
		}
	}
	if b := mustGet(t, f, tok, 10); !slices.Equal(seqsOf(b.Records), []string{"2"}) {
		t.Errorf("records %v, want [2]", seqsOf(b.Records))
	}
	other, err := f.Iterator(ctx, "shard-1", Position{Type: types.ShardIteratorTypeTrimHorizon})
	if err != nil {
		t.Fatal(err)
	}
	<-o.called
	<-o.called
	f.Close()
	if !subs[1].isClosed() || !subs[2].isClosed() {
		t.Errorf("Close left subscriptions open")
	}
	for _, tk := range []string{tok, other} {
		if _, err := f.GetRecords(ctx, tk, 10); !errors.Is(err, ErrExpiredIterator) {
			t.Errorf("GetRecords after Close = %v, want ErrExpiredIterator", err)
		}
	}
	if _, err := f.Iterator(ctx, "shard-0", Position{Type: types.ShardIteratorTypeTrimHorizon}); err == nil {
		t.Errorf("Iterator after Close succeeded")
	}
}

func TestFanOutEmptyEventsAndMaxWait(t *testing.T) {
	o := &opener{results: []func() (subscription, error){sub(newFakeSub(event("5", 1234, nil)))}}
	f, _ := newTestFanOut(t, o, WithFanOutMaxWait(50*time.Millisecond))
	tok, err := f.Iterator(context.Background(), "shard-0", Position{Type: types.ShardIteratorTypeTrimHorizon})
	if err != nil {
		t.Fatal(err)
	}
	b := mustGet(t, f, tok, 10)
	if len(b.Records) != 0 || b.MillisBehindLatest != 1234 || b.NextIterator != tok {
		t.Errorf("heartbeat batch = %+v, want empty, mbl 1234, same token", b)
	}
	start := time.Now()
	b = mustGet(t, f, tok, 10) // nothing more: MaxWait
	if len(b.Records) != 0 || b.NextIterator != tok || b.MillisBehindLatest != 1234 {
		t.Errorf("MaxWait batch = %+v, want empty, mbl 1234, same token", b)
	}
	if el := time.Since(start); el < 40*time.Millisecond {
		t.Errorf("returned after %v, before MaxWait", el)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.GetRecords(ctx, tok, 10); !errors.Is(err, context.Canceled) {
		t.Errorf("GetRecords with a cancelled context = %v", err)
	}
}

func TestFanOutShardNotFound(t *testing.T) {
	o := &opener{results: []func() (subscription, error){fail(&types.ResourceNotFoundException{Message: aws.String("no shard")})}}
	f, _ := newTestFanOut(t, o)
	tok, err := f.Iterator(context.Background(), "shard-9", Position{Type: types.ShardIteratorTypeTrimHorizon})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.GetRecords(context.Background(), tok, 10); !errors.Is(err, ErrShardNotFound) {
		t.Fatalf("GetRecords = %v, want ErrShardNotFound", err)
	}
	if _, err := f.GetRecords(context.Background(), tok, 10); !errors.Is(err, ErrExpiredIterator) {
		t.Errorf("GetRecords after the session ended = %v, want ErrExpiredIterator", err)
	}
}

func TestFanOutIteratorValidation(t *testing.T) {
	f := NewFanOut(&fakeFanOutAPI{}, "s1", "c1")
	defer f.Close()
	ctx := context.Background()
	if _, err := f.Iterator(ctx, "shard-0", Position{Type: types.ShardIteratorTypeTrimHorizon}); err == nil {
		t.Errorf("Iterator before Register succeeded")
	}
	f.subscribe = (&opener{}).subscribe
	if err := f.Register(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pos := range []Position{{Type: types.ShardIteratorTypeAtTimestamp}, {Type: types.ShardIteratorTypeAfterSequenceNumber}, {Type: "NOPE"}} {
		if _, err := f.Iterator(ctx, "shard-0", pos); err == nil {
			t.Errorf("Iterator(%+v) succeeded", pos)
		}
	}
	if _, err := f.Iterator(ctx, "", Position{Type: types.ShardIteratorTypeTrimHorizon}); err == nil {
		t.Errorf("Iterator with an empty shard id succeeded")
	}
	sp, err := startingPosition(Position{Type: types.ShardIteratorTypeAtTimestamp, Timestamp: time.Unix(100, 0)})
	if err != nil || sp.Type != types.ShardIteratorTypeAtTimestamp || !aws.ToTime(sp.Timestamp).Equal(time.Unix(100, 0)) {
		t.Errorf("startingPosition AT_TIMESTAMP = %+v, %v", sp, err)
	}
	if f2 := NewFanOut(&fakeFanOutAPI{}, "arn:aws:kinesis:us-east-1:0:stream/x", "c"); f2.StreamARN() != "arn:aws:kinesis:us-east-1:0:stream/x" {
		t.Errorf("ARN not taken as ARN: %q", f2.StreamARN())
	}
}

func TestFanOutIdleSessionClosed(t *testing.T) {
	s0, s1 := newFakeSub(event("1", 0, nil, "1")), newFakeSub()
	o := &opener{results: []func() (subscription, error){sub(s0), sub(s1)}, called: make(chan struct{}, 2)}
	f, _ := newTestFanOut(t, o, WithFanOutIdleTimeout(50*time.Millisecond))
	ctx := context.Background()
	tok, err := f.Iterator(ctx, "shard-0", Position{Type: types.ShardIteratorTypeTrimHorizon})
	if err != nil {
		t.Fatal(err)
	}
	if b := mustGet(t, f, tok, 10); len(b.Records) != 1 {
		t.Fatalf("records %v", seqsOf(b.Records))
	}
	// A GetRecords waiting for events is use, however long it waits.
	f.maxWait = 200 * time.Millisecond
	if b := mustGet(t, f, tok, 10); len(b.Records) != 0 {
		t.Fatalf("records %v, want none", seqsOf(b.Records))
	}
	deadline := time.Now().Add(5 * time.Second)
	for !s0.isClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !s0.isClosed() {
		t.Fatalf("idle subscription still open")
	}
	if _, err := f.GetRecords(ctx, tok, 10); !errors.Is(err, ErrExpiredIterator) {
		t.Errorf("GetRecords on an idle-closed session = %v, want ErrExpiredIterator", err)
	}

	tok, err = f.Iterator(ctx, "shard-0", Position{Type: types.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: "1"})
	if err != nil {
		t.Fatal(err)
	}
	<-o.called
	<-o.called
	f.CloseShard("shard-0")
	if !s1.isClosed() {
		t.Errorf("CloseShard left the subscription open")
	}
	if _, err := f.GetRecords(ctx, tok, 10); !errors.Is(err, ErrExpiredIterator) {
		t.Errorf("GetRecords after CloseShard = %v, want ErrExpiredIterator", err)
	}
}
