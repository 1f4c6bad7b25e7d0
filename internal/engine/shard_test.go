package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/metrics"
	"github.com/kinactor/kinactor/internal/shardfsm"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

// Tests of the shard actor shell: a real actor system, the shard actor
// spawned by NewShardProps under a parent that records what it is told,
// the lease store in memory (lease.MemStore, held to DynamoDB Local) and
// the stream in memory (stream.MemStream, held to kinesalite). They check
// what the shell does (its calls, the processor's supervision, its
// messages, metrics and board), not the machine's rules (internal/shardfsm
// tests those). Intervals are short: each test takes well under a second.

const testShard = "shardId-000000000000"

// shardRig is one shard actor under test.
type shardRig struct {
	t      *testing.T
	sys    *actor.ActorSystem
	mem    *stream.MemStream
	store  *lease.MemStore
	deps   *Deps
	reg    *prometheus.Registry
	parent *actor.PID
	rec    *parentRec
}

// fastMachine is a machine configuration with intervals of milliseconds.
func fastMachine() shardfsm.Config {
	b := backoff.Policy{Base: 5 * time.Millisecond, Cap: 20 * time.Millisecond}
	return shardfsm.Config{
		MaxRecords: 10, MinFetchInterval: 5 * time.Millisecond, IdleTimeBetweenReads: 10 * time.Millisecond,
		ParentPollInterval: 10 * time.Millisecond, RenewInterval: 2 * time.Second, CheckpointInterval: 0,
		ShutdownTimeout: time.Second, ThrottleBackoff: b, ErrorBackoff: b, ProcessorBackoff: b, MaxProcessorAttempts: 3,
		InitialPosition: stream.Position{Type: ktypes.ShardIteratorTypeTrimHorizon}, LeaseExpiry: 20 * time.Second,
		StallTimeout: 10 * time.Second, ProcessTimeout: 5 * time.Second,
	}
}

// newShardRig makes a one-shard stream and its lease row; tune may change
// the deps (machine configuration, store, stream, dead-letter handler)
// before start.
func newShardRig(t *testing.T, proc *actor.Props) *shardRig {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := &shardRig{t: t, mem: stream.NewMemStream("test", 1), store: lease.NewMemStore(), reg: prometheus.NewRegistry()}
	r.sys = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))
	r.deps = &Deps{
		Owner: "me", Store: r.store, Stream: r.mem, Processor: proc, Machine: fastMachine(),
		Metrics: metrics.New(r.reg), Logger: quiet, Board: NewBoard(), StreamName: "test",
	}
	if err := r.store.Create(context.Background(), lease.Lease{Key: testShard}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.sys.Shutdown)
	return r
}

// take takes the shard's lease for owner in the store.
func (r *shardRig) take(owner string) lease.Lease {
	r.t.Helper()
	ctx := context.Background()
	row, err := r.store.Get(ctx, testShard)
	if err != nil {
		r.t.Fatal(err)
	}
	l, err := r.store.Take(ctx, row, owner, lease.TakeOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return l
}

// start takes the lease for "me" and spawns the shard actor under a
// recording parent.
func (r *shardRig) start() {
	r.t.Helper()
	held := r.take("me")
	r.rec = &parentRec{props: NewShardProps(r.deps, held, TakeSent{At: time.Now()})}
	r.parent = r.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &recordingParent{rec: r.rec} }))
}

// parentRec is what the shard actor told its parent.
type parentRec struct {
	props *actor.Props

	mu       sync.Mutex
	child    *actor.PID
	finished []ShardFinished
	states   []ShardStateChanged
	wrote    []lease.Lease
	stalls   []string // causes, "" when it moved again
	stopped  bool     // the child terminated
}

type recordingParent struct{ rec *parentRec }

