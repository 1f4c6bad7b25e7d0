package localaws

import (
	"context"
	"os"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

// EnvLog is the environment variable that, when set to a non-empty value,
// makes StartT copy the servers' output to the test binary's stderr.
const EnvLog = "KINACTOR_LOCALAWS_LOG"

// Env is a pair of local servers started for a test. Either may be nil.
type Env struct {
	Kinesis, DynamoDB *Server
}

// StartT starts a Kinesis server of kind kinesis and a DynamoDB server of
// kind dynamo, in parallel, and stops them in t.Cleanup. Either kind may be ""
// to skip that server. It calls t.Fatal if a server does not start.
func StartT(t testing.TB, kinesis, dynamo Kind) *Env {
	t.Helper()
	if kinesis != "" && !kinesis.IsKinesis() {
		t.Fatalf("localaws.StartT: %q is not a Kinesis server kind", kinesis)
	}
	if dynamo != "" && !dynamo.IsDynamoDB() {
		t.Fatalf("localaws.StartT: %q is not a DynamoDB server kind", dynamo)
	}
	var opts Options
	if os.Getenv(EnvLog) != "" {
		opts.Log = os.Stderr
	}
	ctx := context.Background()
	type result struct {
		s   *Server
		err error
	}
	start := func(k Kind) chan result {
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
	kch, dch := start(kinesis), start(dynamo)
	kr, dr := <-kch, <-dch
	env := &Env{Kinesis: kr.s, DynamoDB: dr.s}
	t.Cleanup(func() {
		for _, s := range []*Server{env.Kinesis, env.DynamoDB} {
			if err := s.Stop(); err != nil {
				t.Errorf("localaws: %v", err)
			}
		}
	})
	for _, err := range []error{kr.err, dr.err} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return env
}

// AWSConfig returns a config for the local servers: region us-east-1 and
// static dummy credentials. It sets no endpoint; the clients below do.
func (e *Env) AWSConfig() aws.Config { return localConfig() }

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
