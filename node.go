package kinactor

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/engine"
	"github.com/kinactor/kinactor/internal/gossip"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/metrics"
	"github.com/kinactor/kinactor/internal/multistream"
	"github.com/kinactor/kinactor/internal/shardfsm"
	"github.com/kinactor/kinactor/internal/stream"
)

// Sentinel errors of the node's life cycle.
var (
	ErrAlreadyStarted = errors.New("kinactor: node already started")
	ErrNotStarted     = errors.New("kinactor: node not started")
	// ErrLeasesLeft is wrapped by Stop's error when some leases could not
	// be released in time (DynamoDB unreachable, a processor that never
	// answered): they are left to expire, and the error names them.
	ErrLeasesLeft = errors.New("kinactor: leases left to expire")
)

// Node is one kinactor process's consumer: it takes leases, runs a shard
// actor per owned shard and a processor actor per shard actor.
type Node struct {
	cfg       Config
	processor *actor.Props
	metrics   *metrics.Metrics
	board     *engine.Board
	stream    string // the stream's name in single-stream mode (see streamName)

	mu       sync.Mutex
	started  bool
	stopping bool // Stop was called
	sys      *actor.ActorSystem
	coord    *actor.PID

	membership *gossip.Membership
	fanOut     *stream.FanOut
	// multi-stream: names resolved to ids, and the StreamsFunc loop
	resolver    *multistream.Resolver
	stopStreams context.CancelFunc
	streamsDone chan struct{}
	pauses      *engine.PauseWatch

	view clusterCache // the last ClusterStatus, for /cluster and /

	stopOnce sync.Once
	stopped  chan struct{} // closed when Stop has finished
	stopErr  error
}

// NewNode validates cfg and returns a node that will run processor for
// every shard it owns: props from actors.FromProcessor (an
// actors.Processor per shard; no protoactor in your code),
// actors.FuncProcessor (a function), actors.ActorProcessor (an actor), or
// your own.
func NewNode(cfg Config, processor *actor.Props) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if processor == nil {
		return nil, bad("processor", nil, "processor props are required")
	}
	cfg = cfg.withDefaults()
	n := &Node{cfg: cfg, processor: processor, metrics: metrics.New(cfg.Registerer), board: engine.NewBoard(), stream: streamName(cfg), stopped: make(chan struct{})}
	n.metrics.SetProgressSource(func() map[metrics.ShardLabels]float64 {
		return progressOf(n.board.Shards(), n.stream, time.Now())
	})
	return n, nil
}

// streamName is the name of the configured stream: StreamName, or the
// name part of StreamARN (after its last '/').
func streamName(cfg Config) string {
	if cfg.StreamName != "" {
		return cfg.StreamName
	}
	return cfg.StreamARN[strings.LastIndex(cfg.StreamARN, "/")+1:]
}

// progressOf is the seconds since progress of the shards on the board, by
// their metric labels (single: the stream's name for plain shard ids). Two
// keys with the same labels (a stream deleted and created again under its
// name) give one series, the staler.
func progressOf(views []engine.ShardView, single string, now time.Time) map[metrics.ShardLabels]float64 {
	out := make(map[metrics.ShardLabels]float64, len(views))
	for _, v := range views {
		var l metrics.ShardLabels
		l.Stream, l.Shard = engine.ShardLabels(v.ShardID, single)
		secs := now.Sub(v.LastProgress).Seconds()
		if old, ok := out[l]; !ok || secs > old {
			out[l] = secs
		}
	}
	return out
}

// appID identifies the application in gossip meta: members consuming
// another stream or writing another table are not ours.
func appID(table, stream string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(table))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(stream))
	return hex.EncodeToString(h.Sum(nil))
}

// WorkerID is the name this node writes as lease owner.
func (n *Node) WorkerID() string { return n.cfg.WorkerID }

