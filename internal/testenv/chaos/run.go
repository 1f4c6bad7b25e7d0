package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kinactor/kinactor/internal/awswait"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/faultproxy"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// Name is the stream and application (lease table) name of a chaos run.
const Name = "kinactor-chaos"

// Options configure Run.
type Options struct {
	Bin     string // the kinactor binary the nodes run
	WorkDir string // ledgers, ready files, node logs
	// ToolsDir is the tools/localaws directory ("" finds it).
	ToolsDir string
	// UseEnv takes the Kinesis and DynamoDB endpoints from
	// AWS_ENDPOINT_URL_KINESIS and AWS_ENDPOINT_URL_DYNAMODB instead of
	// starting local servers (they must allow creating the stream and
	// table; resharding needs a server that supports it).
	UseEnv bool
	// Progress receives a live line every few seconds and a line per
	// fault; nil is quiet.
	Progress io.Writer
}

// Run runs the scenario: servers, proxies, nodes, producer, faults,
// drain, verification. The error is for a run that could not be carried
// out; what the verifier found is in the Report (Report.OK).
func Run(ctx context.Context, s Scenario, o Options) (Report, error) {
	s, err := s.WithDefaults()
	if err != nil {
		return Report{}, err
	}
	faults := Schedule(s.Seed, s)
	timings, _ := s.Timings() // checked by WithDefaults
	r := &runner{s: s, o: o, faults: faults, timings: timings, began: time.Now(), writes: map[string]float64{},
		rng: rand.New(rand.NewPCG(s.Seed, s.Seed^0xc4a05)), http: &http.Client{Timeout: 5 * time.Second},
		proxies: map[string]*nodeProxies{}, svcFaults: map[faultproxy.Service]faultproxy.Faults{}}
	defer r.cleanup()
	if err := r.setup(ctx); err != nil {
		return Report{}, err
	}
	return r.run(ctx)
}

type runner struct {
	s       Scenario
	o       Options
	faults  []Fault
	timings Timings
	began   time.Time
	rng     *rand.Rand
	http    *http.Client

	env            *localaws.Env // nil with UseEnv
	kinURL, ddbURL string        // what the proxies forward to
	kc             *kinesis.Client
	sc             *stream.Client
	store          *lease.DynamoStore
	c              *clusterrun.Cluster
	strangers      *clusterrun.Cluster // another application on our seeds (stranger faults), nil before the first
	prod           *clusterrun.Producer
	runStart       time.Time
	stopSampling   func()

	bg         sync.WaitGroup // background faults (stranger)
	mu         sync.Mutex
	done       []Done
	samples    []Sample
	writes     map[string]float64 // node → last kinactor_lease_writes_total
	proxies    map[string]*nodeProxies
	proxyOrder []string
	svcFaults  map[faultproxy.Service]faultproxy.Faults // whole-service faults in force
}

func (r *runner) logf(format string, a ...any) {
	if r.o.Progress != nil {
		fmt.Fprintf(r.o.Progress, "[%6.1fs] %s\n", time.Since(r.began).Seconds(), fmt.Sprintf(format, a...))
	}
}

func (r *runner) cleanup() {
	if r.stopSampling != nil {
		r.stopSampling()
	}
	if r.prod != nil {
		_, _ = r.prod.Stop() // Stop may be called twice
	}
	if r.c != nil {
		r.c.Close()
	}
	if r.strangers != nil {
		r.strangers.Close()
	}
	r.closeProxies()
	_ = r.env.Stop() // nil-safe
}

func awsConfig() aws.Config {
	return aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("local", "local", "")}
}

