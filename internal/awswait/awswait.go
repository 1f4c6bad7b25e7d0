// Package awswait waits for a Kinesis stream or a DynamoDB table to be
// ACTIVE, with the SDK's waiters (kinesis.NewStreamExistsWaiter,
// dynamodb.NewTableExistsWaiter), polling fast enough for the local servers
// (the first retry after 20 ms) and gently enough for AWS (at most twice a
// second). It is the one home of "create it and wait until it is ACTIVE"
// for the kinactor command and the tests.
package awswait

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/stream"
)

// The waiters' delays between two describes: from MinDelay, doubling with
// jitter, to MaxDelay.
const (
	MinDelay = 20 * time.Millisecond
	MaxDelay = 500 * time.Millisecond
)

// StreamAPI is the part of *kinesis.Client EnsureStream uses.
type StreamAPI interface {
	kinesis.DescribeStreamAPIClient
	CreateStream(ctx context.Context, in *kinesis.CreateStreamInput, optFns ...func(*kinesis.Options)) (*kinesis.CreateStreamOutput, error)
}

// Stream waits until the stream is ACTIVE (DescribeStream) and returns its
// ARN. A stream not found yet, as right after CreateStream, is waited for
// too, and so is a describe refused for its rate (LimitExceeded: the
// callers' clients may not retry throttling); any other error ends the
// wait. A stream being resharded is UPDATING
// until its new shards are in place, then ACTIVE again; right after the
// reshard call it may still say ACTIVE, so a caller waiting for new shards
// must also look at the shards.
func Stream(ctx context.Context, kc kinesis.DescribeStreamAPIClient, name string, timeout time.Duration) (string, error) {
	w := kinesis.NewStreamExistsWaiter(kc, func(o *kinesis.StreamExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = MinDelay, MaxDelay
		active := o.Retryable
		o.Retryable = func(ctx context.Context, in *kinesis.DescribeStreamInput, out *kinesis.DescribeStreamOutput, err error) (bool, error) {
			var nf *ktypes.ResourceNotFoundException
			var limit *ktypes.LimitExceededException
			if errors.As(err, &nf) || errors.As(err, &limit) {
				return true, nil
			}
			return active(ctx, in, out, err)
		}
	})
	out, err := w.WaitForOutput(ctx, &kinesis.DescribeStreamInput{StreamName: aws.String(name)}, timeout)
	if err != nil {
		return "", fmt.Errorf("stream %s not ACTIVE within %s: %w", name, timeout, err)
	}
	return aws.ToString(out.StreamDescription.StreamARN), nil
}

// ShardLister lists a stream's shards (*stream.Client).
type ShardLister interface {
	ListShards(ctx context.Context) ([]stream.Shard, error)
}

// Shards waits until the stream is ACTIVE (Stream) and done holds for the
// shards sc lists, and returns them: after a reshard, whose call may leave
// the stream ACTIVE with the old shards for a moment before it turns
// UPDATING. Between two listings it waits 100 ms; a failed listing is
// tried again.
func Shards(ctx context.Context, kc kinesis.DescribeStreamAPIClient, sc ShardLister, name string, timeout time.Duration, done func([]stream.Shard) bool) ([]stream.Shard, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if _, err := Stream(ctx, kc, name, timeout); err != nil {
			return nil, err
		}
		shards, err := sc.ListShards(ctx)
		if err == nil && done(shards) {
			return shards, nil
		}
		if serr := backoff.Sleep(ctx, 100*time.Millisecond); serr != nil {
			return shards, fmt.Errorf("stream %s: the new shards not listed within %s: %w", name, timeout, errors.Join(err, serr))
		}
	}
}

// EnsureStream creates the stream with shards shards unless it exists (a
// stream that does is used as it is, whatever its shards; so is one a
// concurrent caller created), then waits until it is ACTIVE and returns its
// ARN. It calls DescribeStream, and CreateStream only for a missing stream.
func EnsureStream(ctx context.Context, kc StreamAPI, name string, shards int32, timeout time.Duration) (string, error) {
	_, err := kc.DescribeStream(ctx, &kinesis.DescribeStreamInput{StreamName: aws.String(name)})
	var nf *ktypes.ResourceNotFoundException
	if errors.As(err, &nf) {
		_, err = kc.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(shards)})
		var inUse *ktypes.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) {
			return "", fmt.Errorf("creating stream %s: %w", name, err)
		}
	} else if err != nil {
		return "", fmt.Errorf("stream %s: %w", name, err)
	}
	return Stream(ctx, kc, name, timeout)
}

// Table waits until the table is ACTIVE (DescribeTable). A table not found
// yet, as right after CreateTable, is waited for too; any other error ends
// the wait.
func Table(ctx context.Context, ddb dynamodb.DescribeTableAPIClient, name string, timeout time.Duration) error {
	w := dynamodb.NewTableExistsWaiter(ddb, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = MinDelay, MaxDelay
	})
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)}, timeout); err != nil {
		return fmt.Errorf("table %s not ACTIVE within %s: %w", name, timeout, err)
	}
	return nil
}
