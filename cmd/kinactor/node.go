package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/failure"
	"github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/messages"
)

// nodeReady is what `kinactor node` prints when ready and writes to
// --ready-file.
type nodeReady struct {
	Node   string `json:"node"`
	Gossip string `json:"gossip"` // "" without --bind
	HTTP   string `json:"http"`   // "" without --http
	PID    int    `json:"pid"`
}

// exitOnSecondSignal is replaced in tests.
var exitOnSecondSignal = func() { os.Exit(130) }

// runNode implements `kinactor node`: one cluster member consuming a stream
// with the ledger or log processor until SIGINT/SIGTERM, then a graceful
// stop (a second signal exits at once with status 130).
func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	app := fs.String("app", "", "application name; also the lease table's name (required)")
	streamName := fs.String("stream", "", "Kinesis stream name; comma-separated names consume many streams with one lease table (KCL multi-stream keys) (this or --stream-file is required)")
	streamFile := fs.String("stream-file", "", "file listing the streams to consume, one per line with an optional initial position (NAME [TRIM_HORIZON|LATEST|AT_TIMESTAMP]), read again every --stream-sync-interval: a stream removed is released gracefully, its rows kept")
	multiStream := fs.Bool("multi-stream", false, "KCL multi-stream lease keys even for a single --stream")
	streamSync := fs.Duration("stream-sync-interval", 0, "with --stream-file: how often the file is read again (0 = default 30s)")
	bind := fs.String("bind", "", "gossip host:port (TCP and UDP; port 0 picks one); empty runs a single node without gossip")
	advertise := fs.String("advertise", "", "gossip host:port other members reach this node at (default: --bind's)")
	join := fs.String("join", "", "comma-separated gossip host:port of seed members")
	httpAddr := fs.String("http", "", "host:port to serve /metrics, /healthz, /readyz, /status, /cluster (the whole cluster as JSON) and the status page / on (port 0 picks one)")
	processor := fs.String("processor", "ledger", "processor: ledger (append every record to --ledger-dir/NAME.jsonl, fsynced before the ack) or log (log each batch)")
	ledgerDir := fs.String("ledger-dir", "ledger", "directory of the ledger processor's files")
	initial := fs.String("initial-position", string(kinactor.TrimHorizon), "where shards without a checkpoint start: TRIM_HORIZON, LATEST or AT_TIMESTAMP")
	timestamp := fs.String("timestamp", "", "RFC 3339 time for --initial-position AT_TIMESTAMP")
	name := fs.String("name", "", "node name: lease owner and gossip name, unique per process (default hostname-pid-random)")
	weight := fs.Int("weight", 1, "capacity relative to other members")
	secretKeyFile := fs.String("secret-key-file", "", "file holding the gossip encryption key: 16, 24 or 32 bytes, raw or base64")
	label := fs.String("label", "", "gossip label keeping clusters on one network apart")
	fanOut := fs.String("fan-out", "", "read with enhanced fan-out as this stream consumer (registered if missing) instead of polling")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	checkpointInterval := fs.Duration("checkpoint-interval", 0, "write accepted checkpoints at most this often (0 = default 30s)")
	renewInterval := fs.Duration("renew-interval", 0, "renew a lease with no write for this long; expiry is 3x (0 = default 30s)")
	syncInterval := fs.Duration("sync-interval", 0, "interval between the discovering node's listings of shards; it reads the lease table when a listing shows a change and every 2m, the others every 60s x (members-1) (0 = default 10s)")
	stallTimeout := fs.Duration("stall-timeout", 0, "a shard without progress (fetch, processor answer, lease write) this long is stalled and moved to another node (0 = default 30s)")
	processTimeout := fs.Duration("process-timeout", 0, "a batch the processor has not answered this long is a failed delivery (0 = default 5m)")
	stopTimeout := fs.Duration("stop-timeout", 30*time.Second, "how long the graceful stop may take before leases are left to expire")
	onFailure := fs.String("on-failure", "", "write the records of batches that failed --failure-policy's attempts to dir:PATH (one JSONL file per shard, fsynced), kinesis:STREAM (must exist) or dynamodb:TABLE (created if missing); the checkpoint moves past a batch only once written (implies --failure-policy dead-letter)")
	failurePolicy := fs.String("failure-policy", "", "after --max-attempts failed deliveries of a record: retry (forever), dead-letter (to --on-failure) or stop-shard (default: dead-letter with --on-failure, else retry)")
	maxAttempts := fs.Int("max-attempts", 5, "failed deliveries of a record before --failure-policy applies (Lambda's MaximumRetryAttempts; with --bisect-on-error, counted for the record on its own)")
	bisect := fs.Bool("bisect-on-error", false, "split a failed batch in halves and deliver each on its own, recursively, to isolate a poison record in about log2(batch) deliveries (Lambda's BisectBatchOnFunctionError)")
	maxRecordAge := fs.Duration("max-record-age", 0, "records that arrived longer ago than this are not delivered but written to --on-failure (required) and counted (Lambda's MaximumRecordAgeInSeconds); 0: no limit")
	parallelization := fs.Int("parallelization", 1, "workers per shard, each with the records of its own partition keys, so every key keeps its order (Lambda's ParallelizationFactor; 1 to 100)")
	failKeys := fs.String("fail-keys", "", "ledger processor test knob: every record of these comma-separated partition keys fails (a partial batch failure naming them; see --fail-mode)")
	failMode := fs.String("fail-mode", "partial", "ledger processor test knob: how --fail-keys fails a batch: partial (names the records) or batch (an error for the whole batch, what --bisect-on-error splits)")
	recordDelay := fs.Duration("record-delay", 0, "ledger processor test knob: sleep this long per record before appending it (a slow sink)")
	readyFile := fs.String("ready-file", "", "write {node, gossip, http, pid} as JSON to this file once ready")
	earlyDetection := fs.Bool("early-detection", true, "hold a TCP connection to every member and declare one dead as soon as its connection ends and its gossip port refuses (milliseconds after a crash, instead of gossip's ~1.3 s)")
	balance := fs.String("balance", "count", "how shards are spread over the members: count (shards per member) or load (measured bytes/s and processor time, shared by gossip)")
	loadThreshold := fs.Float64("load-threshold", 0.10, "with --balance load: how far over its share (0.10 = 10 %) a member must be before it moves shards")
	rebalanceInterval := fs.Duration("rebalance-interval", 10*time.Second, "with --balance load: how often a member may move shards for load")
	loadCoolDown := fs.Duration("load-cooldown", 5*time.Minute, "with --balance load: a shard that moved does not move again for this long")
	maxLoadMoves := fs.Int("max-load-moves", 2, "with --balance load: at most this many shards leave a member per rebalance interval")
	testFaults := fs.Bool(testFaultsFlag, false, "for chaos runs only: gossip through a fault-injecting transport and serve POST /faults/partition?block=HOST:PORT,... and /faults/heal on --http (every member must use it)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kinactor node --app NAME (--stream NAME[,NAME...] | --stream-file PATH) [--bind HOST:PORT] [flags]\n\n"+
			"Consumes the stream as one member of a cluster until interrupted, then stops\n"+
			"gracefully (a second interrupt exits at once). Endpoints, region and\n"+
			"credentials come from the AWS SDK's environment.\n\nflags:\n")
		printDefaultsExcept(fs, testFaultsFlag)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("node: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *app == "" {
		return errors.New("node: --app is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("node: invalid --log-level %q (want debug, info, warn or error)", *logLevel)
	}
	failSpec, policy, err := failureFlags(*onFailure, *failurePolicy)
	if err != nil {
		return err
	}
	if failSpec != nil && failSpec.Kind == failure.KindKinesis && slices.Contains(strings.Split(*streamName, ","), failSpec.Target) {
		return fmt.Errorf("node: --on-failure %q is the stream consumed (--stream): its failures would be read again", *onFailure)
	}
	cfg := kinactor.Config{
		ApplicationName:    *app,
		WorkerID:           *name,
		InitialPosition:    kinactor.InitialPosition(*initial),
		CheckpointInterval: *checkpointInterval,
		LeaseRenewInterval: *renewInterval,
		ShardSyncInterval:  *syncInterval,
		StallTimeout:       *stallTimeout,
		ProcessTimeout:     *processTimeout,
		FanOutConsumer:     *fanOut,
		FailurePolicy:      policy,
		Logger:             slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
		Registerer:         nodeRegistry(),
	}
	if err := (processingFlags{
		maxAttempts:     *maxAttempts,
		parallelization: *parallelization,
		bisect:          *bisect,
		maxRecordAge:    *maxRecordAge,
		onFailure:       failSpec != nil,
	}).apply(&cfg); err != nil {
		return err
	}
	if err := (streamFlags{stream: *streamName, file: *streamFile, multi: *multiStream, syncInterval: *streamSync}).apply(&cfg); err != nil {
		return err
	}
	if err := (balanceFlags{balance: *balance, threshold: *loadThreshold, interval: *rebalanceInterval, coolDown: *loadCoolDown, maxMoves: *maxLoadMoves}).apply(&cfg); err != nil {
		return err
	}
	knobs, err := ledgerKnobs(*processor, *failKeys, *failMode, *recordDelay)
	if err != nil {
		return err
	}
	switch kinactor.InitialPosition(*initial) {
	case kinactor.TrimHorizon, kinactor.Latest:
		if *timestamp != "" {
			return fmt.Errorf("node: --timestamp %q needs --initial-position AT_TIMESTAMP", *timestamp)
		}
	case kinactor.AtTimestamp:
		if *timestamp == "" {
			return errors.New("node: --initial-position AT_TIMESTAMP needs --timestamp")
		}
		ts, err := time.Parse(time.RFC3339, *timestamp)
		if err != nil {
			return fmt.Errorf("node: invalid --timestamp %q (want RFC 3339, e.g. 2024-05-01T12:00:00Z)", *timestamp)
		}
		cfg.InitialTimestamp = ts
	default:
		return fmt.Errorf("node: invalid --initial-position %q (want TRIM_HORIZON, LATEST or AT_TIMESTAMP)", *initial)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--checkpoint-interval", *checkpointInterval}, {"--renew-interval", *renewInterval}, {"--sync-interval", *syncInterval}, {"--stall-timeout", *stallTimeout}, {"--process-timeout", *processTimeout}, {"--stop-timeout", *stopTimeout}} {
		if d.v < 0 {
			return fmt.Errorf("node: invalid %s %s (must not be negative)", d.flag, d.v)
		}
	}
	var refuser *refusingTransport // --test-faults: the gossip transport, whose TCP can refuse
	if *bind == "" {
		for _, f := range []struct{ flag, v string }{{"--join", *join}, {"--advertise", *advertise}, {"--secret-key-file", *secretKeyFile}, {"--label", *label}} {
			if f.v != "" {
				return fmt.Errorf("node: %s %q needs --bind (gossip)", f.flag, f.v)
			}
		}
	} else {
		if _, _, err := net.SplitHostPort(*bind); err != nil {
			return fmt.Errorf("node: invalid --bind %q (want host:port): %v", *bind, err)
		}
		if *weight < 1 {
			return fmt.Errorf("node: invalid --weight %d (want at least 1)", *weight)
		}
		cl := &cluster.Config{BindAddr: *bind, AdvertiseAddr: *advertise, Label: *label, Weight: *weight}
		if *join != "" {
			for _, j := range strings.Split(*join, ",") {
				j = strings.TrimSpace(j)
				if _, _, err := net.SplitHostPort(j); err != nil {
					return fmt.Errorf("node: invalid --join %q: %q is not host:port", *join, j)
				}
				cl.Join = append(cl.Join, j)
			}
		}
		if *secretKeyFile != "" {
			key, err := readSecretKey(*secretKeyFile)
			if err != nil {
				return fmt.Errorf("node: --secret-key-file %q: %w", *secretKeyFile, err)
			}
			cl.SecretKey = key
		}
		if *testFaults {
			dt, rt, err := newTestFaultsTransport(*bind)
			if err != nil {
				return fmt.Errorf("node: --test-faults: --bind %q: %w", *bind, err)
			}
			cl.Transport, refuser = dt, rt // real TCP and UDP addresses: early detection works
		}
		cl.EarlyDetection = earlyDetection
		cfg.Cluster = cl
	}
	if *testFaults && cfg.Cluster == nil {
		return errors.New("node: --test-faults needs --bind (gossip)")
	}

	// The HTTP listener first, so that its port is known before the node
	// advertises it.
	var ln net.Listener
	if *httpAddr != "" {
		var err error
		if ln, err = net.Listen("tcp", *httpAddr); err != nil {
			return fmt.Errorf("node: --http %q: %w", *httpAddr, err)
		}
		defer ln.Close()
		if cfg.Cluster != nil {
			cfg.Cluster.HTTPAddr = ln.Addr().String()
		}
	}

	var fn actors.ProcessorFunc
	var lw *ledger.Writer // set before Start: the ledger file is named after node.WorkerID()
	log := cfg.Logger
	switch *processor {
	case "ledger":
		fn = func(ctx context.Context, b messages.Batch) error { return lw.ProcessorWith(knobs)(ctx, b) }
	case "log":
		fn = func(_ context.Context, b messages.Batch) error {
			if len(b.Records) > 0 {
				log.Info("batch", "shard", b.ShardID, "count", len(b.Records),
					"first", b.Records[0].SequenceNumber, "last", b.Records[len(b.Records)-1].SequenceNumber,
					"millis_behind_latest", b.MillisBehindLatest)
			}
			return nil
		}
	default:
		return fmt.Errorf("node: invalid --processor %q (want ledger or log)", *processor)
	}
	var hang *processorHang // --test-faults: POST /faults/hang makes fn block
	if *testFaults {
		hang = &processorHang{}
		fn = hang.wrap(fn)
	}
	if failSpec != nil {
		awsCfg, err := config.LoadDefaultConfig(ctx)
		if err != nil {
			return fmt.Errorf("node: loading AWS config: %w", err)
		}
		cfg.AWS = &awsCfg // the node's clients and the destination's from one config
		if err := setOnFailure(ctx, &cfg, *failSpec, awsCfg, log); err != nil {
			if ctx.Err() != nil {
				return nil // interrupted while starting: not a failure
			}
			return err
		}
	}
	node, err := kinactor.NewNode(cfg, actors.FuncProcessor(fn))
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if *processor == "ledger" {
		if lw, err = ledger.NewWriter(*ledgerDir, node.WorkerID()); err != nil {
			return fmt.Errorf("node: --ledger-dir %q: %w", *ledgerDir, err)
		}
		if cfg.MultiStream() {
			lw.SetMultiStream()
		}
		defer lw.Close()
	}

	var srv *http.Server
	httpDone := make(chan error, 1)
	if ln != nil {
		mux := http.NewServeMux()
		mux.Handle("/", node.Handler()) // /metrics, /healthz, /readyz, /status, /cluster, the page /
		if dt := dropTransportOf(cfg.Cluster); dt != nil {
			handleTestFaults(mux, dt, hang, log.Info)
			if refuser != nil {
				handleRefuse(mux, dt, refuser, log.Info)
			}
		}
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { httpDone <- srv.Serve(ln) }()
		defer srv.Close()
	}

	if err := node.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting: not a failure
		}
		return fmt.Errorf("node: %w", err)
	}

	info := nodeReady{Node: node.WorkerID(), PID: os.Getpid()}
	if cfg.Cluster != nil {
		info.Gossip = cfg.Cluster.BindAddr
		for _, m := range node.Members() {
			if m.Name == info.Node && m.Addr != "" {
				info.Gossip = m.Addr
			}
		}
	}
	if ln != nil {
		info.HTTP = ln.Addr().String()
	}
	fmt.Fprintf(stderr, "node %s gossip %s http %s\n", info.Node, dashIfEmpty(info.Gossip), dashIfEmpty(info.HTTP))
	var readyErr error
	if *readyFile != "" {
		readyErr = writeReadyFile(*readyFile, info)
	}

	if readyErr == nil {
		select {
		case <-ctx.Done():
			log.Info("signal received; stopping gracefully (signal again to exit at once)")
			watchSecondSignal()
		case err := <-httpDone:
			readyErr = fmt.Errorf("node: http server: %w", err)
		}
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), *stopTimeout)
	defer cancel()
	began := time.Now()
	stopErr := node.Stop(stopCtx)
	if stopErr != nil {
		stopErr = fmt.Errorf("node: stopping: %w", stopErr)
	} else {
		log.Info("node stopped", "took", time.Since(began).Round(time.Millisecond))
	}
	var closeErr error
	if lw != nil {
		closeErr = lw.Close()
	}
	if srv != nil {
		shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(shutCtx)
		cancel()
	}
	return errors.Join(readyErr, stopErr, closeErr)
}

