package localaws

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kinactor/kinactor/internal/awswait"
)

// EnvLog is the environment variable that, when set to a non-empty value,
// makes StartT copy the servers' output to the test binary's stderr.
const EnvLog = "KINACTOR_LOCALAWS_LOG"

// Env is a pair of local servers. Either may be nil.
type Env struct {
	Kinesis, DynamoDB *Server
}

// StartEnv starts a Kinesis server of kind kinesis (with kopts) and a
// DynamoDB server of kind dynamo (with dopts) in parallel; either kind may be
// "" for none. On an error the server that did start is stopped again, and
// the error says why each failed.
func StartEnv(ctx context.Context, kinesis Kind, kopts Options, dynamo Kind, dopts Options) (*Env, error) {
	if kinesis != "" && !kinesis.IsKinesis() {
		return nil, fmt.Errorf("localaws: %q is not a Kinesis server kind", kinesis)
	}
	if dynamo != "" && !dynamo.IsDynamoDB() {
		return nil, fmt.Errorf("localaws: %q is not a DynamoDB server kind", dynamo)
	}
	type result struct {
		s   *Server
		err error
	}
	start := func(k Kind, opts Options) chan result {
		ch := make(chan result, 1)
		if k == "" {
			ch <- result{}
			return ch
		}
		go func() {
			s, err := Start(ctx, k, opts)
			ch <- result{s, err}
		}()
		return ch
	}
	kch, dch := start(kinesis, kopts), start(dynamo, dopts)
	kr, dr := <-kch, <-dch
	env := &Env{Kinesis: kr.s, DynamoDB: dr.s}
	if err := errors.Join(kr.err, dr.err); err != nil {
		return nil, errors.Join(err, env.Stop())
	}
	return env, nil
}

// Stop stops both servers (waiting for each to exit). It is safe on a nil
// Env and more than once.
func (e *Env) Stop() error {
	if e == nil {
		return nil
	}
	return errors.Join(e.Kinesis.Stop(), e.DynamoDB.Stop()) // Server.Stop is nil-safe
}

// SkipShort skips the test under `go test -short`, which starts no process:
// no local server (StartT calls it) and no node process.
func SkipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts local servers or node processes; skipped with -short")
	}
}

// StartT starts a Kinesis server of kind kinesis and a DynamoDB server of
// kind dynamo, in parallel, and stops them in t.Cleanup. Either kind may be ""
// to skip that server. It skips the test under -short (SkipShort) and calls
// t.Fatal if a server does not start.
func StartT(t testing.TB, kinesis, dynamo Kind) *Env {
	t.Helper()
	SkipShort(t)
	var opts Options
	if os.Getenv(EnvLog) != "" {
		opts.Log = os.Stderr
	}
	env, err := StartEnv(context.Background(), kinesis, opts, dynamo, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A server that died under the test explains its failure: say so
		// with the server's own last words.
		for _, s := range []*Server{env.Kinesis, env.DynamoDB} {
			if err := s.Crashed(); err != nil {
				t.Error(err)
			}
		}
		if err := env.Stop(); err != nil {
			t.Errorf("localaws: %v", err)
		}
	})
	return env
}

// AWSConfig returns a config for the local servers: region us-east-1 and
// static dummy credentials. It sets no endpoint; the clients below do.
func (e *Env) AWSConfig() aws.Config { return localConfig() }

// Environ is the environment that points the AWS SDK of a child process at
// e's servers and nowhere else, as KEY=value to append to os.Environ() (an
// empty value overrides the parent's): the endpoints of the servers e has,
// region us-east-1, the dummy credentials, and no session token, profile,
// general endpoint or instance metadata.
func (e *Env) Environ() []string {
	var env []string
	if e.Kinesis != nil {
		env = append(env, "AWS_ENDPOINT_URL_KINESIS="+e.Kinesis.Endpoint)
	}
	if e.DynamoDB != nil {
		env = append(env, "AWS_ENDPOINT_URL_DYNAMODB="+e.DynamoDB.Endpoint)
	}
	return append(env,
		"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local",
		"AWS_SESSION_TOKEN=", "AWS_PROFILE=", "AWS_ENDPOINT_URL=", "AWS_EC2_METADATA_DISABLED=true")
}

// KinesisClient returns a Kinesis client for e.Kinesis, with the SDK's default
// retries.
func (e *Env) KinesisClient() *kinesis.Client {
	if e.Kinesis == nil {
		panic("localaws: Env has no Kinesis server")
	}
	return kinesis.NewFromConfig(e.AWSConfig(), func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String(e.Kinesis.Endpoint)
	})
}

// DynamoDBClient returns a DynamoDB client for e.DynamoDB, with the SDK's
// default retries and response checksum validation off (DynamoDB Local omits
// the CRC32 header).
func (e *Env) DynamoDBClient() *dynamodb.Client {
	if e.DynamoDB == nil {
		panic("localaws: Env has no DynamoDB server")
	}
	return dynamodb.NewFromConfig(e.AWSConfig(), func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(e.DynamoDB.Endpoint)
		o.DisableValidateResponseChecksum = true
	})
}

// waitT bounds the waits of the helpers below.
const waitT = 60 * time.Second

// CreateStreamT creates a stream with shards shards (a stream of that name
// must not exist yet), waits until it is ACTIVE and returns its ARN; it
// calls t.Fatal on an error.
func CreateStreamT(t testing.TB, kc *kinesis.Client, name string, shards int32) string {
	t.Helper()
	if _, err := kc.CreateStream(context.Background(), &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(shards)}); err != nil {
		t.Fatalf("CreateStream %s: %v", name, err)
	}
	return WaitStreamT(t, kc, name)
}

// WaitStreamT waits until the stream is ACTIVE (awswait.Stream) and returns
// its ARN; it calls t.Fatal on an error.
func WaitStreamT(t testing.TB, kc *kinesis.Client, name string) string {
	t.Helper()
	arn, err := awswait.Stream(context.Background(), kc, name, waitT)
	if err != nil {
		t.Fatal(err)
	}
	return arn
}

// WaitTableT waits until the table is ACTIVE (awswait.Table); it calls
// t.Fatal on an error.
func WaitTableT(t testing.TB, ddb *dynamodb.Client, table string) {
	t.Helper()
	if err := awswait.Table(context.Background(), ddb, table, waitT); err != nil {
		t.Fatal(err)
	}
}
