// Package kinactor is a Kinesis consumer built on actors: each owned shard
// is a supervised actor driving a pure state machine, user code is a
// processor (a Go interface, a plain function, or an actor), and progress
// and ownership live in a DynamoDB lease table where every write is fenced
// by a conditional expression.
//
// Start here: fill a Config, call NewNode with the processor's props
// (actors.FromProcessor for an actors.Processor, one per shard;
// actors.FuncProcessor for a function; actors.ActorProcessor for a
// protoactor actor speaking the protocol of package messages), then Start
// and, at the end, Stop. To run many nodes as one cluster, set Config.Cluster
// (cluster.Config). Endpoints, region and credentials come from the
// AWS SDK's usual environment (AWS_ENDPOINT_URL_KINESIS,
// AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION, ...), so pointing at real AWS
// changes only the environment.
package kinactor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/multistream"
)

// InitialPosition is where a shard without a checkpoint starts.
type InitialPosition string

// The initial positions: Kinesis's iterator types, also what the Java KCL
// writes as the checkpoint of a shard not read yet.
const (
	TrimHorizon InitialPosition = InitialPosition(ktypes.ShardIteratorTypeTrimHorizon)
	Latest      InitialPosition = InitialPosition(ktypes.ShardIteratorTypeLatest)
	AtTimestamp InitialPosition = InitialPosition(ktypes.ShardIteratorTypeAtTimestamp)
)

// Balance is how shards are spread over a cluster's members.
type Balance string

// Balances.
const (
	BalanceCount Balance = "count"
	BalanceLoad  Balance = "load"
)

// MaxParallelizationFactor is the highest Config.ParallelizationFactor.
const MaxParallelizationFactor = 100

// FailurePolicy says what happens to a batch the processor keeps failing.
type FailurePolicy string

// The failure policies.
const (
	PolicyRetry      FailurePolicy = "retry"       // deliver again with capped backoff, forever (default)
	PolicyDeadLetter FailurePolicy = "dead-letter" // after MaxProcessorAttempts, hand to DeadLetter and move on
	PolicyStopShard  FailurePolicy = "stop-shard"  // after MaxProcessorAttempts, stop the shard on this node
)

// KinesisAPI is the part of *kinesis.Client a node calls (Config.Kinesis);
// with FanOutConsumer it must be a *kinesis.Client (or have its consumer and
// SubscribeToShard calls too).
type KinesisAPI interface {
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, opts ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error)
	GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error)
}

