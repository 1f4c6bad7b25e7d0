package stream

// Enhanced fan-out
//
// FanOut reads shards through SubscribeToShard (enhanced fan-out, a pushed
// event stream per shard and consumer) but offers the same three calls as
// the polling Client: ListShards, Iterator and GetRecords. The shard actor
// and its state machine therefore run unchanged on either fetcher.
//
//   - Iterator(shard, pos) starts a subscription session for the shard at
//     pos and returns an opaque token "efo:<shard>:<generation>" naming it.
//     An older session of the same shard is closed (AWS allows one open
//     subscription per consumer and shard).
//   - A session is a goroutine (the pump) that subscribes, copies the
//     events into a small buffered channel (the prefetch) and, when a
//     subscription ends (AWS ends them every 5 minutes, or on errors),
//     subscribes again AFTER_SEQUENCE_NUMBER of the last
//     ContinuationSequenceNumber. Records at or before the last sequence
//     number already delivered are dropped, so a resubscription never
//     repeats a record.
//   - GetRecords(token) returns the next event's records. While the shard
//     is open NextIterator is the same token; on the last event of a closed
//     shard (ContinuationSequenceNumber nil, or ChildShards present) it is
//     "" and ChildShards is set. An unknown or replaced token, or a session
//     that stopped, gives ErrExpiredIterator: the shard actor then asks for
//     a fresh Iterator after the last record it received.
//
// Empty events (AWS sends them while a consumer is caught up) are returned
// as empty batches, so MillisBehindLatest keeps updating and the actor
// waits IdleTimeBetweenReads as it does for an empty poll; the events that
// arrive meanwhile wait in the buffer. If no event at all arrives within
// MaxWait, GetRecords also returns an empty batch, so that a call never
// blocks the actor's shutdown for long.
//
// A session that sees no GetRecords call for IdleTimeout (default 1 min)
// is closed, and CloseShard closes one at once: AWS allows a single
// subscription per consumer and shard, so a shard this node no longer
// reads must not keep one open.
//
// ResourceInUseException (a previous subscription of this consumer and
// shard is still open) and LimitExceededException make the pump back off
// (capped, jittered) and subscribe again; the failure is also reported to
// the next GetRecords as an ErrThrottled error so the actor backs off and
// counts it. ResourceNotFoundException ends the session with
// ErrShardNotFound. Other failures are reported unclassified and retried
// with backoff.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/schemas"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go/transport/http/protocol/awsjson"

	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/seqnum"
)

// FanOutAPI is the subset of *kinesis.Client that FanOut uses.
type FanOutAPI interface {
	DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, opts ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
	RegisterStreamConsumer(ctx context.Context, in *kinesis.RegisterStreamConsumerInput, opts ...func(*kinesis.Options)) (*kinesis.RegisterStreamConsumerOutput, error)
	DescribeStreamConsumer(ctx context.Context, in *kinesis.DescribeStreamConsumerInput, opts ...func(*kinesis.Options)) (*kinesis.DescribeStreamConsumerOutput, error)
	SubscribeToShard(ctx context.Context, in *kinesis.SubscribeToShardInput, opts ...func(*kinesis.Options)) (*kinesis.SubscribeToShardOutput, error)
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
}

// Defaults of FanOut's options.
const (
	DefaultFanOutBuffer          = 4
	DefaultFanOutMaxWait         = 5 * time.Second
	DefaultFanOutRegisterTimeout = 2 * time.Minute
	DefaultFanOutIdleTimeout     = time.Minute
)

// DefaultFanOutBackoff is the backoff between subscription attempts after
// ResourceInUse, LimitExceeded or another failure.
var DefaultFanOutBackoff = backoff.Policy{Base: 200 * time.Millisecond, Cap: 10 * time.Second}

// FanOutOption configures a FanOut.
type FanOutOption func(*FanOut)

// WithFanOutBuffer sets how many events each subscription prefetches
// (default 4; at least 1).
func WithFanOutBuffer(n int) FanOutOption { return func(f *FanOut) { f.buffer = max(1, n) } }