// Start checks the lease table (creating it if missing) and the stream, then
// starts taking leases. It returns an error naming what is wrong when an
// endpoint is unreachable or the stream does not exist, within StartTimeout.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started {
		return ErrAlreadyStarted
	}
	cfg := n.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	var kin stream.API = cfg.Kinesis
	var ddb lease.DynamoAPI = cfg.DynamoDB
	if kin == nil || ddb == nil {
		awsCfg := cfg.AWS
		if awsCfg == nil {
			c, err := config.LoadDefaultConfig(ctx)
			if err != nil {
				return fmt.Errorf("kinactor: loading AWS config from the environment: %w", err)
			}
			awsCfg = &c
		}
		if kin == nil {
			kin = stream.NewSDKClient(*awsCfg)
		}
		if ddb == nil {
			ddb = dynamodb.NewFromConfig(*awsCfg, func(o *dynamodb.Options) {
				// Local DynamoDB servers omit the CRC32 header; real AWS sends it.
				if os.Getenv("AWS_ENDPOINT_URL_DYNAMODB") != "" || os.Getenv("AWS_ENDPOINT_URL") != "" || o.BaseEndpoint != nil {
					o.DisableValidateResponseChecksum = true
				}
			})
		}
	}
	log := cfg.Logger.With("worker", cfg.WorkerID)
	m := n.metrics
	// A request with no answer for LeaseExpiry/6 (1-10 s) is retried: a
	// blackholed route must not hold a lease write past the lease.
	attempt := min(max(cfg.LeaseExpiry/6, time.Second), 10*time.Second)
	store := lease.NewDynamoStore(ddb, cfg.TableName, lease.WithLogger(log), lease.WithAttemptTimeout(attempt), lease.WithOnWrite(func(op string, ok bool) {
		if op == lease.OpCreate || op == lease.OpDelete {
			res := "ok"
			if !ok {
				res = "error"
			}
			m.LeaseWrites.WithLabelValues(op, res).Inc()
		}
	}), lease.WithOnRead(func(op string, items int) {
		m.LeaseReads.WithLabelValues(op).Inc()
		m.LeaseReadItems.WithLabelValues(op).Add(float64(items))
	}))
	sc := stream.NewClient(kin, cfg.StreamName, cfg.StreamARN)
	var fetch engine.StreamAPI = sc

	if err := store.EnsureTable(ctx); err != nil {
		return fmt.Errorf("kinactor: lease table %q: %w", cfg.TableName, err)
	}
	if err := checkTableKind(ctx, store, cfg.TableName, cfg.MultiStream()); err != nil {
		return err
	}
	var set *multistream.Set
	var initial []multistream.Resolved
	if cfg.MultiStream() {
		d, ok := kin.(multistream.Describer)
		if !ok {
			return bad("Kinesis", fmt.Sprintf("%T", kin), "many streams need a client with DescribeStreamSummary (a *kinesis.Client)")
		}
		n.resolver = &multistream.Resolver{API: d}
		var err error
		if initial, err = n.resolveStreams(ctx); err != nil {
			return err
		}
		set = multistream.NewSet(kin)
		set.Update(initial)
		shards, err := set.ListShards(ctx)
		if err != nil {
			return fmt.Errorf("kinactor: %w", err)
		}
		log.Info("node starting", "streams", len(initial), "table", cfg.TableName, "shards", len(shards))
		fetch = set
	} else {
		shards, err := sc.ListShards(ctx)
		if err != nil {
			return fmt.Errorf("kinactor: stream %q: %w", cfg.StreamName+cfg.StreamARN, err)
		}
		log.Info("node starting", "stream", cfg.StreamName+cfg.StreamARN, "table", cfg.TableName, "shards", len(shards))
	}
	if cfg.FanOutConsumer != "" {
		api, ok := kin.(stream.FanOutAPI)
		if !ok {
			return bad("Kinesis", fmt.Sprintf("%T", kin), "enhanced fan-out needs a client with SubscribeToShard and the consumer calls (a *kinesis.Client)")
		}
		ref := cfg.StreamARN
		if ref == "" {
			ref = cfg.StreamName
		}
		fo := stream.NewFanOut(api, ref, cfg.FanOutConsumer)
		if err := fo.Register(ctx); err != nil {
			return fmt.Errorf("kinactor: enhanced fan-out consumer %q: %w", cfg.FanOutConsumer, err)
		}
		n.fanOut, fetch = fo, fo
	}

	deps := &engine.Deps{
		Owner:      cfg.WorkerID,
		Store:      store,
		Stream:     fetch,
		Processor:  n.processor,
		Machine:    n.machineConfig(),
		DeadLetter: cfg.DeadLetter,
		Metrics:    m,
		Logger:     log,
		Board:      n.board,
		StreamName: n.stream,
	}
	app := appID(cfg.TableName, cfg.StreamName+cfg.StreamARN)
	if set != nil {
		app = appID(cfg.TableName, "\x00multi-stream")
	}
	var meta cluster.Meta
	fwd := &eventForwarder{}
	var gs engine.Gossip
	if cl := cfg.Cluster; cl != nil {
		meta = cluster.Meta{Weight: cl.Weight, Version: Version, HTTP: cl.HTTPAddr}
		first := meta
		first.App = app
		ms, err := gossip.Start(gossip.Config{
			Name:           cfg.WorkerID,
			BindAddr:       cl.BindAddr,
			AdvertiseAddr:  cl.AdvertiseAddr,
			Seeds:          cl.Join,
			SecretKey:      cl.SecretKey,
			Label:          cl.Label,
			Meta:           first,
			RejoinInterval: cl.RejoinInterval,
			ProbeInterval:  cl.ProbeInterval,
			ProbeTimeout:   cl.ProbeTimeout,
			SuspicionMult:  cl.SuspicionMult,
			Logger:         log.With("component", "memberlist"),
			OnEvent:        fwd.forward,
			Transport:      cl.Transport,
			Watch:          earlyDetection(cl),
		})
		if err != nil {
			return fmt.Errorf("kinactor: cluster: %w", err)
		}
		n.membership, gs = ms, ms
	}
	deps.Identity = engine.SelfIdentity(n.gossipAddrLocked())
	// The pause watch ticks from before the first shard starts; its
	// ticker goroutine ends in stop (or below, if Start fails).
	n.pauses = engine.NewPauseWatch(0)
	n.pauses.Start()
	deps.Pauses = n.pauses
	quiet := slog.New(levelFilter{h: log.Handler(), min: slog.LevelWarn}).With("component", "protoactor")
	n.sys = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))
	var err error
	n.coord, err = n.sys.Root.SpawnNamed(engine.NewCoordinatorProps(engine.CoordinatorConfig{
		Deps:                 deps,
		Gossip:               gs,
		App:                  app,
		Meta:                 meta,
		InitialCheckpoint:    string(cfg.InitialPosition),
		SyncInterval:         cfg.ShardSyncInterval,
		FollowerSyncInterval: cfg.FollowerSyncInterval,
		LeaseExpiry:          cfg.LeaseExpiry,
		StallTimeout:         cfg.StallTimeout,
		LoadAware:            cfg.Balance == BalanceLoad,
		LoadThreshold:        cfg.LoadThreshold,
		MaxLoadMoves:         cfg.MaxLoadMoves,
		RebalanceInterval:    cfg.RebalanceInterval,
		LoadCoolDown:         cfg.LoadCoolDown,
		Streams:              set,
		Initial:              initial,
	}), "coordinator")
	if err != nil {
		if n.membership != nil {
			_ = n.membership.Shutdown()
		}
		n.pauses.Stop()
		return fmt.Errorf("kinactor: spawning the coordinator: %w", err)
	}
	fwd.set(n.sys, n.coord, n.membership)
	if set != nil && cfg.StreamsFunc != nil {
		loopCtx, stop := context.WithCancel(context.Background())
		n.stopStreams = stop
		n.streamsDone = make(chan struct{})
		go n.followStreams(loopCtx, initial, log)
	}
	n.started = true
	return nil
}

