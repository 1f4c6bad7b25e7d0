package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/internal/awswait"
	"github.com/kinactor/kinactor/internal/failure"
)

// failureFlags checks --on-failure and --failure-policy together: a spec
// (nil without --on-failure) and the policy (dead-letter with
// --on-failure unless another is asked for, which is an error; "" is the
// Config default, retry).
func failureFlags(onFailure, policy string) (*failure.Spec, kinactor.FailurePolicy, error) {
	p := kinactor.FailurePolicy(policy)
	switch p {
	case "", kinactor.PolicyRetry, kinactor.PolicyDeadLetter, kinactor.PolicyStopShard:
	default:
		return nil, "", fmt.Errorf("node: invalid --failure-policy %q (want retry, dead-letter or stop-shard)", policy)
	}
	if onFailure == "" {
		if p == kinactor.PolicyDeadLetter {
			return nil, "", errors.New("node: --failure-policy dead-letter needs --on-failure dir:PATH|kinesis:STREAM|dynamodb:TABLE")
		}
		return nil, p, nil
	}
	spec, err := failure.ParseSpec(onFailure)
	if err != nil {
		return nil, "", fmt.Errorf("node: --on-failure %w", err)
	}
	if p != "" && p != kinactor.PolicyDeadLetter {
		return nil, "", fmt.Errorf("node: --on-failure %q needs --failure-policy dead-letter, not %q (the destination receives dead-lettered batches)", onFailure, policy)
	}
	return &spec, kinactor.PolicyDeadLetter, nil
}

// failureCheckTimeout bounds the checks of a destination at start: the
// stream ACTIVE, the table created and ACTIVE.
const failureCheckTimeout = time.Minute

// failureDestination builds the destination of spec with clients of
// awsCfg, the node's: a directory as it is (created at the first write), a
// stream that must exist and be ACTIVE, a table created if missing.
func failureDestination(ctx context.Context, spec failure.Spec, awsCfg aws.Config) (kinactor.FailureDestination, error) {
	ctx, cancel := context.WithTimeout(ctx, failureCheckTimeout)
	defer cancel()
	switch spec.Kind {
	case failure.KindDir:
		return kinactor.FailureDir(spec.Target), nil
	case failure.KindKinesis:
		kc := kinesis.NewFromConfig(awsCfg)
		if _, err := awswait.Stream(ctx, kc, spec.Target, failureCheckTimeout); err != nil {
			return nil, fmt.Errorf("node: --on-failure %q: %w", spec.String(), err)
		}
		return kinactor.FailureStream(kc, spec.Target), nil
	case failure.KindDynamoDB:
		ddb := dynamoClient(awsCfg)
		d, err := kinactor.FailureTable(ctx, ddb, spec.Target)
		if err != nil {
			return nil, fmt.Errorf("node: --on-failure %q: %w", spec.String(), err)
		}
		return d, nil
	}
	return nil, fmt.Errorf("node: --on-failure %q: unknown kind", spec.String())
}

// setOnFailure makes cfg dead-letter to the destination of spec.
func setOnFailure(ctx context.Context, cfg *kinactor.Config, spec failure.Spec, awsCfg aws.Config, log *slog.Logger) error {
	d, err := failureDestination(ctx, spec, awsCfg)
	if err != nil {
		return err
	}
	cfg.DeadLetter = kinactor.DeadLetterTo(d, cfg.StreamName, log)
	log.Info("failed batches go to a failure destination", "on_failure", spec.String())
	return nil
}