func (p *recordingParent) Receive(ctx actor.Context) {
	r := p.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	switch m := ctx.Message().(type) {
	case *actor.Started:
		r.child = ctx.Spawn(r.props)
	case ShardFinished:
		r.finished = append(r.finished, m)
		ctx.Stop(r.child) // as the coordinator does, once it has read it
	case ShardStateChanged:
		r.states = append(r.states, m)
	case shardWrote:
		r.wrote = append(r.wrote, m.lease)
	case shardStalled:
		r.stalls = append(r.stalls, m.cause)
	case *actor.Terminated:
		r.stopped = true
	}
}

func (r *shardRig) child() *actor.PID {
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	return r.rec.child
}

func (r *shardRig) finished() (ShardFinished, bool) {
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	if len(r.rec.finished) == 0 {
		return ShardFinished{}, false
	}
	return r.rec.finished[0], true
}

func (r *shardRig) stalls() []string {
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	return slices.Clone(r.rec.stalls)
}

// waitFinished waits for ShardFinished and the shard actor's end.
func (r *shardRig) waitFinished() ShardFinished {
	r.t.Helper()
	var f ShardFinished
	eventually(r.t, 3*time.Second, "the shard actor to finish and stop", func() bool {
		var ok bool
		f, ok = r.finished()
		r.rec.mu.Lock()
		defer r.rec.mu.Unlock()
		return ok && r.rec.stopped
	})
	return f
}

// eventually polls cond until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		<-tick.C
	}
}

func (r *shardRig) row() lease.Lease {
	r.t.Helper()
	l, err := r.store.Get(context.Background(), testShard)
	if err != nil {
		r.t.Fatal(err)
	}
	return l
}

// waitCheckpoint waits for the row's checkpoint to be seq.
func (r *shardRig) waitCheckpoint(seq string) {
	r.t.Helper()
	eventually(r.t, 2*time.Second, "checkpoint "+seq, func() bool { return r.row().Checkpoint.SequenceNumber == seq })
}

func (r *shardRig) put(data ...string) []stream.Record {
	r.t.Helper()
	recs := make([]stream.Record, len(data))
	for i, d := range data {
		recs[i] = stream.Record{PartitionKey: "pk", Data: []byte(d)}
	}
	out, err := r.mem.Put(testShard, recs...)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// touch asks the shard actor for an answer from its mailbox (protoactor
// answers Touch once the actor has received it).
func (r *shardRig) touch(within time.Duration) error {
	_, err := r.sys.Root.RequestFuture(r.child(), &actor.Touch{}, within).Result()
	return err
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return out
}

func recordData(recs []messages.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Data)
	}
	return out
}

// sink collects what a processor was given.
type sink struct {
	mu      sync.Mutex
	data    []string
	batches []messages.Batch
}

func (s *sink) add(b messages.Batch) {
	s.mu.Lock()
	s.data = append(s.data, recordData(b.Records)...)
	s.batches = append(s.batches, b)
	s.mu.Unlock()
}

func (s *sink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.data)
}

func (s *sink) waitFor(t *testing.T, want []string) {
	t.Helper()
	eventually(t, 2*time.Second, fmt.Sprintf("%d records processed", len(want)), func() bool { return len(s.got()) >= len(want) })
	if got := s.got(); !slices.Equal(got, want) {
		t.Fatalf("processed %v, want %v", got, want)
	}
}

// observed wraps processor props with a receive middleware that reports
// every message the processor gets, with the processor's PID.
func observed(props *actor.Props, see func(self *actor.PID, msg any)) *actor.Props {
	return props.Configure(actor.WithReceiverMiddleware(func(next actor.ReceiverFunc) actor.ReceiverFunc {
		return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
			see(c.Self(), env.Message)
			next(c, env)
		}
	}))
}

