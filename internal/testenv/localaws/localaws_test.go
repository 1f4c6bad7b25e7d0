package localaws

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	kintypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/awswait"
)

func TestServers(t *testing.T) {
	SkipShort(t)
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()

			began := time.Now()
			s, err := Start(ctx, kind, Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Stop() })
			t.Logf("%s answered at %s after %v", kind, s.Endpoint, time.Since(began).Round(time.Millisecond))
			if !strings.HasPrefix(s.Endpoint, "http://127.0.0.1:") || s.Kind != kind {
				t.Fatalf("server = %+v", s)
			}

			env := &Env{}
			if kind.IsKinesis() {
				env.Kinesis = s
				exerciseKinesis(ctx, t, env.KinesisClient())
			} else {
				env.DynamoDB = s
				exerciseDynamoDB(ctx, t, env.DynamoDBClient())
			}

			stopBegan := time.Now()
			if err := s.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			t.Logf("%s stopped after %v (%v)", kind, time.Since(stopBegan).Round(time.Millisecond), s.ExitErr())
			if err := s.Stop(); err != nil {
				t.Fatalf("second Stop: %v", err)
			}
			select {
			case <-s.Exited():
			default:
				t.Fatal("process still running after Stop")
			}
			if c, err := net.DialTimeout("tcp", s.Endpoint[len("http://"):], time.Second); err == nil {
				c.Close()
				t.Fatalf("port of %s still open after Stop", s.Endpoint)
			}
		})
	}
}

func exerciseKinesis(ctx context.Context, t *testing.T, c *kinesis.Client) {
	t.Helper()
	name := aws.String("localaws-test")
	if _, err := c.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: name, ShardCount: aws.Int32(12)}); err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	// Create delays are zero, but creation is still asynchronous: the server
	// answers CREATING and flips to ACTIVE on a later tick. Wait as a client
	// of real Kinesis must.
	if _, err := awswait.Stream(ctx, c, *name, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	d, err := c.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: name})
	if err != nil {
		t.Fatalf("DescribeStreamSummary: %v", err)
	}
	if st := d.StreamDescriptionSummary.StreamStatus; st != kintypes.StreamStatusActive {
		t.Fatalf("stream status %s after the waiter, want ACTIVE", st)
	}
	out, err := c.ListShards(ctx, &kinesis.ListShardsInput{StreamName: name})
	if err != nil {
		t.Fatalf("ListShards: %v", err)
	}
	if len(out.Shards) != 12 {
		t.Fatalf("ListShards: %d shards, want 12", len(out.Shards))
	}
}

func exerciseDynamoDB(ctx context.Context, t *testing.T, c *dynamodb.Client) {
	t.Helper()
	table := aws.String("localaws-test")
	if _, err := c.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            table,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash}},
		BillingMode:          ddbtypes.BillingModePayPerRequest,
	}); err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	// CreateTable answers CREATING even with a zero create delay (dynalite
	// flips the table to ACTIVE on a later tick, and a PutItem before that
	// fails with ResourceNotFoundException): wait for ACTIVE.
	if err := awswait.Table(ctx, c, *table, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	put := &dynamodb.PutItemInput{
		TableName:           table,
		Item:                map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "lease-1"}},
		ConditionExpression: aws.String("attribute_not_exists(pk)"),
	}
	if _, err := c.PutItem(ctx, put); err != nil {
		t.Fatalf("first conditional PutItem: %v", err)
	}
	_, err := c.PutItem(ctx, put)
	var ccf *ddbtypes.ConditionalCheckFailedException
	if !errors.As(err, &ccf) {
		t.Fatalf("second conditional PutItem: got %v, want ConditionalCheckFailedException", err)
	}
}

func TestStartT(t *testing.T) {
	env := StartT(t, Kinesalite, Dynalite)
	ctx := context.Background()
	if _, err := env.KinesisClient().ListStreams(ctx, &kinesis.ListStreamsInput{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.DynamoDBClient().ListTables(ctx, &dynamodb.ListTablesInput{}); err != nil {
		t.Fatal(err)
	}
	if cfg := env.AWSConfig(); cfg.Region != "us-east-1" || cfg.BaseEndpoint != nil {
		t.Fatalf("AWSConfig: region %q endpoint %v", cfg.Region, cfg.BaseEndpoint)
	}
}

func TestStartErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Start(ctx, "nope", Options{}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown kind: err = %v", err)
	}
	_, err := Start(ctx, Kinesalite, Options{Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "make deps") || !strings.Contains(err.Error(), "kinesalite") {
		t.Errorf("missing install: err = %v", err)
	}
	t.Setenv(EnvDir, t.TempDir())
	if _, err := Start(ctx, Dynalite, Options{}); err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("missing install via $%s: err = %v", EnvDir, err)
	}
}

func TestTakenPort(t *testing.T) {
	// Occupy a port and ask for it: the server fails to bind and exits. A
	// fixed port is not retried, and the error says why.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	SkipShort(t)
	t.Cleanup(func() { l.Close() }) // after the parallel subtests
	port := l.Addr().(*net.TCPAddr).Port
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			s, err := Start(context.Background(), kind, Options{Port: port})
			if err == nil {
				s.Stop()
				t.Fatal("Start on a taken port succeeded")
			}
			t.Log(err)
			for _, want := range []string{string(kind), "before answering", "command: ", "log tail:"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
		})
	}
}

func TestModulePathOf(t *testing.T) {
	if got := modulePathOf([]byte("// x\nmodule github.com/kinactor/kinactor\n\ngo 1.26\n")); got != modulePath {
		t.Fatalf("modulePathOf = %q", got)
	}
}

// A server that dies under a test is reported as such, with how it died;
// one stopped by Stop is not.
func TestCrashedServer(t *testing.T) {
	SkipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Start(ctx, Kinesalite, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	if err := s.Crashed(); err != nil {
		t.Fatalf("a running server is reported crashed: %v", err)
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Exited():
	case <-ctx.Done():
		t.Fatal("the killed server did not exit")
	}
	err = s.Crashed()
	if err == nil || !strings.Contains(err.Error(), "exited by itself") || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Crashed after SIGKILL = %v", err)
	}
	_ = s.Stop()
	if err := s.Crashed(); err != nil {
		t.Fatalf("Crashed after Stop = %v", err)
	}

	s2, err := Start(ctx, Kinesalite, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = s2.Stop()
	if err := s2.Crashed(); err != nil {
		t.Fatalf("a server stopped by Stop is reported crashed: %v", err)
	}
}
