package stream

// Constructing the SDK client
//
// The AWS SDK retries throttling errors (ProvisionedThroughputExceeded,
// LimitExceeded, ...) by itself, with its own backoff and its own retry
// quota. In kinactor the shard state machine owns throttling backoff: it
// must see ErrThrottled at once, back off on its own timer and keep its
// mailbox responsive. So throttling must not be retried inside the SDK,
// while transient transport errors (connection reset, 5xx) still should be.
//
// Build the client with NewSDKClient, which wraps whatever retryer the
// configuration resolves (standard, adaptive, custom max attempts) so that
// throttling errors are reported as not retryable; everything else keeps the
// configured retry behaviour:
//
//	cfg, _ := config.LoadDefaultConfig(ctx)
//	kc := stream.NewSDKClient(cfg)
//	c := stream.NewClient(kc, "my-stream", "")
//
// A client built some other way (kinesis.NewFromConfig) may apply the same
// policy with the option WithoutThrottleRetries. As a safety net Client also
// passes WithoutThrottleRetries as a per-call option on every call, so a
// plain *kinesis.Client works too.

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
)

// Limits of the Kinesis GetRecords and ListShards APIs.
const (
	MaxGetRecordsLimit   int32 = 10000
	MaxListShardsResults int32 = 1000
)

// Client makes the Kinesis calls of one stream and classifies their errors.
// It is safe for concurrent use if the API is (the SDK client is).
type Client struct {
	api        API
	streamName string
	streamARN  string

	// ListShardsMaxResults is the page size asked of ListShards; 0 lets
	// the server choose (1000 on AWS). kinesalite ignores it.
	ListShardsMaxResults int32
}

// NewClient returns a Client for the stream named streamName or, when
// streamARN is not empty, identified by streamARN (which then takes
// precedence on every call).
func NewClient(api API, streamName, streamARN string) *Client {
	return &Client{api: api, streamName: streamName, streamARN: streamARN}
}

// StreamName returns the stream name given to NewClient.
func (c *Client) StreamName() string { return c.streamName }

// StreamARN returns the stream ARN given to NewClient.
func (c *Client) StreamARN() string { return c.streamARN }

// streamRef returns the (name, arn) pair to put on a request: exactly one
// of them is non-nil.
func (c *Client) streamRef() (name, arn *string) {
	if c.streamARN != "" {
		return nil, aws.String(c.streamARN)
	}
	return aws.String(c.streamName), nil
}

func (c *Client) stream() string {
	if c.streamARN != "" {
		return c.streamARN
	}
	return c.streamName
}

// ListShards lists every shard of the stream, following NextToken until
// the last page. Requests carrying NextToken carry neither the stream name
// nor its ARN, as the API requires.
func (c *Client) ListShards(ctx context.Context) ([]Shard, error) {
	var shards []Shard
	var token *string
	for page := 0; ; page++ {
		in := &kinesis.ListShardsInput{NextToken: token}
		if token == nil {
			in.StreamName, in.StreamARN = c.streamRef()
		}
		if c.ListShardsMaxResults > 0 {
			in.MaxResults = aws.Int32(min(c.ListShardsMaxResults, MaxListShardsResults))
		}
		out, err := c.api.ListShards(ctx, in, WithoutThrottleRetries)
		if err != nil {
			return nil, fmt.Errorf("stream: ListShards %s (page %d): %w", c.stream(), page+1, Classify(err))
		}
		for _, s := range out.Shards {
			shards = append(shards, shardFromSDK(s))
		}
		if out.NextToken == nil || *out.NextToken == "" {
			return shards, nil
		}
		if token != nil && *token == *out.NextToken {
			return nil, fmt.Errorf("stream: ListShards %s: server returned the same NextToken twice", c.stream())
		}
		token = out.NextToken
	}
}

// Iterator returns a shard iterator for shardID at pos.
func (c *Client) Iterator(ctx context.Context, shardID string, pos Position) (string, error) {
	if shardID == "" {
		return "", errors.New("stream: Iterator: empty shard id")
	}
	in := &kinesis.GetShardIteratorInput{ShardId: aws.String(shardID)}
	in.StreamName, in.StreamARN = c.streamRef()
	switch pos.Type {
	case types.ShardIteratorTypeTrimHorizon:
		in.ShardIteratorType = types.ShardIteratorTypeTrimHorizon
	case types.ShardIteratorTypeLatest:
		in.ShardIteratorType = types.ShardIteratorTypeLatest
	case types.ShardIteratorTypeAtTimestamp:
		if pos.Timestamp.IsZero() {
			return "", fmt.Errorf("stream: Iterator %s: position %s needs a timestamp", shardID, pos.Type)
		}
		in.ShardIteratorType = types.ShardIteratorTypeAtTimestamp
		in.Timestamp = aws.Time(pos.Timestamp)
	case types.ShardIteratorTypeAfterSequenceNumber, types.ShardIteratorTypeAtSequenceNumber:
		if pos.SequenceNumber == "" {
			return "", fmt.Errorf("stream: Iterator %s: position %s needs a sequence number", shardID, pos.Type)
		}
		in.ShardIteratorType = types.ShardIteratorType(pos.Type)
		in.StartingSequenceNumber = aws.String(pos.SequenceNumber)
	default:
		return "", fmt.Errorf("stream: Iterator %s: unknown position type %q", shardID, string(pos.Type))
	}
	out, err := c.api.GetShardIterator(ctx, in, WithoutThrottleRetries)
	if err != nil {
		return "", fmt.Errorf("stream: GetShardIterator %s %s %s: %w", c.stream(), shardID, pos.Type, Classify(err))
	}
	if out.ShardIterator == nil || *out.ShardIterator == "" {
		return "", fmt.Errorf("stream: GetShardIterator %s %s %s: empty iterator in response", c.stream(), shardID, pos.Type)
	}
	return *out.ShardIterator, nil
}