// watchSecondSignal exits the process at once on the next SIGINT/SIGTERM
// (main's NotifyContext keeps catching them, so without this a second ^C
// would be ignored during a slow graceful stop).
func watchSecondSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		fmt.Fprintln(os.Stderr, "kinactor: second signal, exiting without a graceful stop")
		exitOnSecondSignal()
	}()
}

func writeReadyFile(path string, info nodeReady) error {
	b, _ := json.Marshal(info)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("node: --ready-file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("node: --ready-file: %w", err)
	}
	return nil
}

func readSecretKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := strings.TrimSpace(string(b))
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && (len(k) == 16 || len(k) == 24 || len(k) == 32) {
		return k, nil
	}
	switch len(s) {
	case 16, 24, 32:
		return []byte(s), nil
	}
	return nil, fmt.Errorf("key is %d bytes (want 16, 24 or 32, raw or base64)", len(s))
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// nodeRegistry is the node binary's registry: kinactor's collectors, and
// the Go runtime's and the process's (memory, goroutines, CPU, file
// descriptors), as an operator expects of a server.
func nodeRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// processingFlags are the flags of the Lambda-style processing:
// --max-attempts, --parallelization, --bisect-on-error, --max-record-age,
// and whether --on-failure was given (--max-record-age needs it).
type processingFlags struct {
	maxAttempts     int
	parallelization int
	bisect          bool
	maxRecordAge    time.Duration
	onFailure       bool
}