// DynamoDBAPI is the part of *dynamodb.Client a node calls (Config.DynamoDB).
type DynamoDBAPI interface {
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, optFns ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

// StreamConfig is one stream of a multi-stream application.
type StreamConfig struct {
	Name string
	// InitialPosition of the stream's shards without a checkpoint
	// (TRIM_HORIZON or LATEST; AT_TIMESTAMP with Config.InitialTimestamp);
	// empty: Config.InitialPosition.
	InitialPosition InitialPosition
}

// MultiStream reports whether the config is of a multi-stream application.
func (c Config) MultiStream() bool { return len(c.Streams) > 0 || c.StreamsFunc != nil }

// checkStreams validates a set of streams; field names the setting.
func checkStreams(field string, streams []StreamConfig, ts time.Time) error {
	seen := map[string]bool{}
	for i, sc := range streams {
		f := fmt.Sprintf("%s[%d]", field, i)
		if !multistream.ValidName(sc.Name) {
			return bad(f+".Name", sc.Name, "a stream name is 1-128 characters of a-z, A-Z, 0-9, '_', '.', '-'")
		}
		if seen[sc.Name] {
			return bad(f+".Name", sc.Name, "listed twice")
		}
		seen[sc.Name] = true
		switch sc.InitialPosition {
		case "", TrimHorizon, Latest:
		case AtTimestamp:
			if ts.IsZero() {
				return bad("InitialTimestamp", ts, "required when a stream's InitialPosition is AT_TIMESTAMP")
			}
		default:
			return bad(f+".InitialPosition", sc.InitialPosition, "must be TRIM_HORIZON, LATEST or AT_TIMESTAMP")
		}
	}
	return nil
}

// ErrInvalidConfig is wrapped by every configuration error.
var ErrInvalidConfig = errors.New("kinactor: invalid config")

// Config configures a node. Zero values take the documented defaults.
type Config struct {
	// StreamName or StreamARN of the Kinesis stream (one is required,
	// unless Streams or StreamsFunc is set).
	StreamName string
	StreamARN  string
	// Streams, instead of StreamName, makes the node one of a multi-stream
	// application: one lease table and one fleet for every stream listed
	// (even one), with lease keys in the Java KCL's multi-stream form
	// account:stream:creationEpoch:shardId. StreamsFunc, when set, is
	// called every StreamSyncInterval (default 30s) for the current set
	// (and at start, when Streams is empty): a stream that leaves the set
	// is released gracefully and its rows are kept for a later return; a
	// stream that joins it is listed at once. A table holds either
	// single-stream or multi-stream rows: a node refuses to start on a
	// table holding the other kind.
	Streams            []StreamConfig
	StreamsFunc        func(ctx context.Context) ([]StreamConfig, error)
	StreamSyncInterval time.Duration
	// ApplicationName names the consumer application (required); it is the
	// lease table's name unless TableName is set.
	ApplicationName string
	TableName       string
	// WorkerID identifies this node in the lease table (leaseOwner).
	// Default: hostname plus a random suffix, unique per process.
	WorkerID string

	// InitialPosition for shards without a checkpoint: TRIM_HORIZON
	// (default), LATEST or AT_TIMESTAMP (with InitialTimestamp).
	InitialPosition  InitialPosition
	InitialTimestamp time.Time

	// MaxRecords per GetRecords call, 1..10000. Default 10000.
	MaxRecords int32
	// MinFetchInterval between GetRecords calls on one shard. Kinesis
	// allows 5 calls per second per shard. Default 200ms.
	MinFetchInterval time.Duration
	// IdleTimeBetweenReads after a GetRecords that returned nothing.
	// Default 500ms.
	IdleTimeBetweenReads time.Duration
	// ParentPollInterval while a child shard waits for its parents to
	// reach SHARD_END. Default 1s.
	ParentPollInterval time.Duration
	// ShardSyncInterval between listings of shards and leases by the
	// discovering node (the lowest-named live member). Default 10s.
	ShardSyncInterval time.Duration
	// FollowerSyncInterval between reads of the lease table by the other
	// members when nothing happens; gossip events (joins, deaths,
	// releases, new shards) trigger reads at once. Default 60s.
	FollowerSyncInterval time.Duration

	// CheckpointInterval: accepted checkpoints are written at most this
	// often (graceful stops and shard ends write at once). Default 30s.
	CheckpointInterval time.Duration
	// LeaseRenewInterval: a lease with no write for this long is renewed.
	// Default 30s, so an idle shard costs 120 writes an hour.
	LeaseRenewInterval time.Duration
	// LeaseExpiry: a lease held by another owner whose counter has not
	// moved for this long (by this node's monotonic clock) is taken.
	// Default 3 × LeaseRenewInterval. Must be at least twice
	// LeaseRenewInterval, so that one failed renewal does not expire a
	// live lease. A shard also stops delivering records on its own once
	// its last successful lease write is older than LeaseExpiry minus a
	// safety margin (self-fencing).
	LeaseExpiry time.Duration
	// StallTimeout: a shard that made no progress (no successful fetch,
	// no answer from its processor, or lease writes failing) for this
	// long is stalled: the node says in gossip that it cannot serve it,
	// so that the assignment moves it to another node, and /healthz
	// turns unhealthy. Default 30s.
	StallTimeout time.Duration
	// ProcessTimeout: a batch the processor has not answered after this
	// long counts as a failed delivery (the FuncProcessor's context is
	// cancelled, the processor actor is replaced and the failure policy
	// applies). Default 5m, for slow sinks; while a batch is within it the
	// shard is not stalled.
	ProcessTimeout time.Duration
	// ShutdownTimeout: how long a graceful stop waits for a processor's
	// reply to ShutdownRequested before releasing without it; Node.Stop
	// returns within it plus 2 s whatever DynamoDB, Kinesis or the
	// processor do (leases it could not release are left to expire and
	// logged). Default 10s.
	ShutdownTimeout time.Duration
	// StartTimeout bounds Start's checks of the table and the stream.
	// Default 30s.
	StartTimeout time.Duration

	// Backoff after Kinesis throttling (default 200ms doubling to 10s),
	// after other errors (default 250ms to 30s), and before delivering a
	// failed batch again (default 100ms to 10s).
	ThrottleBackoffBase, ThrottleBackoffCap   time.Duration
	ErrorBackoffBase, ErrorBackoffCap         time.Duration
	ProcessorBackoffBase, ProcessorBackoffCap time.Duration

	// FailurePolicy: PolicyRetry (default), PolicyDeadLetter or
	// PolicyStopShard; it applies after MaxProcessorAttempts failed
	// deliveries of one batch (default 5).
	FailurePolicy        FailurePolicy
	MaxProcessorAttempts int
	// DeadLetter receives batches under PolicyDeadLetter (required then),
	// and the records MaxRecordAge turns away (required with it). Use
	// DeadLetterTo for a failure destination (a directory, a stream, a
	// table) that receives the records themselves.
	DeadLetter actors.DeadLetterFunc

	// BisectOnError: a batch that fails (an error, a panic, a
	// ProcessTimeout) is split in halves and each half delivered on its
	// own, recursively, so that one poison record is isolated in about
	// log2(batch size) deliveries while the records around it are
	// processed. Splits do not count against MaxProcessorAttempts, which
	// then counts the failed deliveries of a record on its own (or named
	// in Result.Failed). Lambda's BisectBatchOnFunctionError.
	BisectOnError bool
	// MaxRecordAge: records that arrived in the stream longer ago than
	// this (by their ApproximateArrivalTimestamp) when they are due to be
	// delivered are not delivered: they go to DeadLetter (required) and
	// are counted in kinactor_records_expired_total. 0 (default): no
	// limit. Lambda's MaximumRecordAgeInSeconds.
	MaxRecordAge time.Duration
	// ParallelizationFactor: how many workers process one shard's records
	// at once, each the records of its own partition keys (a hash of the
	// user record's key, so KPL aggregates spread too), so every key keeps
	// its order. The checkpoint only moves to the highest position below
	// which every record was acknowledged. 1 (default) to 100; Lambda
	// allows 1 to 10. Honoured by FromProcessor (a Processor value per
	// worker) and FuncProcessor (the function is called concurrently for
	// different keys of a shard); an actor processor is one worker.
	ParallelizationFactor int

	// Balance is how shards are spread over the members: BalanceCount
	// (default: the number of shards, weighted by Cluster.Weight) or
	// BalanceLoad (their measured load: bytes/s read ÷ 2 MiB/s plus the
	// processor's busy fraction, smoothed, shared by gossip). With
	// BalanceLoad a shard stays where it is until its holder is over its
	// share by more than LoadThreshold (default 0.10); the holder then
	// hands at most MaxLoadMoves (default 2) shards per RebalanceInterval
	// (default 10s) to the least loaded members, gracefully, and a shard
	// that moved does not move again within LoadCoolDown (default 5m).
	Balance           Balance
	LoadThreshold     float64
	MaxLoadMoves      int
	RebalanceInterval time.Duration
	LoadCoolDown      time.Duration

	// Logger for the node; default slog.Default().
	Logger *slog.Logger
	// Registerer for the node's Prometheus collectors; default a fresh
	// registry of the node's own (never the global one).
	Registerer prometheus.Registerer

	// FanOutConsumer, when set, reads shards with enhanced fan-out
	// (SubscribeToShard) as this registered stream consumer (registered
	// if missing) instead of polling GetRecords.
	FanOutConsumer string

	// Cluster makes this node one of many sharing the stream by gossip.
	// Nil: a single node that takes every shard.
	Cluster *cluster.Config

	// AWS config; default config.LoadDefaultConfig (the SDK's environment).
	AWS *aws.Config
	// Kinesis and DynamoDB clients; default built from AWS. Set them to
	// inject faults in tests.
	Kinesis  KinesisAPI
	DynamoDB DynamoDBAPI
}

var tableName = regexp.MustCompile(`^[a-zA-Z0-9_.-]{3,255}$`)

// withDefaults returns a copy of c with defaults filled in.
func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.TableName == "" {
		c.TableName = c.ApplicationName
	}
	if c.WorkerID == "" {
		c.WorkerID = defaultWorkerID()
	}
	if c.InitialPosition == "" {
		c.InitialPosition = TrimHorizon
	}
	if c.MaxRecords == 0 {
		c.MaxRecords = 10000
	}
	def(&c.MinFetchInterval, 200*time.Millisecond)
	def(&c.IdleTimeBetweenReads, 500*time.Millisecond)
	def(&c.ParentPollInterval, time.Second)
	def(&c.ShardSyncInterval, 10*time.Second)
	def(&c.StreamSyncInterval, 30*time.Second)
	def(&c.FollowerSyncInterval, 60*time.Second)
	def(&c.CheckpointInterval, 30*time.Second)
	def(&c.LeaseRenewInterval, 30*time.Second)
	def(&c.LeaseExpiry, 3*c.LeaseRenewInterval)
	def(&c.StallTimeout, 30*time.Second)
	def(&c.ProcessTimeout, 5*time.Minute)
	def(&c.ShutdownTimeout, 10*time.Second)
	def(&c.StartTimeout, 30*time.Second)
	def(&c.ThrottleBackoffBase, 200*time.Millisecond)
	def(&c.ThrottleBackoffCap, 10*time.Second)
	def(&c.ErrorBackoffBase, 250*time.Millisecond)
	def(&c.ErrorBackoffCap, 30*time.Second)
	def(&c.ProcessorBackoffBase, 100*time.Millisecond)
	def(&c.ProcessorBackoffCap, 10*time.Second)
	if c.FailurePolicy == "" {
		c.FailurePolicy = PolicyRetry
	}
	if c.ParallelizationFactor == 0 {
		c.ParallelizationFactor = 1
	}
	if c.Balance == "" {
		c.Balance = BalanceCount
	}
	if c.MaxProcessorAttempts == 0 {
		c.MaxProcessorAttempts = 5
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	return c
}

func defaultWorkerID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "kinactor"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", h, os.Getpid(), hex.EncodeToString(b))
}