// Records reach a FuncProcessor in order, in batches of at most
// MaxRecords, and the checkpoint after each batch reaches the store; the
// parent hears the state, the writes and the checkpoint.
func TestShardDeliversInOrderAndCheckpoints(t *testing.T) {
	var s sink
	r := newShardRig(t, actors.FuncProcessor(func(_ context.Context, b messages.Batch) error { s.add(b); return nil }))
	first := r.put(names("a", 25)...)
	r.start()
	s.waitFor(t, names("a", 25))
	r.waitCheckpoint(first[24].SequenceNumber)

	more := r.put(names("b", 5)...)
	s.waitFor(t, append(names("a", 25), names("b", 5)...))
	r.waitCheckpoint(more[4].SequenceNumber)

	s.mu.Lock()
	for _, b := range s.batches {
		if len(b.Records) > 10 || b.ShardID != testShard || b.Attempt != 1 {
			t.Errorf("batch %d: %d records, shard %s, attempt %d", b.BatchID, len(b.Records), b.ShardID, b.Attempt)
		}
	}
	s.mu.Unlock()
	if n := testutil.ToFloat64(r.deps.Metrics.RecordsProcessed.WithLabelValues("test", testShard)); n != 30 {
		t.Errorf("records processed metric %v, want 30", n)
	}
	if n := testutil.ToFloat64(r.deps.Metrics.LeaseWrites.WithLabelValues("checkpoint", "ok")); n < 2 {
		t.Errorf("checkpoint writes %v", n)
	}
	eventually(t, time.Second, "the parent to hear the last checkpoint", func() bool {
		r.rec.mu.Lock()
		defer r.rec.mu.Unlock()
		n := len(r.rec.states)
		return n > 0 && r.rec.states[n-1].State == shardfsm.Processing && r.rec.states[n-1].Checkpoint.SequenceNumber == more[4].SequenceNumber &&
			len(r.rec.wrote) > 0 && r.rec.wrote[len(r.rec.wrote)-1].Checkpoint.SequenceNumber == more[4].SequenceNumber
	})
	if _, ok := r.finished(); ok {
		t.Error("the shard finished")
	}
}

// A processor that never answers (it blocks, ignoring its context) is
// replaced after ProcessTimeout by a new actor under a new name; the batch
// is delivered to it again, and the first one's context was cancelled.
// Once the stuck one returns, it is stopped and its late answer is
// ignored.
func TestShardReplacesHungProcessor(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	var (
		s       sink
		calls   atomic.Int32
		stuck   atomic.Pointer[context.Context]
		mu      sync.Mutex
		sentTo  []*actor.PID // the processor of each delivery
		batches []messages.Batch
	)
	fn := func(ctx context.Context, b messages.Batch) error {
		if calls.Add(1) == 1 {
			stuck.Store(&ctx)
			<-release // ignores ctx
			return nil
		}
		s.add(b)
		return nil
	}
	props := observed(actors.FuncProcessor(fn), func(self *actor.PID, msg any) {
		if b, ok := msg.(messages.Batch); ok {
			mu.Lock()
			sentTo, batches = append(sentTo, self), append(batches, b)
			mu.Unlock()
		}
	})
	r := newShardRig(t, props)
	r.deps.Machine.ProcessTimeout = 150 * time.Millisecond
	recs := r.put(names("h", 4)...)
	start := time.Now()
	r.start()
	s.waitFor(t, names("h", 4))
	took := time.Since(start)

	mu.Lock()
	if len(sentTo) != 2 {
		t.Fatalf("%d deliveries, want 2", len(sentTo))
	}
	first, second := sentTo[0], sentTo[1]
	b1, b2 := batches[0], batches[1]
	mu.Unlock()
	if first.Id == second.Id {
		t.Errorf("the batch went again to %s: not a new processor", first.Id)
	}
	if !slices.Equal(recordData(b1.Records), recordData(b2.Records)) || b2.Attempt != 2 || b2.BatchID == b1.BatchID {
		t.Errorf("redelivery %d attempt %d %v, first %d %v", b2.BatchID, b2.Attempt, recordData(b2.Records), b1.BatchID, recordData(b1.Records))
	}
	if took < 150*time.Millisecond {
		t.Errorf("redelivered after %v, before ProcessTimeout", took)
	}
	if ctx := stuck.Load(); ctx == nil || (*ctx).Err() == nil {
		t.Error("the stuck processor's context was not cancelled")
	}
	r.waitCheckpoint(recs[3].SequenceNumber)
	if n := testutil.ToFloat64(r.deps.Metrics.ProcessorRestarts); n != 1 {
		t.Errorf("processor restarts %v, want 1", n)
	}

	once.Do(func() { close(release) }) // the stuck one returns and answers late
	eventually(t, time.Second, "the replaced processor to stop", func() bool {
		_, err := r.sys.Root.RequestFuture(first, &actor.Touch{}, 100*time.Millisecond).Result()
		return errors.Is(err, actor.ErrDeadLetter)
	})
	more := r.put("after")
	s.waitFor(t, append(names("h", 4), "after"))
	r.waitCheckpoint(more[0].SequenceNumber)
	if err := r.sys.Root.RequestFuture(second, &actor.Touch{}, time.Second).Wait(); err != nil {
		t.Errorf("the new processor: %v", err)
	}
}