// checkTableKind refuses a table holding rows of the other kind: plain
// shard ids for a multi-stream application, multi-stream keys for a
// single-stream one (one row is enough to tell; the Java KCL refuses such
// a mix too, and reading one kind as the other would make new rows at the
// initial position).
func checkTableKind(ctx context.Context, store lease.Store, table string, multi bool) error {
	rows, err := store.List(ctx)
	if err != nil {
		return fmt.Errorf("kinactor: lease table %q: %w", table, err)
	}
	for _, l := range rows {
		isMulti := multistream.IsKey(l.Key)
		switch {
		case multi && !isMulti:
			return fmt.Errorf("%w: lease table %q holds the single-stream row %q, and this node is configured for many streams (Streams): use another table (TableName) or one stream (StreamName)", ErrInvalidConfig, table, l.Key)
		case !multi && isMulti:
			return fmt.Errorf("%w: lease table %q holds the multi-stream row %q, and this node is configured for one stream (StreamName): use another table (TableName) or Streams", ErrInvalidConfig, table, l.Key)
		}
	}
	return nil
}

// streamsNow is the configured set: StreamsFunc's answer, or Streams.
func (n *Node) streamsNow(ctx context.Context) ([]StreamConfig, error) {
	if n.cfg.StreamsFunc == nil {
		return n.cfg.Streams, nil
	}
	list, err := n.cfg.StreamsFunc(ctx)
	if err != nil {
		return nil, fmt.Errorf("kinactor: StreamsFunc: %w", err)
	}
	if err := checkStreams("StreamsFunc()", list, n.cfg.InitialTimestamp); err != nil {
		return nil, err
	}
	return list, nil
}