// ClampLimit clamps a GetRecords limit to [1, MaxGetRecordsLimit].
func ClampLimit(limit int32) int32 {
	return max(1, min(limit, MaxGetRecordsLimit))
}

// GetRecords reads up to limit records (clamped to [1, 10000]) at iterator.
// At shard end the batch's NextIterator is "" and, when the server reports
// them, ChildShards lists the children.
func (c *Client) GetRecords(ctx context.Context, iterator string, limit int32) (Batch, error) {
	if iterator == "" {
		return Batch{}, errors.New("stream: GetRecords: empty shard iterator")
	}
	in := &kinesis.GetRecordsInput{ShardIterator: aws.String(iterator), Limit: aws.Int32(ClampLimit(limit))}
	if c.streamARN != "" {
		in.StreamARN = aws.String(c.streamARN)
	}
	out, err := c.api.GetRecords(ctx, in, WithoutThrottleRetries)
	if err != nil {
		return Batch{}, fmt.Errorf("stream: GetRecords %s: %w", c.stream(), Classify(err))
	}
	b := Batch{MillisBehindLatest: aws.ToInt64(out.MillisBehindLatest), NextIterator: aws.ToString(out.NextShardIterator)}
	if len(out.Records) > 0 {
		b.Records = make([]Record, len(out.Records))
		for i, r := range out.Records {
			b.Records[i] = Record{
				SequenceNumber:              aws.ToString(r.SequenceNumber),
				PartitionKey:                aws.ToString(r.PartitionKey),
				Data:                        r.Data,
				ApproximateArrivalTimestamp: aws.ToTime(r.ApproximateArrivalTimestamp),
			}
		}
	}
	if len(out.ChildShards) > 0 {
		b.ChildShards = make([]Shard, len(out.ChildShards))
		for i, ch := range out.ChildShards {
			b.ChildShards[i] = childFromSDK(ch)
		}
	}
	return b, nil
}

// ChildrenFromList returns the shards of all whose parent or adjacent
// parent is parentID: the children of a closed shard when the server
// reports no ChildShards (kinesalite never does).
func ChildrenFromList(all []Shard, parentID string) []Shard {
	if parentID == "" {
		return nil
	}
	var children []Shard
	for _, s := range all {
		if s.ParentShardID == parentID || s.AdjacentParentShardID == parentID {
			children = append(children, s)
		}
	}
	return children
}

func shardFromSDK(s types.Shard) Shard {
	sh := Shard{
		ID:                    aws.ToString(s.ShardId),
		ParentShardID:         aws.ToString(s.ParentShardId),
		AdjacentParentShardID: aws.ToString(s.AdjacentParentShardId),
	}
	if r := s.HashKeyRange; r != nil {
		sh.StartingHashKey = aws.ToString(r.StartingHashKey)
		sh.EndingHashKey = aws.ToString(r.EndingHashKey)
	}
	if r := s.SequenceNumberRange; r != nil {
		sh.StartingSequenceNumber = aws.ToString(r.StartingSequenceNumber)
		sh.EndingSequenceNumber = aws.ToString(r.EndingSequenceNumber)
	}
	return sh
}

// childFromSDK maps a ChildShard of GetRecords. Its ParentShards list holds
// one id after a split and two after a merge; the order of the two is not
// specified, so the first is taken as ParentShardID and the second as
// AdjacentParentShardID. (ListShards remains the authority on which is
// which.) Sequence number ranges are not reported for children.
func childFromSDK(ch types.ChildShard) Shard {
	sh := Shard{ID: aws.ToString(ch.ShardId)}
	if len(ch.ParentShards) > 0 {
		sh.ParentShardID = ch.ParentShards[0]
	}
	if len(ch.ParentShards) > 1 {
		sh.AdjacentParentShardID = ch.ParentShards[1]
	}
	if r := ch.HashKeyRange; r != nil {
		sh.StartingHashKey = aws.ToString(r.StartingHashKey)
		sh.EndingHashKey = aws.ToString(r.EndingHashKey)
	}
	return sh
}