// The dead-letter handler runs off the mailbox: while it blocks, the
// shard actor answers, and the checkpoint does not pass the batch; once it
// returns nil the checkpoint passes it and the shard moves on.
func TestShardDeadLetterRunsOffTheMailbox(t *testing.T) {
	var s sink
	poison := errors.New("poison")
	r := newShardRig(t, actors.FuncProcessor(func(_ context.Context, b messages.Batch) error {
		if strings.HasPrefix(string(b.Records[0].Data), "poison") {
			return poison
		}
		s.add(b)
		return nil
	}))
	r.deps.Machine.FailurePolicy = shardfsm.DeadLetter
	r.deps.Machine.MaxProcessorAttempts = 2
	entered, release := make(chan messages.Batch, 1), make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	var cause atomic.Pointer[error]
	r.deps.DeadLetter = func(_ context.Context, shardID string, b messages.Batch, err error) error {
		cause.Store(&err)
		entered <- b
		<-release
		return nil
	}
	bad := r.put(names("poison", 3)...)
	r.start()
	var dl messages.Batch
	select {
	case dl = <-entered:
	case <-time.After(2 * time.Second):
		t.Fatal("the dead-letter handler was not called")
	}
	if !slices.Equal(recordData(dl.Records), names("poison", 3)) || !errors.Is(*cause.Load(), poison) {
		t.Errorf("dead-lettered %v for %v", recordData(dl.Records), *cause.Load())
	}
	for range 3 {
		if err := r.touch(200 * time.Millisecond); err != nil {
			t.Fatalf("the shard actor does not answer while the handler runs: %v", err)
		}
	}
	if cp := r.row().Checkpoint; !cp.IsSentinel() {
		t.Fatalf("checkpoint %s while the handler has the batch", cp.SequenceNumber)
	}

	once.Do(func() { close(release) })
	r.waitCheckpoint(bad[2].SequenceNumber) // only the handler's nil could move it there
	good := r.put(names("ok", 2)...)
	s.waitFor(t, names("ok", 2))
	r.waitCheckpoint(good[1].SequenceNumber)
	if n := testutil.ToFloat64(r.deps.Metrics.ProcessorFailures.WithLabelValues("dead_lettered")); n != 1 {
		t.Errorf("dead-lettered metric %v", n)
	}
}

// ambiguousStore applies a checkpoint and then reports it failed, as a
// write whose answer was lost (a timeout, a 5xx on the last attempt).
type ambiguousStore struct {
	*lease.MemStore
	fail    atomic.Int32 // this many checkpoints are applied and answered with an error
	applied atomic.Int32
}