// resolveStreams reads the configured set and resolves each stream's id.
func (n *Node) resolveStreams(ctx context.Context) ([]multistream.Resolved, error) {
	list, err := n.streamsNow(ctx)
	if err != nil {
		return nil, err
	}
	specs := make([]multistream.Spec, len(list))
	for i, sc := range list {
		specs[i] = multistream.Spec{Name: sc.Name, InitialPosition: string(sc.InitialPosition)}
	}
	n.resolver.Forget(specs)
	out, err := n.resolver.Resolve(ctx, specs)
	if err != nil {
		return nil, fmt.Errorf("kinactor: %w", err)
	}
	return out, nil
}

// followStreams asks StreamsFunc for the set every StreamSyncInterval and
// tells the coordinator when it changed. A failed call or an unknown
// stream keeps the current set (logged): a transient error must not
// release every shard.
func (n *Node) followStreams(ctx context.Context, cur []multistream.Resolved, log *slog.Logger) {
	defer close(n.streamsDone)
	t := time.NewTicker(n.cfg.StreamSyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		op, cancel := context.WithTimeout(ctx, n.cfg.StreamSyncInterval)
		next, err := n.resolveStreams(op)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("following the set of streams: keeping the current one", "err", err)
			}
			continue
		}
		if sameStreams(cur, next) {
			continue
		}
		log.Info("the set of streams changed", "from", streamNames(cur), "to", streamNames(next))
		cur = next
		n.sys.Root.Send(n.coord, engine.StreamsChanged{Streams: next})
	}
}

func sameStreams(a, b []multistream.Resolved) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func streamNames(rs []multistream.Resolved) string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.Name
	}
	return strings.Join(names, ",")
}

// earlyDetection: on with the network transport, off with a custom one
// unless asked for (cluster.Config.EarlyDetection).
func earlyDetection(cl *cluster.Config) bool {
	if cl.EarlyDetection != nil {
		return *cl.EarlyDetection
	}
	return cl.Transport == nil
}