// apply checks the flags and sets them in cfg; an error names the flag and
// its value. The failure policy is failureFlags': with --on-failure it is
// dead-letter, which is also what --max-record-age's records go through.
func (p processingFlags) apply(cfg *kinactor.Config) error {
	if p.maxAttempts < 1 {
		return fmt.Errorf("node: invalid --max-attempts %d (want at least 1)", p.maxAttempts)
	}
	if p.parallelization < 1 || p.parallelization > kinactor.MaxParallelizationFactor {
		return fmt.Errorf("node: invalid --parallelization %d (want 1 to %d)", p.parallelization, kinactor.MaxParallelizationFactor)
	}
	if p.maxRecordAge < 0 {
		return fmt.Errorf("node: invalid --max-record-age %s (must not be negative)", p.maxRecordAge)
	}
	if p.maxRecordAge > 0 && !p.onFailure {
		return fmt.Errorf("node: --max-record-age %s needs --on-failure: the records it turns away are written there", p.maxRecordAge)
	}
	cfg.MaxProcessorAttempts = p.maxAttempts
	cfg.ParallelizationFactor = p.parallelization
	cfg.BisectOnError = p.bisect
	cfg.MaxRecordAge = p.maxRecordAge
	return nil
}

// balanceFlags are --balance and the load-aware assignment's knobs.
type balanceFlags struct {
	balance   string
	threshold float64
	interval  time.Duration
	coolDown  time.Duration
	maxMoves  int
}