func (s *ambiguousStore) Checkpoint(ctx context.Context, held lease.Lease, cp lease.Checkpoint, children []string) (lease.Lease, error) {
	l, err := s.MemStore.Checkpoint(ctx, held, cp, children)
	if err == nil && s.fail.Add(-1) >= 0 {
		s.applied.Add(1)
		return lease.Lease{}, fmt.Errorf("checkpoint %s: request timed out (it may have been applied)", held.Key)
	}
	return l, err
}

// A checkpoint applied but answered with an error: the next write is
// fenced on the old counter, finds the row as its own (the counter after
// the lost answer, our owner), carries on from it, and the shard goes on:
// no lease lost. Twice in a row, the second write is made on the row the
// first one left.
func TestShardAdoptsAnAmbiguousCheckpoint(t *testing.T) {
	for _, n := range []int32{1, 2} {
		t.Run(fmt.Sprintf("ambiguous=%d", n), func(t *testing.T) {
			var s sink
			r := newShardRig(t, actors.FuncProcessor(func(_ context.Context, b messages.Batch) error { s.add(b); return nil }))
			as := &ambiguousStore{MemStore: r.store}
			as.fail.Store(n)
			r.deps.Store = as
			first := r.put(names("a", 3)...)
			r.start()
			s.waitFor(t, names("a", 3))
			m := r.deps.Metrics
			eventually(t, 2*time.Second, "the ambiguous writes and the one after them", func() bool {
				return as.applied.Load() == n && testutil.ToFloat64(m.LeaseWrites.WithLabelValues("checkpoint", "ok")) >= 1
			})
			r.waitCheckpoint(first[2].SequenceNumber)

			more := r.put(names("b", 3)...)
			s.waitFor(t, append(names("a", 3), names("b", 3)...))
			r.waitCheckpoint(more[2].SequenceNumber)
			if _, ok := r.finished(); ok {
				t.Fatal("the shard finished")
			}
			if row := r.row(); row.Owner != "me" {
				t.Errorf("row %+v", row)
			}
			if lost, errs := testutil.ToFloat64(m.LeaseWrites.WithLabelValues("checkpoint", "lost")), testutil.ToFloat64(m.LeaseWrites.WithLabelValues("checkpoint", "error")); lost != 0 || errs != float64(n) {
				t.Errorf("checkpoint writes: %v lost, %v failed; want 0 and %d", lost, errs, n)
			}
			if l := testutil.ToFloat64(m.LeaseLosses); l != 0 {
				t.Errorf("lease losses %v", l)
			}
		})
	}
}

// A lease another owner took in the store stops the shard at its next
// write: LeaseLost to the parent and to the processor, and nothing written
// after it (no release of another's lease).
func TestShardStopsOnALeaseTakenAway(t *testing.T) {
	var s sink
	var lost atomic.Int32
	props := observed(actors.FuncProcessor(func(_ context.Context, b messages.Batch) error { s.add(b); return nil }), func(_ *actor.PID, msg any) {
		if m, ok := msg.(messages.LeaseLost); ok && m.ShardID == testShard {
			lost.Add(1)
		}
	})
	r := newShardRig(t, props)
	r.put(names("a", 3)...)
	r.start()
	s.waitFor(t, names("a", 3))
	theirs := r.take("other")
	r.put("b")
	f := r.waitFinished()
	if f.Outcome != shardfsm.LeaseLost || !errors.Is(f.Err, lease.ErrLeaseLost) || f.ShardID != testShard {
		t.Errorf("finished %+v", f)
	}
	eventually(t, time.Second, "the processor to be told", func() bool { return lost.Load() == 1 })
	if row := r.row(); row.Owner != "other" || row.Counter != theirs.Counter {
		t.Errorf("row %+v after the loss, want it as the other owner took it (counter %d)", row, theirs.Counter)
	}
	m := r.deps.Metrics
	if n := testutil.ToFloat64(m.LeaseLosses); n != 1 {
		t.Errorf("lease losses %v", n)
	}
	if n := testutil.ToFloat64(m.ShardsFinished.WithLabelValues("lease-lost")); n != 1 {
		t.Errorf("shards finished lease-lost %v", n)
	}
}