// WithFanOutBackoff sets the backoff between subscription attempts.
func WithFanOutBackoff(p backoff.Policy) FanOutOption { return func(f *FanOut) { f.policy = p } }

// WithFanOutMaxWait sets how long GetRecords waits for an event before it
// returns an empty batch (default 5 s).
func WithFanOutMaxWait(d time.Duration) FanOutOption { return func(f *FanOut) { f.maxWait = d } }

// WithFanOutRegisterTimeout bounds Register's wait for the consumer to
// become ACTIVE (default 2 min).
func WithFanOutRegisterTimeout(d time.Duration) FanOutOption {
	return func(f *FanOut) { f.registerTimeout = d }
}

// WithFanOutIdleTimeout sets how long a session may go without a
// GetRecords call before it is closed (default 1 min; 0 never). A shard
// actor that stopped (lease lost, shutdown) stops calling GetRecords; its
// subscription must not stay open, since AWS allows one per consumer and
// shard and the shard's next owner would get ResourceInUse. A slow
// processor only costs a resubscription: its next GetRecords gets
// ErrExpiredIterator and the actor asks for a fresh Iterator.
func WithFanOutIdleTimeout(d time.Duration) FanOutOption {
	return func(f *FanOut) { f.idleTimeout = d }
}

// subscription is one open SubscribeToShard event stream;
// *kinesis.SubscribeToShardEventStream implements it. It is the seam that
// unit tests fake.
type subscription interface {
	Events() <-chan types.SubscribeToShardEventStream
	Err() error
	Close() error
}

// FanOut reads shards through enhanced fan-out, behind the same
// ListShards/Iterator/GetRecords calls as Client. It is safe for
// concurrent use; GetRecords calls for one token must not overlap (they
// are serialised).
type FanOut struct {
	api          FanOutAPI
	streamName   string
	consumerName string
	lister       *Client

	buffer          int
	policy          backoff.Policy
	maxWait         time.Duration
	registerTimeout time.Duration
	idleTimeout     time.Duration

	// seams for tests
	subscribe func(ctx context.Context, consumerARN, shardID string, pos Position) (subscription, error)
	sleep     func(ctx context.Context, d time.Duration) error

	gen atomic.Uint64

	mu          sync.Mutex
	streamARN   string
	consumerARN string
	sessions    map[string]*efoSession // by shard id
	closed      bool
}

// NewFanOut returns a FanOut for the stream given by name or ARN (a value
// starting with "arn:") and the stream consumer consumerName. Call
// Register before Iterator.
func NewFanOut(api FanOutAPI, stream, consumerName string, opts ...FanOutOption) *FanOut {
	f := &FanOut{
		api:             api,
		consumerName:    consumerName,
		buffer:          DefaultFanOutBuffer,
		policy:          DefaultFanOutBackoff,
		maxWait:         DefaultFanOutMaxWait,
		registerTimeout: DefaultFanOutRegisterTimeout,
		idleTimeout:     DefaultFanOutIdleTimeout,
		sessions:        map[string]*efoSession{},
		sleep:           backoff.Sleep,
	}
	if strings.HasPrefix(stream, "arn:") {
		f.streamARN = stream
		f.lister = NewClient(listOnly{api}, "", stream)
	} else {
		f.streamName = stream
		f.lister = NewClient(listOnly{api}, stream, "")
	}
	f.subscribe = f.subscribeSDK
	for _, o := range opts {
		o(f)
	}
	return f
}

// StreamARN returns the stream ARN, "" until known (given, or resolved by
// Register).
func (f *FanOut) StreamARN() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streamARN
}

// ConsumerARN returns the consumer ARN, "" until Register succeeded.
func (f *FanOut) ConsumerARN() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.consumerARN
}

func (f *FanOut) stream() string {
	if f.streamName != "" {
		return f.streamName
	}
	return f.streamARN
}