func (r *runner) setup(ctx context.Context) error {
	kinURL, ddbURL := os.Getenv("AWS_ENDPOINT_URL_KINESIS"), os.Getenv("AWS_ENDPOINT_URL_DYNAMODB")
	if r.o.UseEnv {
		if kinURL == "" || ddbURL == "" {
			return errors.New("chaos: endpoints from the environment need AWS_ENDPOINT_URL_KINESIS and AWS_ENDPOINT_URL_DYNAMODB")
		}
	} else {
		kk := localaws.Kind(r.s.Kinesis)
		if kk == "" {
			kk = localaws.Kinesalite
			if needsResharding(r.faults) {
				kk = localaws.KinesisMock
			}
		}
		var err error
		r.env, err = localaws.StartEnv(ctx, kk, localaws.Options{Dir: r.o.ToolsDir}, localaws.Kind(r.s.DynamoDB), localaws.Options{Dir: r.o.ToolsDir})
		if err != nil {
			return fmt.Errorf("chaos: starting local servers (install them with `make deps`): %w", err)
		}
		kinURL, ddbURL = r.env.Kinesis.Endpoint, r.env.DynamoDB.Endpoint
		r.logf("servers: %s at %s, %s at %s", r.env.Kinesis.Kind, kinURL, r.env.DynamoDB.Kind, ddbURL)
	}
	r.kinURL, r.ddbURL = kinURL, ddbURL
	// The runner's own clients go to the servers directly: the faults are
	// for the nodes, each of which gets its own pair of proxies.
	cfg := awsConfig()
	r.kc = kinesis.NewFromConfig(cfg, func(o *kinesis.Options) { o.BaseEndpoint = aws.String(kinURL) })
	kcfg := cfg.Copy()
	kcfg.BaseEndpoint = aws.String(kinURL)
	r.sc = stream.NewClient(stream.NewSDKClient(kcfg), Name, "")
	ddb := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(ddbURL) })
	r.store = lease.NewDynamoStore(ddb, Name)
	if _, err := awswait.EnsureStream(ctx, r.kc, Name, int32(r.s.Shards), 2*time.Minute); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	r.logf("stream %s with %d shards; every node gets its own kinesis and dynamodb fault proxy", Name, r.s.Shards)

	// The endpoints are the node's proxies (nodeEnv).
	env := (&localaws.Env{}).Environ()
	args := append(append([]string(nil), r.s.NodeArgs...), "--test-faults")
	// One node creates the lease rows, then the others join.
	var err error
	r.c, err = clusterrun.Start(ctx, clusterrun.Options{Bin: r.o.Bin, Dir: r.o.WorkDir, App: Name, Stream: Name,
		Env: env, NodeEnv: r.nodeEnv, ExtraArgs: args, Nodes: 1, ReadyTimeout: 90 * time.Second, StopTimeout: 45 * time.Second})
	if err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	if err := r.c.Grow(ctx, r.s.Nodes, r.s.Shards, 90*time.Second); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	r.logf("%d nodes settled over %d shards", r.s.Nodes, r.s.Shards)
	return nil
}