// seriesOf lists the metric series of the registry labelled shard=id.
func seriesOf(t *testing.T, reg *prometheus.Registry, id string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "shard" && l.GetValue() == id {
					out = append(out, mf.GetName())
				}
			}
		}
	}
	return out
}

// A shard that finishes (here: a graceful stop) leaves no per-shard
// series, no board entry and no state counted; its lease is released.
func TestShardForgetsItsSeriesWhenFinished(t *testing.T) {
	var s sink
	r := newShardRig(t, actors.FuncProcessor(func(_ context.Context, b messages.Batch) error { s.add(b); return nil }))
	recs := r.put(names("a", 12)...)
	r.start()
	s.waitFor(t, names("a", 12))
	r.waitCheckpoint(recs[11].SequenceNumber)
	want := []string{"kinactor_bytes_processed_total", "kinactor_millis_behind_latest", "kinactor_records_processed_total"}
	if got := seriesOf(t, r.reg, testShard); !slices.Equal(got, want) {
		t.Fatalf("series while running: %v, want %v", got, want)
	}
	if v := r.deps.Board.Shards(); len(v) != 1 || v[0].ShardID != testShard {
		t.Fatalf("board %+v", v)
	}

	r.sys.Root.Send(r.child(), shardfsm.StopRequested{})
	if f := r.waitFinished(); f.Outcome != shardfsm.Released {
		t.Fatalf("finished %+v", f)
	}
	if got := seriesOf(t, r.reg, testShard); len(got) != 0 {
		t.Errorf("series after the shard finished: %v", got)
	}
	if v := r.deps.Board.Shards(); len(v) != 0 {
		t.Errorf("board after the shard finished: %+v", v)
	}
	for _, st := range shardfsm.AllStates {
		if n := testutil.ToFloat64(r.deps.Metrics.ShardStates.WithLabelValues(st.String())); n != 0 {
			t.Errorf("%v shards in %s", n, st)
		}
	}
	if row := r.row(); row.Owner != "" || row.Checkpoint.SequenceNumber != recs[11].SequenceNumber {
		t.Errorf("row after the stop %+v", row)
	}
}

// The board shows the shard's progress and lag; throttled reads past
// StallTimeout show it stalled on Kinesis (board and parent), and it moves
// again when the throttling ends.
func TestShardBoardShowsProgressAndStall(t *testing.T) {
	hold := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(hold) }) })
	var s sink
	r := newShardRig(t, actors.FuncProcessor(func(ctx context.Context, b messages.Batch) error {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.add(b)
		return nil
	}))
	r.deps.Machine.StallTimeout = 150 * time.Millisecond
	clock := time.Now().Add(-10 * time.Second) // the records arrived 10 s ago
	r.mem.SetClock(func() time.Time { return clock })
	r.put(names("a", 30)...)
	r.mem.SetClock(time.Now)
	r.start()

	// The processor holds the first batch: the lag of the last read shows.
	eventually(t, time.Second, "the lag on the board", func() bool {
		v := r.deps.Board.Shards()
		return len(v) == 1 && v[0].MillisBehindLatest >= 9000
	})
	once.Do(func() { close(hold) })
	s.waitFor(t, names("a", 30))
	eventually(t, time.Second, "the lag to go", func() bool { return r.deps.Board.Shards()[0].MillisBehindLatest == 0 })
	if v := r.deps.Board.Shards()[0]; time.Since(v.LastProgress) > time.Second || v.StalledOn != "" {
		t.Fatalf("board %+v", v)
	}

	r.mem.SetFault(func(_ context.Context, op, _ string) error {
		if op == stream.OpGetRecords {
			return stream.Throttle()
		}
		return nil
	})
	stalledAt := time.Now()
	eventually(t, time.Second, "the stall on the board", func() bool { return r.deps.Board.Shards()[0].StalledOn == "kinesis" })
	if since := time.Since(stalledAt); since > 600*time.Millisecond {
		t.Errorf("stall seen after %v (StallTimeout 150ms)", since)
	}
	if got := r.deps.Board.Stalled(); !slices.Equal(got, []string{testShard + " (kinesis)"}) {
		t.Errorf("Stalled() %v", got)
	}
	if v := r.deps.Board.Shards()[0]; time.Since(v.LastProgress) < 150*time.Millisecond {
		t.Errorf("stalled, but progress %v ago", time.Since(v.LastProgress))
	}
	if n := testutil.ToFloat64(r.deps.Metrics.FetchErrors.WithLabelValues("throttled")); n < 1 {
		t.Errorf("throttled fetches %v", n)
	}

	r.mem.SetFault(nil)
	eventually(t, time.Second, "the shard to move again", func() bool { return r.deps.Board.Shards()[0].StalledOn == "" })
	if got := r.deps.Board.Stalled(); len(got) != 0 {
		t.Errorf("Stalled() %v", got)
	}
	eventually(t, time.Second, "the parent to hear both", func() bool { return slices.Equal(r.stalls(), []string{"kinesis", ""}) })
}