// Register registers the stream consumer if it does not exist yet,
// waits until it is ACTIVE and remembers its ARN. It resolves the stream
// ARN from the name first if needed.
func (f *FanOut) Register(ctx context.Context) error {
	if f.consumerName == "" {
		return errors.New("stream: fan-out Register: empty consumer name")
	}
	ctx, cancel := context.WithTimeout(ctx, f.registerTimeout)
	defer cancel()
	streamARN := f.StreamARN()
	if streamARN == "" {
		out, err := f.api.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(f.streamName)}, WithoutThrottleRetries)
		if err != nil {
			return fmt.Errorf("stream: fan-out DescribeStreamSummary %s: %w", f.streamName, Classify(err))
		}
		if out.StreamDescriptionSummary == nil || aws.ToString(out.StreamDescriptionSummary.StreamARN) == "" {
			return fmt.Errorf("stream: fan-out DescribeStreamSummary %s: no StreamARN in response", f.streamName)
		}
		streamARN = aws.ToString(out.StreamDescriptionSummary.StreamARN)
		f.mu.Lock()
		f.streamARN = streamARN
		f.mu.Unlock()
	}
	_, err := f.api.RegisterStreamConsumer(ctx, &kinesis.RegisterStreamConsumerInput{
		StreamARN: aws.String(streamARN), ConsumerName: aws.String(f.consumerName),
	}, WithoutThrottleRetries)
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) && errorCode(err) != "ResourceInUseException" {
		return fmt.Errorf("stream: fan-out RegisterStreamConsumer %s %s: %w", streamARN, f.consumerName, Classify(err))
	}
	for attempt := 1; ; attempt++ {
		out, err := f.api.DescribeStreamConsumer(ctx, &kinesis.DescribeStreamConsumerInput{
			StreamARN: aws.String(streamARN), ConsumerName: aws.String(f.consumerName),
		}, WithoutThrottleRetries)
		if err == nil && out.ConsumerDescription != nil && out.ConsumerDescription.ConsumerStatus == types.ConsumerStatusActive {
			f.mu.Lock()
			f.consumerARN = aws.ToString(out.ConsumerDescription.ConsumerARN)
			f.mu.Unlock()
			return nil
		}
		if err != nil && !IsThrottle(err) && !errors.Is(Classify(err), ErrShardNotFound) {
			return fmt.Errorf("stream: fan-out DescribeStreamConsumer %s %s: %w", streamARN, f.consumerName, Classify(err))
		}
		p := backoff.Policy{Base: 50 * time.Millisecond, Cap: time.Second}
		if serr := f.sleep(ctx, p.Delay(attempt, nil)); serr != nil {
			status := "unknown"
			if err == nil && out.ConsumerDescription != nil {
				status = string(out.ConsumerDescription.ConsumerStatus)
			}
			return fmt.Errorf("stream: fan-out consumer %s of %s not ACTIVE in time (status %s, last error %v): %w", f.consumerName, streamARN, status, err, serr)
		}
	}
}

// ListShards lists the stream's shards (through the polling Client).
func (f *FanOut) ListShards(ctx context.Context) ([]Shard, error) {
	return f.lister.ListShards(ctx)
}

// Iterator starts a subscription session for shardID at pos, closing any
// older session of the shard, and returns the token naming it. It does not
// wait for the subscription: its failures reach GetRecords.
func (f *FanOut) Iterator(ctx context.Context, shardID string, pos Position) (string, error) {
	if shardID == "" {
		return "", errors.New("stream: fan-out Iterator: empty shard id")
	}
	if _, err := startingPosition(pos); err != nil {
		return "", fmt.Errorf("stream: fan-out Iterator %s: %w", shardID, err)
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return "", errors.New("stream: fan-out Iterator: FanOut is closed")
	}
	if f.consumerARN == "" {
		f.mu.Unlock()
		return "", errors.New("stream: fan-out Iterator: consumer not registered (call Register)")
	}
	old := f.sessions[shardID]
	sctx, cancel := context.WithCancel(context.Background())
	s := &efoSession{
		shardID: shardID,
		token:   "efo:" + shardID + ":" + strconv.FormatUint(f.gen.Add(1), 10),
		cancel:  cancel,
		items:   make(chan efoItem, f.buffer),
		done:    make(chan struct{}),
	}
	f.sessions[shardID] = s
	consumerARN := f.consumerARN
	f.mu.Unlock()
	if old != nil {
		old.stop()
	}
	s.touch()
	go f.pump(sctx, s, consumerARN, pos)
	if f.idleTimeout > 0 {
		go f.watch(sctx, s)
	}
	return s.token, nil
}