// Version is kinactor's version, gossiped in node meta.
const Version = "0.1.0-dev"

// eventForwarder turns membership events into coordinator messages. It is
// called from the membership's own goroutine, never under memberlist's lock,
// so reading the member list here is safe.
type eventForwarder struct {
	mu  sync.Mutex
	sys *actor.ActorSystem
	pid *actor.PID
	ms  *gossip.Membership
}

func (f *eventForwarder) set(sys *actor.ActorSystem, pid *actor.PID, ms *gossip.Membership) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sys, f.pid, f.ms = sys, pid, ms
}

func (f *eventForwarder) forward(ev gossip.Event) {
	f.mu.Lock()
	sys, pid, ms := f.sys, f.pid, f.ms
	f.mu.Unlock()
	if pid == nil {
		return // before the coordinator exists: it reads the view when it starts
	}
	msg := engine.MembershipChanged{Event: ev}
	if ev.Kind != gossip.MessageReceived {
		msg.Members = ms.Members()
	}
	sys.Root.Send(pid, msg)
}

func (n *Node) machineConfig() shardfsm.Config {
	c := n.cfg
	pos := stream.Position{Type: stream.PositionType(c.InitialPosition)}
	if c.InitialPosition == AtTimestamp {
		pos.Timestamp = c.InitialTimestamp
	}
	policy := map[FailurePolicy]shardfsm.FailurePolicy{PolicyRetry: shardfsm.RetryForever, PolicyDeadLetter: shardfsm.DeadLetter, PolicyStopShard: shardfsm.StopShard}[c.FailurePolicy]
	return shardfsm.Config{
		StreamName:           streamNameOf(c.StreamName, c.StreamARN),
		MaxRecords:           c.MaxRecords,
		MinFetchInterval:     c.MinFetchInterval,
		IdleTimeBetweenReads: c.IdleTimeBetweenReads,
		ParentPollInterval:   c.ParentPollInterval,
		RenewInterval:        c.LeaseRenewInterval,
		CheckpointInterval:   c.CheckpointInterval,
		ShutdownTimeout:      c.ShutdownTimeout,
		ThrottleBackoff:      backoff.Policy{Base: c.ThrottleBackoffBase, Cap: c.ThrottleBackoffCap},
		ErrorBackoff:         backoff.Policy{Base: c.ErrorBackoffBase, Cap: c.ErrorBackoffCap},
		ProcessorBackoff:     backoff.Policy{Base: c.ProcessorBackoffBase, Cap: c.ProcessorBackoffCap},
		MaxProcessorAttempts: c.MaxProcessorAttempts,
		FailurePolicy:        policy,
		InitialPosition:      pos,
		LeaseExpiry:          c.LeaseExpiry,
		StallTimeout:         c.StallTimeout,
		ProcessTimeout:       c.ProcessTimeout,
		BisectOnError:        c.BisectOnError,
		MaxRecordAge:         c.MaxRecordAge,
		Workers:              c.ParallelizationFactor,
	}
}