// apply checks the flags and sets them in cfg; an error names the flag and
// its value.
func (b balanceFlags) apply(cfg *kinactor.Config) error {
	switch kinactor.Balance(b.balance) {
	case kinactor.BalanceCount, kinactor.BalanceLoad:
	default:
		return fmt.Errorf("node: invalid --balance %q (want count or load)", b.balance)
	}
	if !(b.threshold > 0 && b.threshold <= 10) {
		return fmt.Errorf("node: invalid --load-threshold %v (want more than 0, at most 10)", b.threshold)
	}
	if b.interval <= 0 {
		return fmt.Errorf("node: invalid --rebalance-interval %s (must be positive)", b.interval)
	}
	if b.coolDown < 0 {
		return fmt.Errorf("node: invalid --load-cooldown %s (must not be negative)", b.coolDown)
	}
	if b.maxMoves < 1 {
		return fmt.Errorf("node: invalid --max-load-moves %d (want at least 1)", b.maxMoves)
	}
	cfg.Balance = kinactor.Balance(b.balance)
	cfg.LoadThreshold, cfg.RebalanceInterval, cfg.LoadCoolDown, cfg.MaxLoadMoves = b.threshold, b.interval, b.coolDown, b.maxMoves
	return nil
}

// ledgerKnobs checks the ledger processor's test knobs.
func ledgerKnobs(processor, failKeys, failMode string, delay time.Duration) (ledger.Knobs, error) {
	var k ledger.Knobs
	if processor != "ledger" && (failKeys != "" || delay != 0) {
		return k, fmt.Errorf("node: --fail-keys and --record-delay are knobs of --processor ledger, not %q", processor)
	}
	if delay < 0 {
		return k, fmt.Errorf("node: invalid --record-delay %s (must not be negative)", delay)
	}
	k.RecordDelay = delay
	switch failMode {
	case "partial":
	case "batch":
		k.FailWhole = true
	default:
		return k, fmt.Errorf("node: invalid --fail-mode %q (want partial or batch)", failMode)
	}
	if failKeys != "" {
		k.FailKeys = map[string]bool{}
		for _, key := range strings.Split(failKeys, ",") {
			if key = strings.TrimSpace(key); key == "" {
				return k, fmt.Errorf("node: invalid --fail-keys %q (an empty key)", failKeys)
			}
			k.FailKeys[key] = true
		}
	}
	return k, nil
}