func bad(field string, value any, why string) error {
	return fmt.Errorf("%w: %s = %#v: %s", ErrInvalidConfig, field, value, why)
}

// Validate checks a config (after defaults) and returns an error naming the
// first bad field and its value.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.MultiStream() {
		if c.StreamName != "" || c.StreamARN != "" {
			return bad("StreamName", c.StreamName+c.StreamARN, "set either StreamName/StreamARN (one stream) or Streams/StreamsFunc (many), not both")
		}
		if err := checkStreams("Streams", c.Streams, c.InitialTimestamp); err != nil {
			return err
		}
		if c.FanOutConsumer != "" {
			return bad("FanOutConsumer", c.FanOutConsumer, "enhanced fan-out is not supported with many streams yet")
		}
		if c.StreamSyncInterval < time.Second {
			return bad("StreamSyncInterval", c.StreamSyncInterval.String(), "must be at least 1s")
		}
	} else if c.StreamName == "" && c.StreamARN == "" {
		return bad("StreamName", c.StreamName, "a stream name or StreamARN is required (or Streams for many)")
	}
	if c.ApplicationName == "" {
		return bad("ApplicationName", c.ApplicationName, "required (it names the lease table)")
	}
	if !tableName.MatchString(c.TableName) {
		return bad("TableName", c.TableName, "a DynamoDB table name is 3-255 characters of a-z, A-Z, 0-9, '_', '-', '.'")
	}
	switch c.InitialPosition {
	case TrimHorizon, Latest:
	case AtTimestamp:
		if c.InitialTimestamp.IsZero() {
			return bad("InitialTimestamp", c.InitialTimestamp, "required when InitialPosition is AT_TIMESTAMP")
		}
	default:
		return bad("InitialPosition", c.InitialPosition, "must be TRIM_HORIZON, LATEST or AT_TIMESTAMP")
	}
	if c.MaxRecords < 1 || c.MaxRecords > 10000 {
		return bad("MaxRecords", c.MaxRecords, "must be between 1 and 10000")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"MinFetchInterval", c.MinFetchInterval}, {"IdleTimeBetweenReads", c.IdleTimeBetweenReads},
		{"ParentPollInterval", c.ParentPollInterval}, {"ShardSyncInterval", c.ShardSyncInterval}, {"FollowerSyncInterval", c.FollowerSyncInterval},
		{"CheckpointInterval", c.CheckpointInterval}, {"LeaseRenewInterval", c.LeaseRenewInterval},
		{"LeaseExpiry", c.LeaseExpiry}, {"StallTimeout", c.StallTimeout}, {"ProcessTimeout", c.ProcessTimeout},
		{"ShutdownTimeout", c.ShutdownTimeout}, {"StartTimeout", c.StartTimeout},
		{"ThrottleBackoffBase", c.ThrottleBackoffBase}, {"ThrottleBackoffCap", c.ThrottleBackoffCap},
		{"ErrorBackoffBase", c.ErrorBackoffBase}, {"ErrorBackoffCap", c.ErrorBackoffCap},
		{"ProcessorBackoffBase", c.ProcessorBackoffBase}, {"ProcessorBackoffCap", c.ProcessorBackoffCap},
	} {
		if d.v < 0 {
			return bad(d.name, d.v.String(), "must not be negative")
		}
	}
	if c.MinFetchInterval < 200*time.Millisecond {
		return bad("MinFetchInterval", c.MinFetchInterval.String(), "Kinesis allows at most 5 GetRecords calls per second per shard: use 200ms or more")
	}
	if c.LeaseExpiry < 2*c.LeaseRenewInterval {
		return bad("LeaseExpiry", c.LeaseExpiry.String(), fmt.Sprintf("must be at least twice LeaseRenewInterval (%s), or one failed renewal would let a live lease be taken", c.LeaseRenewInterval))
	}
	if c.StallTimeout < time.Second {
		return bad("StallTimeout", c.StallTimeout.String(), "must be at least 1s (a shard is stalled after this long without progress)")
	}
	if c.ProcessTimeout < time.Second {
		return bad("ProcessTimeout", c.ProcessTimeout.String(), "must be at least 1s (a batch not answered this long is a failed delivery)")
	}
	for _, p := range [][3]any{
		{"ThrottleBackoffCap", c.ThrottleBackoffCap, c.ThrottleBackoffBase},
		{"ErrorBackoffCap", c.ErrorBackoffCap, c.ErrorBackoffBase},
		{"ProcessorBackoffCap", c.ProcessorBackoffCap, c.ProcessorBackoffBase},
	} {
		if p[1].(time.Duration) < p[2].(time.Duration) {
			return bad(p[0].(string), p[1].(time.Duration).String(), "must be at least its base "+p[2].(time.Duration).String())
		}
	}
	switch c.FailurePolicy {
	case PolicyRetry, PolicyStopShard:
	case PolicyDeadLetter:
		if c.DeadLetter == nil {
			return bad("DeadLetter", nil, "a dead-letter function is required with FailurePolicy dead-letter")
		}
	default:
		return bad("FailurePolicy", c.FailurePolicy, "must be retry, dead-letter or stop-shard")
	}
	if c.MaxProcessorAttempts < 1 {
		return bad("MaxProcessorAttempts", c.MaxProcessorAttempts, "must be at least 1")
	}
	if c.MaxRecordAge < 0 {
		return bad("MaxRecordAge", c.MaxRecordAge.String(), "must not be negative")
	}
	if c.MaxRecordAge > 0 && c.DeadLetter == nil {
		return bad("DeadLetter", nil, fmt.Sprintf("a dead-letter function (or DeadLetterTo a failure destination) is required with MaxRecordAge %s: the records it turns away go there", c.MaxRecordAge))
	}
	if c.ParallelizationFactor < 1 || c.ParallelizationFactor > MaxParallelizationFactor {
		return bad("ParallelizationFactor", c.ParallelizationFactor, fmt.Sprintf("must be between 1 and %d", MaxParallelizationFactor))
	}
	switch c.Balance {
	case BalanceCount, BalanceLoad:
	default:
		return bad("Balance", string(c.Balance), "must be count or load")
	}
	if c.LoadThreshold < 0 || c.LoadThreshold > 10 {
		return bad("LoadThreshold", c.LoadThreshold, "must be between 0 (default 0.10) and 10")
	}
	if c.MaxLoadMoves < 0 {
		return bad("MaxLoadMoves", c.MaxLoadMoves, "must not be negative (0: default 2)")
	}
	if c.RebalanceInterval < 0 {
		return bad("RebalanceInterval", c.RebalanceInterval.String(), "must not be negative")
	}
	if c.LoadCoolDown < 0 {
		return bad("LoadCoolDown", c.LoadCoolDown.String(), "must not be negative")
	}
	if cl := c.Cluster; cl != nil {
		if cl.BindAddr == "" && cl.Transport == nil {
			return bad("Cluster.BindAddr", cl.BindAddr, "a gossip host:port is required")
		}
		switch len(cl.SecretKey) {
		case 0, 16, 24, 32:
		default:
			return bad("Cluster.SecretKey", fmt.Sprintf("%d bytes", len(cl.SecretKey)), "must be 16, 24 or 32 bytes")
		}
		if cl.Weight < 0 {
			return bad("Cluster.Weight", cl.Weight, "must not be negative")
		}
		for _, d := range []struct {
			name string
			v    time.Duration
		}{{"Cluster.ProbeInterval", cl.ProbeInterval}, {"Cluster.ProbeTimeout", cl.ProbeTimeout}, {"Cluster.RejoinInterval", cl.RejoinInterval}} {
			if d.v < 0 {
				return bad(d.name, d.v.String(), "must not be negative")
			}
		}
	}
	return nil
}