// Stop stops the node gracefully: every shard stops fetching, its processor
// finishes the batch in hand and checkpoints, and the lease is released.
// It returns within ShutdownTimeout plus 2 s whatever DynamoDB, Kinesis or
// the processors do: shards that could not be released by then are stopped
// without releasing (their leases expire, and the error, wrapping
// ErrLeasesLeft, names them). If ctx ends first, the same happens at once
// and ctx's error is returned. Stop may be called more than once and from
// several goroutines; later calls wait for the first (or for their own
// ctx) and return its result.
func (n *Node) Stop(ctx context.Context) error {
	n.mu.Lock()
	started := n.started
	n.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	n.stopOnce.Do(func() {
		n.mu.Lock()
		n.stopping = true
		n.mu.Unlock()
		go n.stop(ctx)
	})
	select {
	case <-n.stopped:
		return n.stopErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (n *Node) stop(ctx context.Context) {
	defer close(n.stopped)
	began := time.Now()
	if n.stopStreams != nil {
		n.stopStreams() // no change of streams during the stop
		<-n.streamsDone
	}
	// The shards get ShutdownTimeout for their processors' last checkpoint
	// and a second more for the writes; the rest of the 2 s margin is for
	// leaving the cluster. The coordinator gossips that this node drains.
	done := make(chan []string, 1)
	n.sys.Root.Send(n.coord, engine.StopAll{Done: done, Timeout: n.cfg.ShutdownTimeout + time.Second})
	select {
	case left := <-done:
		if len(left) > 0 {
			n.stopErr = fmt.Errorf("%w: %s", ErrLeasesLeft, strings.Join(left, ", "))
		}
	case <-ctx.Done():
		n.stopErr = fmt.Errorf("kinactor: graceful stop interrupted, %w: %w", ErrLeasesLeft, ctx.Err())
	}
	if ms := n.membership; ms != nil {
		leave := min(max(began.Add(n.cfg.ShutdownTimeout+1800*time.Millisecond).Sub(time.Now()), 200*time.Millisecond), 2*time.Second)
		if err := ms.Leave(leave); err != nil {
			n.cfg.Logger.Warn("leaving the cluster", "err", err)
		}
	}
	// Stop the coordinator (and with it any shard actor still running);
	// protoactor's Shutdown stops no actors by itself.
	n.sys.Root.Stop(n.coord)
	n.sys.Shutdown()
	n.pauses.Stop()
	if n.fanOut != nil {
		n.fanOut.Close()
	}
}

// GossipAddr is the gossip "host:port" in use ("" without a cluster).
func (n *Node) GossipAddr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.gossipAddrLocked()
}

func (n *Node) gossipAddrLocked() string {
	if n.membership == nil {
		return ""
	}
	return n.membership.Addr()
}

// NodeStatus is what /status reports: this node's name (as written in
// leaseOwner), the members it sees, and the shards it owns with their state.
type NodeStatus struct {
	Node    string           `json:"node"`
	Members []cluster.Member `json:"members"`
	Shards  []ShardStatus    `json:"shards"`
	// Unhealthy lists the services this node cannot use ("kinesis",
	// "dynamodb", "processor"); Refused the shards it says it cannot
	// serve. Both are gossiped, and the assignment avoids them.
	Unhealthy []string `json:"unhealthy,omitempty"`
	Refused   []string `json:"refused,omitempty"`
	// Maps is the size of each map the node's ownership machine keeps
	// ("leases" is its copy of the table's rows): for operators and chaos
	// runs, which check that none grows past the rows and members it
	// serves.
	Maps map[string]int `json:"ownership_maps,omitempty"`
	// Moves: this node's ownership changes of the last 15 minutes (at
	// most 200), oldest first.
	Moves []Move `json:"moves"`
}

// ShardStatus is one shard this node owns.
type ShardStatus struct {
	// Stream is the stream's name; ShardID the Kinesis shard id; Key the
	// lease key, set only when it differs from ShardID (multi-stream mode:
	// account:stream:creationEpoch:shardId).
	Stream  string `json:"stream"`
	ShardID string `json:"shard"`
	Key     string `json:"key,omitempty"`
	// State is the shard actor's state (WaitingOnParentShards,
	// Initializing, Processing, AwaitingShutdownAck, ShuttingDown, …).
	State      string `json:"state"`
	Checkpoint string `json:"checkpoint"`
	// MillisBehindLatest is the lag the last fetch reported.
	MillisBehindLatest int64 `json:"millis_behind_latest"`
	// SinceProgress is how long ago (seconds) the shard last made
	// progress: a successful fetch or a successful processor answer.
	SinceProgress float64 `json:"since_progress_seconds"`
	// Stalled: no progress for StallTimeout; StallCause says on what:
	// "kinesis", "dynamodb", "processor" or "failure-destination" (the
	// dead-letter handler keeps failing: nothing is checkpointed past).
	Stalled    bool   `json:"stalled,omitempty"`
	StallCause string `json:"stall_cause,omitempty"`
	// Load is what the shard's reads carry and how busy its processor is,
	// smoothed over a 30 s half-life (the assignment's weight).
	Load ShardLoad `json:"load"`
}

// ShardLoad is a shard's measured load, exponentially smoothed (half-life
// 30 s). Measured is false for the first sampling interval (5 s).
type ShardLoad struct {
	RecordsPerSec float64 `json:"records_per_second"`
	BytesPerSec   float64 `json:"bytes_per_second"`
	// Busy: the fraction of wall time the processor spent on the shard's
	// batches (above 1 with ParallelizationFactor > 1).
	Busy     float64 `json:"busy"`
	Measured bool    `json:"measured"`
	// Weight is the load as the assignment weighs it: bytes/s ÷ 2 MiB/s
	// (one shard's read limit) + Busy.
	Weight float64 `json:"weight"`
}

// Move is one ownership change on a node.
type Move struct {
	At time.Time `json:"at"`
	// Stream, Shard and Key as in ShardStatus: the stream's name, the
	// Kinesis shard id, the lease key when it differs.
	Stream string `json:"stream"`
	Shard  string `json:"shard"`
	Key    string `json:"key,omitempty"`
	// Kind: "take", "handoff" (began handing the shard to Peer),
	// "release" (released it) or "lost" (fenced, or another owner seen).
	Kind string `json:"kind"`
	// Reason: for a take free, released, dead_owner, expired or own; for a
	// handoff assignment or stopping; else the shard's outcome.
	Reason string `json:"reason"`
	Peer   string `json:"peer,omitempty"`
}

// Members returns the members this node sees (itself alone when it runs
// without a cluster).
func (n *Node) Members() []cluster.Member {
	n.mu.Lock()
	ms := n.membership
	n.mu.Unlock()
	if ms == nil {
		return []cluster.Member{{Name: n.cfg.WorkerID, State: cluster.StateAlive}}
	}
	return ms.Members()
}

// Status returns what the node owns, with each shard's state.
func (n *Node) Status(ctx context.Context) (NodeStatus, error) {
	st, _, err := n.status(ctx)
	return st, err
}

// status is Status with the ownership machine's copy of the lease table
// (for ClusterStatus).
func (n *Node) status(ctx context.Context) (NodeStatus, []lease.Lease, error) {
	n.mu.Lock()
	started := n.started
	n.mu.Unlock()
	st := NodeStatus{Node: n.cfg.WorkerID, Members: n.Members(), Shards: []ShardStatus{}}
	if !started {
		return st, nil, ErrNotStarted
	}
	select {
	case <-n.stopped:
		return st, nil, nil
	default:
	}
	reply := make(chan engine.Status, 1)
	n.sys.Root.Send(n.coord, engine.StatusRequest{Reply: reply})
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case s := <-reply:
		for _, sh := range s.Shards {
			st.Shards = append(st.Shards, shardStatusOf(sh, n.stream))
		}
		st.Moves = make([]Move, 0, len(s.Moves))
		for _, mv := range s.Moves {
			st.Moves = append(st.Moves, moveOf(mv, n.stream))
		}
		st.Unhealthy, st.Refused, st.Maps = s.Unhealthy, s.Refused, s.Maps
		return st, s.Rows, nil
	case <-ctx.Done():
		return st, nil, ctx.Err()
	case <-t.C:
		return st, nil, errors.New("kinactor: status: coordinator did not answer within 5s")
	}
}