// CloseShard closes the subscription session of shardID, if any; its token
// then gives ErrExpiredIterator. Call it when a shard is released.
func (f *FanOut) CloseShard(shardID string) {
	f.mu.Lock()
	s := f.sessions[shardID]
	delete(f.sessions, shardID)
	f.mu.Unlock()
	if s != nil {
		s.stop()
	}
}

// watch closes s when no GetRecords used it for idleTimeout.
func (f *FanOut) watch(ctx context.Context, s *efoSession) {
	t := time.NewTicker(max(f.idleTimeout/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.calls.Load() == 0 && time.Since(time.Unix(0, s.lastUse.Load())) > f.idleTimeout {
				f.forget(s)
				s.cancel() // the pump exits; a late GetRecords finds the token gone
				return
			}
		}
	}
}

// GetRecords returns the records of the next event of the session named by
// token, at most limit of them (the rest are kept for the next call). It
// waits for an event up to MaxWait, then returns an empty batch.
func (f *FanOut) GetRecords(ctx context.Context, token string, limit int32) (Batch, error) {
	s := f.lookup(token)
	if s == nil {
		return Batch{}, fmt.Errorf("stream: fan-out GetRecords %q: unknown or replaced subscription: %w", token, ErrExpiredIterator)
	}
	s.calls.Add(1)
	defer func() { s.touch(); s.calls.Add(-1) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	limit = ClampLimit(limit)
	if s.pending != nil {
		return s.take(limit), nil
	}
	var timeout <-chan time.Time
	if f.maxWait > 0 {
		t := time.NewTimer(f.maxWait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case it, ok := <-s.items:
		if !ok {
			f.forget(s)
			return Batch{}, fmt.Errorf("stream: fan-out GetRecords %q: subscription ended: %w", token, ErrExpiredIterator)
		}
		if it.err != nil {
			return Batch{}, it.err
		}
		b := it.b
		s.mbl = b.MillisBehindLatest
		s.pending = &b
		return s.take(limit), nil
	case <-timeout:
		return Batch{NextIterator: token, MillisBehindLatest: s.mbl}, nil
	case <-ctx.Done():
		return Batch{}, ctx.Err()
	}
}

// Close closes every subscription and waits for their goroutines. Iterator
// fails afterwards.
func (f *FanOut) Close() {
	f.mu.Lock()
	f.closed = true
	sessions := f.sessions
	f.sessions = map[string]*efoSession{}
	f.mu.Unlock()
	for _, s := range sessions {
		s.stop()
	}
}

func (f *FanOut) lookup(token string) *efoSession {
	rest, ok := strings.CutPrefix(token, "efo:")
	i := strings.LastIndexByte(rest, ':')
	if !ok || i <= 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sessions[rest[:i]]
	if s == nil || s.token != token {
		return nil
	}
	return s
}

// forget removes s from the sessions if it is still the shard's current one.
func (f *FanOut) forget(s *efoSession) {
	f.mu.Lock()
	if f.sessions[s.shardID] == s {
		delete(f.sessions, s.shardID)
	}
	f.mu.Unlock()
}

// efoSession is one Iterator call's subscription (and its resubscriptions).
type efoSession struct {
	shardID string
	token   string
	cancel  context.CancelFunc
	items   chan efoItem  // the prefetch; closed by the pump when it stops
	done    chan struct{} // closed when the pump has returned

	mu      sync.Mutex // serialises GetRecords
	pending *Batch     // the rest of an event larger than a call's limit
	mbl     int64      // last MillisBehindLatest seen

	calls   atomic.Int32 // GetRecords calls in progress
	lastUse atomic.Int64 // unix nanos of the last GetRecords end (or start of the session)
}

func (s *efoSession) touch() { s.lastUse.Store(time.Now().UnixNano()) }

type efoItem struct {
	b   Batch
	err error
}

func (s *efoSession) stop() {
	s.cancel()
	<-s.done
}

// take returns up to limit records of the pending batch; the shard end
// (NextIterator "", ChildShards) travels with its last piece.
func (s *efoSession) take(limit int32) Batch {
	p := s.pending
	if int32(len(p.Records)) <= limit {
		s.pending = nil
		return *p
	}
	b := Batch{Records: p.Records[:limit:limit], MillisBehindLatest: p.MillisBehindLatest, NextIterator: s.token}
	p.Records = p.Records[limit:]
	return b
}

// pump subscribes and resubscribes for s until the shard ends, the
// session is stopped, or the shard is not found.
func (f *FanOut) pump(ctx context.Context, s *efoSession, consumerARN string, pos Position) {
	defer close(s.done)
	defer close(s.items)
	var last string // sequence number of the last record put in s.items
	attempt := 0
	send := func(it efoItem) bool {
		select {
		case s.items <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	// report passes a failure to GetRecords without waiting: when the
	// buffer is full the actor has records to process anyway.
	report := func(err error) {
		select {
		case s.items <- efoItem{err: err}:
		default:
		}
	}
	backOff := func() bool {
		attempt++
		return f.sleep(ctx, f.policy.Delay(attempt, nil)) == nil
	}
	for ctx.Err() == nil {
		sub, err := f.subscribe(ctx, consumerARN, s.shardID, pos)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			err = fmt.Errorf("stream: SubscribeToShard %s %s %s: %w", f.stream(), s.shardID, pos.Type, classifySubscribe(err))
			if errors.Is(err, ErrShardNotFound) {
				send(efoItem{err: err})
				return
			}
			report(err)
			if !backOff() {
				return
			}
			continue
		}
		events, ended, err := f.drain(ctx, s, sub, &pos, &last, send)
		_ = sub.Close()
		if ended || ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			err = fmt.Errorf("stream: SubscribeToShard %s %s event stream: %w", f.stream(), s.shardID, classifySubscribe(err))
			if errors.Is(err, ErrShardNotFound) {
				send(efoItem{err: err})
				return
			}
			report(err)
			if !backOff() {
				return
			}
		case events == 0:
			// Ended without a single event: do not spin.
			if !backOff() {
				return
			}
		default:
			attempt = 0 // the regular end of a subscription: resubscribe at once
		}
	}
}

// drain copies sub's events into s.items until the subscription ends, and
// moves pos to the continuation. It reports how many events came, whether
// the shard ended, and the subscription's error.
func (f *FanOut) drain(ctx context.Context, s *efoSession, sub subscription, pos *Position, last *string, send func(efoItem) bool) (events int, ended bool, err error) {
	ch := sub.Events()
	for {
		var ev types.SubscribeToShardEventStream
		var ok bool
		select {
		case ev, ok = <-ch:
		case <-ctx.Done():
			return events, false, ctx.Err()
		}
		if !ok {
			return events, false, sub.Err()
		}
		e, isEvent := ev.(*types.SubscribeToShardEventStreamMemberSubscribeToShardEvent)
		if !isEvent {
			continue
		}
		events++
		b, end := batchFromEvent(e.Value, *last, s.token)
		if n := len(b.Records); n > 0 {
			*last = b.Records[n-1].SequenceNumber
		}
		if c := aws.ToString(e.Value.ContinuationSequenceNumber); c != "" {
			*pos = Position{Type: types.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: c}
		} else if *last != "" {
			*pos = Position{Type: types.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: *last}
		}
		if !send(efoItem{b: b}) {
			return events, false, ctx.Err()
		}
		if end {
			return events, true, nil
		}
	}
}

// batchFromEvent converts one event; records at or before last are dropped
// (a resubscription never repeats a record). end reports the shard's end.
func batchFromEvent(ev types.SubscribeToShardEvent, last, token string) (b Batch, end bool) {
	b.MillisBehindLatest = aws.ToInt64(ev.MillisBehindLatest)
	b.NextIterator = token
	for _, r := range ev.Records {
		seq := aws.ToString(r.SequenceNumber)
		if last != "" && seqnum.Compare(last, seq) >= 0 {
			continue
		}
		b.Records = append(b.Records, Record{
			SequenceNumber:              seq,
			PartitionKey:                aws.ToString(r.PartitionKey),
			Data:                        r.Data,
			ApproximateArrivalTimestamp: aws.ToTime(r.ApproximateArrivalTimestamp),
		})
	}
	if ev.ContinuationSequenceNumber == nil || len(ev.ChildShards) > 0 {
		end = true
		b.NextIterator = ""
		if len(ev.ChildShards) > 0 {
			b.ChildShards = make([]Shard, len(ev.ChildShards))
			for i, ch := range ev.ChildShards {
				b.ChildShards[i] = childFromSDK(ch)
			}
		}
	}
	return b, end
}

func (f *FanOut) subscribeSDK(ctx context.Context, consumerARN, shardID string, pos Position) (subscription, error) {
	sp, err := startingPosition(pos)
	if err != nil {
		return nil, err
	}
	out, err := f.api.SubscribeToShard(ctx, &kinesis.SubscribeToShardInput{
		ConsumerARN: aws.String(consumerARN), ShardId: aws.String(shardID), StartingPosition: sp,
	}, WithoutThrottleRetries, ownEventStreamCodec)
	if err != nil {
		return nil, err
	}
	es := out.GetStream()
	if es == nil {
		return nil, errors.New("no event stream in SubscribeToShard response")
	}
	return es, nil
}

// ownEventStreamCodec gives one SubscribeToShard call its own protocol
// instance. The SDK's awsJson protocol (smithy-go v1.28.9) decodes every
// event stream of a client through one shared codec whose scratch state
// (payload buffer, lazily built decoder) is written without
// synchronisation, so concurrent subscriptions on one client are a data
// race (seen with -race). A per-call protocol is cheap and has no shared
// state. A custom protocol set by the caller is left alone.
func ownEventStreamCodec(o *kinesis.Options) {
	if _, ok := o.Protocol.(*awsjson.Protocol); ok {
		o.Protocol = awsjson.New11(schemas.Kinesis_20131202)
	}
}

func startingPosition(pos Position) (*types.StartingPosition, error) {
	sp := &types.StartingPosition{}
	switch pos.Type {
	case types.ShardIteratorTypeTrimHorizon:
		sp.Type = types.ShardIteratorTypeTrimHorizon
	case types.ShardIteratorTypeLatest:
		sp.Type = types.ShardIteratorTypeLatest
	case types.ShardIteratorTypeAtTimestamp:
		if pos.Timestamp.IsZero() {
			return nil, fmt.Errorf("position %s needs a timestamp", pos.Type)
		}
		sp.Type = types.ShardIteratorTypeAtTimestamp
		sp.Timestamp = aws.Time(pos.Timestamp)
	case types.ShardIteratorTypeAfterSequenceNumber, types.ShardIteratorTypeAtSequenceNumber:
		if pos.SequenceNumber == "" {
			return nil, fmt.Errorf("position %s needs a sequence number", pos.Type)
		}
		sp.Type = types.ShardIteratorType(pos.Type)
		sp.SequenceNumber = aws.String(pos.SequenceNumber)
	default:
		return nil, fmt.Errorf("unknown position type %q", string(pos.Type))
	}
	return sp, nil
}

// classifySubscribe is Classify plus ResourceInUseException (another
// subscription of this consumer and shard is still open) as ErrThrottled.
func classifySubscribe(err error) error {
	var inUse *types.ResourceInUseException
	if errors.As(err, &inUse) || errorCode(err) == "ResourceInUseException" {
		return &classifiedError{kind: ErrThrottled, err: err}
	}
	return Classify(err)
}

// listOnly adapts a FanOutAPI to API for the polling Client's ListShards;
// FanOut never polls.
type listOnly struct{ FanOutAPI }

func (listOnly) GetShardIterator(context.Context, *kinesis.GetShardIteratorInput, ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	return nil, errors.New("stream: fan-out does not use GetShardIterator")
}

func (listOnly) GetRecords(context.Context, *kinesis.GetRecordsInput, ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	return nil, errors.New("stream: fan-out does not use GetRecords")
}