func (r *runner) run(ctx context.Context) (Report, error) {
	// Lease-table sampler.
	sctx, stopS := context.WithCancel(context.Background())
	var swg sync.WaitGroup
	swg.Add(1)
	go func() {
		defer swg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			r.sample(sctx)
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	r.stopSampling = func() { stopS(); swg.Wait() }

	r.runStart = time.Now()
	r.prod = clusterrun.StartProducer(r.kc, Name, r.s.Keys, r.s.Rate)
	r.logf("producing %g records/s over %d keys for %s; %d faults scheduled", r.s.Rate, r.s.Keys, time.Duration(r.s.Duration), len(r.faults))

	pctx, stopP := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		r.progressLoop(pctx)
	}()
	defer func() { stopP(); pwg.Wait() }()

	for _, f := range r.faults {
		if err := backoff.Sleep(ctx, time.Until(r.runStart.Add(time.Duration(f.At)))); err != nil {
			return Report{}, err
		}
		if f.Kind.timed() {
			r.logf("fault %s begins (for %s)", f.Kind, time.Duration(f.For))
		}
		d := r.do(ctx, f)
		at := d.At.Sub(r.runStart).Seconds()
		if d.Err != "" {
			r.logf("fault %s at %.1fs: %s: ERROR %s", d.Kind, at, d.Detail, d.Err)
		} else {
			r.logf("fault %s at %.1fs: %s", d.Kind, at, d.Detail)
		}
		if ctx.Err() != nil {
			return Report{}, ctx.Err()
		}
	}
	if err := backoff.Sleep(ctx, time.Until(r.runStart.Add(time.Duration(r.s.Duration)))); err != nil {
		return Report{}, err
	}
	r.bg.Wait()
	produced, perr := r.prod.Stop()
	if perr != nil {
		return Report{}, fmt.Errorf("chaos: producer: %w", perr)
	}
	total := 0
	for _, n := range produced {
		total += n
	}
	r.logf("producer stopped after %d records; waiting up to %s for the rest to be processed", total, time.Duration(r.s.Drain))
	deadline := time.Now().Add(time.Duration(r.s.Drain))
	for {
		es, err := ledger.ReadDir(r.c.LedgerDir())
		if err == nil && clusterrun.Analyze(es, produced, nil).Lost == 0 {
			break
		}
		if time.Now().After(deadline) {
			r.logf("not everything processed within %s", time.Duration(r.s.Drain))
			break
		}
		if err := backoff.Sleep(ctx, time.Second); err != nil {
			return Report{}, err
		}
	}
	end := time.Now()
	// Let the last checkpoints land, then take the last samples.
	_ = backoff.Sleep(ctx, 3*time.Second)
	stopP()
	pwg.Wait()
	r.stopSampling()
	r.stopSampling = nil
	for _, p := range r.c.Nodes() {
		r.scrape(ctx, p)
	}
	hours := time.Since(r.runStart).Hours()

	es, err := ledger.ReadDir(r.c.LedgerDir())
	if err != nil {
		return Report{}, fmt.Errorf("chaos: reading ledgers: %w", err)
	}
	nodeWrites := r.nodeWrites()
	r.mu.Lock()
	in := Input{Entries: es, Produced: produced, Events: r.c.Events(), Faults: append([]Done(nil), r.done...),
		Samples: append([]Sample(nil), r.samples...), Written: r.prod.Written(), Writes: nodeWrites,
		End: end, MaxStall: time.Duration(r.s.MaxStall), LeaseExpiry: r.timings.LeaseExpiry}
	r.mu.Unlock()
	rep := Verify(in)
	r.mu.Lock()
	for _, v := range r.writes {
		rep.LeaseWrites += v
	}
	r.mu.Unlock()
	rep.Nodes, rep.Shards, rep.Seed = r.s.Nodes, r.s.Shards, r.s.Seed
	rep.DurationSec, rep.Start = time.Since(r.began).Seconds(), r.runStart
	if hours > 0 {
		rep.LeaseWritesPerSH = rep.LeaseWrites / float64(r.s.Shards) / hours
	}
	rep.Proxy = r.proxyCounts()
	r.collectMaps(ctx, &rep)
	for _, d := range rep.Faults {
		if d.Err != "" {
			rep.Failures = append(rep.Failures, fmt.Sprintf("fault %s failed: %s", d.Kind, d.Err))
		}
	}
	rep.OK = len(rep.Failures) == 0
	return rep, nil
}

// sample reads the lease table once.
func (r *runner) sample(ctx context.Context) {
	ls, err := r.store.List(ctx)
	if err != nil {
		return
	}
	at := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range ls {
		r.samples = append(r.samples, Sample{At: at, Shard: l.Key, Owner: l.Owner, Counter: l.Counter, Checkpoint: l.Checkpoint})
	}
}

// scrape records p's kinactor_lease_writes_total.
func (r *runner) scrape(ctx context.Context, p *clusterrun.Proc) {
	m, err := r.c.Metrics(ctx, p)
	if err != nil {
		return
	}
	v := m.Sum("kinactor_lease_writes_total")
	r.mu.Lock()
	r.writes[p.Name] = v
	r.mu.Unlock()
}

func (r *runner) progressLoop(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, p := range r.c.Nodes() {
			if !p.Paused() {
				r.scrape(ctx, p)
			}
		}
		if r.o.Progress == nil {
			continue
		}
		_, produced := r.prod.Produced()
		processed := 0
		if es, err := ledger.ReadDir(r.c.LedgerDir()); err == nil {
			seen := map[string]bool{}
			for _, e := range es {
				seen[string(e.Data)] = true
			}
			processed = len(seen)
		}
		owners, _ := r.c.Owners(ctx)
		count := map[string]int{}
		for _, os := range owners {
			for _, o := range os {
				count[o]++
			}
		}
		var ow []string
		for _, p := range r.c.Nodes() {
			ow = append(ow, fmt.Sprintf("%s:%d", p.Name, count[p.Name]))
		}
		r.mu.Lock()
		nf := len(r.done)
		r.mu.Unlock()
		r.logf("elapsed %s  faults %d/%d  produced %d  processed %d  lag %d  owners %s",
			time.Since(r.runStart).Round(time.Second), nf, len(r.faults), produced, processed, produced-processed, strings.Join(ow, " "))
	}
}