// shortKey is the stream, shard id and (when it differs from the shard
// id) lease key under which status shows key; single is the stream's
// name in single-stream mode.
func shortKey(key, single string) (stream, shard, long string) {
	stream, shard = engine.ShardLabels(key, single)
	if shard != key {
		long = key
	}
	return stream, shard, long
}

// shardStatusOf is the /status row of an engine status row (keyed by lease
// key).
func shardStatusOf(sh engine.ShardStatus, single string) ShardStatus {
	l := sh.Load
	ss := ShardStatus{
		State: sh.State, Checkpoint: sh.Checkpoint,
		MillisBehindLatest: sh.MillisBehindLatest, SinceProgress: sh.SinceProgress,
		Stalled: sh.Stalled, StallCause: sh.StallCause,
		Load: ShardLoad{RecordsPerSec: l.RecordsPerSec, BytesPerSec: l.BytesPerSec, Busy: l.Busy, Measured: l.Measured, Weight: l.Weight()},
	}
	ss.Stream, ss.ShardID, ss.Key = shortKey(sh.ShardID, single)
	return ss
}

// moveOf is the /status move of an engine move (whose Shard is the lease
// key).
func moveOf(mv engine.Move, single string) Move {
	m := Move{At: mv.At, Kind: mv.Kind, Reason: mv.Reason, Peer: mv.Peer}
	m.Stream, m.Shard, m.Key = shortKey(mv.Shard, single)
	return m
}