// Error codes of Kinesis errors, classified by Classify.
var (
	throttleCodes = map[string]struct{}{
		"ProvisionedThroughputExceededException": {},
		"KMSThrottlingException":                 {},
		"LimitExceededException":                 {},
	}
	expiredCodes    = map[string]struct{}{"ExpiredIteratorException": {}}
	notFoundCodes   = map[string]struct{}{"ResourceNotFoundException": {}}
	invalidArgCodes = map[string]struct{}{"InvalidArgumentException": {}}
)

// classifiedError keeps the original error and adds a sentinel to the chain.
type classifiedError struct {
	kind error
	err  error
}

func (e *classifiedError) Error() string   { return e.kind.Error() + ": " + e.err.Error() }
func (e *classifiedError) Unwrap() []error { return []error{e.kind, e.err} }

// Classify returns err with ErrThrottled, ErrExpiredIterator,
// ErrShardNotFound or ErrInvalidArgument added to its chain when it is one of those Kinesis
// errors; the original error stays in the chain for errors.As. Other
// errors, nil, and errors already classified are returned unchanged.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrThrottled) || errors.Is(err, ErrExpiredIterator) || errors.Is(err, ErrShardNotFound) || errors.Is(err, ErrInvalidArgument) {
		return err
	}
	if kind := kindOf(err); kind != nil {
		return &classifiedError{kind: kind, err: err}
	}
	return err
}

func kindOf(err error) error {
	var (
		pte *types.ProvisionedThroughputExceededException
		kte *types.KMSThrottlingException
		lee *types.LimitExceededException
		eie *types.ExpiredIteratorException
		rnf *types.ResourceNotFoundException
		iae *types.InvalidArgumentException
	)
	switch {
	case errors.As(err, &pte), errors.As(err, &kte), errors.As(err, &lee):
		return ErrThrottled
	case errors.As(err, &eie):
		return ErrExpiredIterator
	case errors.As(err, &rnf):
		return ErrShardNotFound
	case errors.As(err, &iae):
		return ErrInvalidArgument
	}
	code := errorCode(err)
	if _, ok := throttleCodes[code]; ok {
		return ErrThrottled
	}
	if _, ok := expiredCodes[code]; ok {
		return ErrExpiredIterator
	}
	if _, ok := notFoundCodes[code]; ok {
		return ErrShardNotFound
	}
	if _, ok := invalidArgCodes[code]; ok {
		return ErrInvalidArgument
	}
	return nil
}

// errorCode returns the API error code of err, "" if it has none. Some
// servers prefix the code with a namespace ("Kinesis_20131202#...").
func errorCode(err error) string {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return ""
	}
	code := ae.ErrorCode()
	if i := strings.LastIndexByte(code, '#'); i >= 0 {
		code = code[i+1:]
	}
	return code
}

// IsThrottle reports whether err is a Kinesis throttling error.
func IsThrottle(err error) bool { return err != nil && kindOf(err) == ErrThrottled }

// NewSDKClient builds a *kinesis.Client from cfg and optFns that does not
// retry throttling errors (they reach the caller at once, classified as
// ErrThrottled), while other errors keep the configured retry policy. This
// is the recommended way to build the client given to NewClient:
//
//	cfg, err := config.LoadDefaultConfig(ctx)
//	c := stream.NewClient(stream.NewSDKClient(cfg), "my-stream", "")
//
// optFns run first (endpoint, RetryMaxAttempts, a custom Retryer ...); the
// throttle filter then wraps whichever retryer they leave.
func NewSDKClient(cfg aws.Config, optFns ...func(*kinesis.Options)) *kinesis.Client {
	fns := make([]func(*kinesis.Options), 0, len(optFns)+1)
	fns = append(fns, optFns...)
	fns = append(fns, WithoutThrottleRetries) // last: wraps whatever retryer optFns chose
	return kinesis.NewFromConfig(cfg, fns...)
}

// WithoutThrottleRetries is a kinesis option, for a client or for one call,
// that wraps the configured retryer so that Kinesis throttling errors
// (ProvisionedThroughputExceeded, KMSThrottling, LimitExceeded) are not
// retried by the SDK. Applying it again to a wrapped retryer is harmless.
func WithoutThrottleRetries(o *kinesis.Options) {
	if o.Retryer == nil {
		return // the SDK resolves its default before options run; nothing to wrap
	}
	if _, ok := o.Retryer.(noThrottleRetryer); ok {
		return
	}
	if v2, ok := o.Retryer.(aws.RetryerV2); ok {
		o.Retryer = noThrottleRetryer{v2}
		return
	}
	o.Retryer = noThrottleRetryer{retryerV2{o.Retryer}}
}

// noThrottleRetryer reports throttling errors as not retryable and
// delegates everything else.
type noThrottleRetryer struct{ aws.RetryerV2 }

func (r noThrottleRetryer) IsErrorRetryable(err error) bool {
	if IsThrottle(err) {
		return false
	}
	return r.RetryerV2.IsErrorRetryable(err)
}

// retryerV2 adapts a plain aws.Retryer.
type retryerV2 struct{ aws.Retryer }

func (r retryerV2) GetAttemptToken(ctx context.Context) (func(error) error, error) {
	return r.GetInitialToken(), nil
}