// noChildShards is a stream whose GetRecords does not report ChildShards
// (kinesalite): the shell lists the shards to find the children.
type noChildShards struct{ *stream.MemStream }

func (s noChildShards) GetRecords(ctx context.Context, it string, limit int32) (stream.Batch, error) {
	b, err := s.MemStream.GetRecords(ctx, it, limit)
	b.ChildShards = nil
	return b, err
}

// A shard read to its end writes SHARD_END with its children, whether
// GetRecords names them or the shell has to list the shards, tells the
// processor, releases the lease and finishes with ShardEnd.
func TestShardEndWritesChildren(t *testing.T) {
	for _, listed := range []bool{false, true} {
		t.Run(fmt.Sprintf("listed=%v", listed), func(t *testing.T) {
			var s sink
			var ended atomic.Pointer[messages.ShardEnded]
			props := observed(actors.FuncProcessor(func(_ context.Context, b messages.Batch) error { s.add(b); return nil }), func(_ *actor.PID, msg any) {
				if m, ok := msg.(messages.ShardEnded); ok {
					ended.Store(&m)
				}
			})
			r := newShardRig(t, props)
			if listed {
				r.deps.Stream = noChildShards{r.mem}
			}
			r.put(names("a", 5)...)
			kids, err := r.mem.SplitShard(testShard, "")
			if err != nil {
				t.Fatal(err)
			}
			r.start()
			f := r.waitFinished()
			if f.Outcome != shardfsm.ShardEnd || !slices.Equal(f.Children, kids) {
				t.Errorf("finished %+v, want children %v", f, kids)
			}
			s.waitFor(t, names("a", 5))
			row := r.row()
			if !row.Checkpoint.IsShardEnd() || !slices.Equal(row.ChildShardIDs, kids) || row.Owner != "" {
				t.Errorf("row %+v", row)
			}
			if e := ended.Load(); e == nil || !slices.Equal(e.Children, kids) {
				t.Errorf("the processor was told %+v", e)
			}
			if n := r.mem.Calls(stream.OpListShards); (n > 0) != listed {
				t.Errorf("%d ListShards calls", n)
			}
		})
	}
}