// LeaseKey is the lease key of a /status row: Key, or ShardID when they
// are the same (and in the rows of nodes that predate Key).
func (s ShardStatus) LeaseKey() string { return cmp.Or(s.Key, s.ShardID) }

// Handler serves the node's HTTP endpoints:
//
//	/metrics  the node's Prometheus registry (when it gathers)
//	/healthz  200 while the node runs and none of its shards is stalled
//	          (no progress for StallTimeout), else 503 naming them
//	/readyz   200 from the end of Start until Stop begins, else 503
//	/status   the node's NodeStatus as JSON
//	/cluster  the whole cluster's ClusterStatus as JSON (built at most
//	          once a second)
//	/         the status page: the cluster view, refreshed every second
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", n.metrics.Handler(n.healthy))
	mux.HandleFunc("/{$}", n.servePage)
	mux.HandleFunc("/cluster", n.serveCluster)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := n.ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := n.Status(r.Context())
		w.Header().Set("Content-Type", "application/json")
		if err != nil && !errors.Is(err, ErrNotStarted) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(st)
	})
	return mux
}

// ready: Start has returned and Stop has not begun.
func (n *Node) ready() error {
	n.mu.Lock()
	started, stopping := n.started, n.stopping
	n.mu.Unlock()
	switch {
	case !started:
		return ErrNotStarted
	case stopping:
		return errors.New("kinactor: node stopping")
	}
	return nil
}

func (n *Node) healthy() error {
	n.mu.Lock()
	started := n.started
	n.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	select {
	case <-n.stopped:
		return errors.New("kinactor: node stopped")
	default:
	}
	if st := n.board.Stalled(); len(st) > 0 {
		return fmt.Errorf("kinactor: stalled shards: %s", strings.Join(st, ", "))
	}
	return nil
}

// levelFilter drops records below min (protoactor logs chatty info lines).
type levelFilter struct {
	h   slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.h.Enabled(ctx, l)
}
func (f levelFilter) Handle(ctx context.Context, r slog.Record) error { return f.h.Handle(ctx, r) }
func (f levelFilter) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFilter{h: f.h.WithAttrs(a), min: f.min}
}
func (f levelFilter) WithGroup(g string) slog.Handler {
	return levelFilter{h: f.h.WithGroup(g), min: f.min}
}

// streamNameOf is the stream's name given its name or ARN
// (arn:aws:kinesis:region:account:stream/NAME).
func streamNameOf(name, arn string) string {
	if name != "" || arn == "" {
		return name
	}
	if i := strings.LastIndexByte(arn, '/'); i >= 0 {
		return arn[i+1:]
	}
	return arn
}