// Expired iterators and throttling are counted by kind, and the shard
// carries on from the last record it read: nothing lost, nothing twice.
func TestShardRecoversFromExpiredIteratorsAndThrottling(t *testing.T) {
	var s sink
	r := newShardRig(t, actors.FuncProcessor(func(_ context.Context, b messages.Batch) error { s.add(b); return nil }))
	var throttles atomic.Int32
	r.mem.SetFault(func(_ context.Context, op, _ string) error {
		if op == stream.OpGetRecords && throttles.Load() > 0 {
			throttles.Add(-1)
			return stream.Throttle()
		}
		return nil
	})
	r.put(names("a", 15)...)
	r.start()
	s.waitFor(t, names("a", 15))
	iters := r.mem.Calls(stream.OpGetShardIterator)

	r.mem.ExpireIterators()
	r.put(names("b", 15)...)
	s.waitFor(t, append(names("a", 15), names("b", 15)...))
	if n := testutil.ToFloat64(r.deps.Metrics.FetchErrors.WithLabelValues("expired_iterator")); n != 1 {
		t.Errorf("expired-iterator errors %v", n)
	}
	if n := r.mem.Calls(stream.OpGetShardIterator); n != iters+1 {
		t.Errorf("%d iterators after the expiry, want 1", n-iters)
	}

	throttles.Store(3)
	last := r.put(names("c", 5)...)
	s.waitFor(t, append(append(names("a", 15), names("b", 15)...), names("c", 5)...))
	r.waitCheckpoint(last[4].SequenceNumber)
	if n := testutil.ToFloat64(r.deps.Metrics.FetchErrors.WithLabelValues("throttled")); n != 3 {
		t.Errorf("throttled errors %v", n)
	}
	if n := testutil.ToFloat64(r.deps.Metrics.FetchErrors.WithLabelValues("other")); n != 0 {
		t.Errorf("other fetch errors %v", n)
	}
}

// A shard the stream does not have (ErrShardNotFound from Iterator) is
// given up: Unreadable, lease released.
func TestShardUnknownToTheStreamIsUnreadable(t *testing.T) {
	r := newShardRig(t, funcProps())
	r.deps.Stream = stream.NewMemStream("other", 0)
	r.start()
	f := r.waitFinished()
	if f.Outcome != shardfsm.Unreadable || !errors.Is(f.Err, stream.ErrShardNotFound) {
		t.Errorf("finished %+v", f)
	}
	if row := r.row(); row.Owner != "" {
		t.Errorf("row %+v", row)
	}
}

// A child waits for its parents' rows to reach SHARD_END (a missing row
// counts as done), read from the store, before it reads the stream.
func TestShardWaitsForParents(t *testing.T) {
	ctx := context.Background()
	var s sink
	r := newShardRig(t, actors.FuncProcessor(func(_ context.Context, b messages.Batch) error { s.add(b); return nil }))
	// The rig's shard becomes the child of a parent row and a missing one.
	if err := r.store.Create(ctx, lease.Lease{Key: "parent"}); err != nil {
		t.Fatal(err)
	}
	row := r.row()
	if err := r.store.Delete(ctx, row); err != nil {
		t.Fatal(err)
	}
	if err := r.store.Create(ctx, lease.Lease{Key: testShard, ParentShardIDs: []string{"parent", "gone"}}); err != nil {
		t.Fatal(err)
	}
	var checks atomic.Int32
	r.store.SetFail(func(op, key string) error {
		if op == "get" && key == "parent" {
			checks.Add(1)
		}
		return nil
	})
	r.put("a")
	r.start()
	eventually(t, time.Second, "a few parent checks", func() bool { return checks.Load() >= 3 })
	if err := r.touch(time.Second); err != nil {
		t.Fatal(err)
	}
	if n := r.mem.Calls(stream.OpGetShardIterator); n != 0 || len(s.got()) != 0 {
		t.Fatalf("read the shard before its parent ended (%d iterators)", n)
	}
	p, err := r.store.Get(ctx, "parent")
	if err != nil {
		t.Fatal(err)
	}
	if p, err = r.store.Take(ctx, p, "other", lease.TakeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.store.Checkpoint(ctx, p, lease.Checkpoint{SequenceNumber: lease.CheckpointShardEnd}, []string{testShard}); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, []string{"a"})
}
