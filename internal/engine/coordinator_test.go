package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/gossip"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/metrics"
	"github.com/kinactor/kinactor/internal/shardfsm"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

// Tests of the coordinator and shard actor shells on the in-memory lease
// store (held to DynamoDB Local by lease's contract test) and the
// in-memory stream (held to kinesalite by stream's), here idle: restarts,
// crashes, stops.

type fakeGossip struct {
	me        string
	calls     atomic.Int64
	panicNext atomic.Bool
}

func (g *fakeGossip) Members() []cluster.Member {
	g.calls.Add(1)
	if g.panicNext.CompareAndSwap(true, false) {
		panic("injected panic in the coordinator")
	}
	return []cluster.Member{{Name: g.me, Meta: cluster.Meta{App: "app"}}}
}
func (g *fakeGossip) Send(string, []byte) error     { return nil }
func (g *fakeGossip) Broadcast([]byte) error        { return nil }
func (g *fakeGossip) UpdateMeta(cluster.Meta) error { return nil }

// panicOnce is a log handler that panics the first time a record with
// message msg is logged (inside the actor that logs it).
type panicOnce struct {
	slog.Handler
	msg  string
	done *atomic.Bool
}

func (h panicOnce) Enabled(context.Context, slog.Level) bool { return true }
func (h panicOnce) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg && h.done.CompareAndSwap(false, true) {
		panic("injected panic in a shard actor")
	}
	return nil
}
func (h panicOnce) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h panicOnce) WithGroup(string) slog.Handler      { return h }

type shellEnv struct {
	sys   *actor.ActorSystem
	store *lease.MemStore
	deps  *Deps
	coord *actor.PID
	gs    *fakeGossip
}

// testDeps are the deps of a node reading an idle stream of the shards
// ids (shardId-000000000000 and on).
func testDeps(store lease.Store, ids []string, proc *actor.Props, log *slog.Logger) *Deps {
	b := backoff.Policy{Base: 20 * time.Millisecond, Cap: 200 * time.Millisecond}
	return &Deps{
		Owner: "me", Store: store, Stream: stream.NewMemStream("test", len(ids)), Processor: proc,
		Machine: shardfsm.Config{
			MaxRecords: 100, MinFetchInterval: 200 * time.Millisecond, IdleTimeBetweenReads: 200 * time.Millisecond,
			ParentPollInterval: 200 * time.Millisecond, RenewInterval: time.Second, CheckpointInterval: time.Second,
			ShutdownTimeout: time.Second, ThrottleBackoff: b, ErrorBackoff: b, ProcessorBackoff: b, MaxProcessorAttempts: 3,
			InitialPosition: stream.Position{Type: ktypes.ShardIteratorTypeTrimHorizon}, LeaseExpiry: 5 * time.Second,
			StallTimeout: 5 * time.Second, ProcessTimeout: 5 * time.Second,
		},
		Metrics: metrics.New(prometheus.NewRegistry()),
		Logger:  log,
		Board:   NewBoard(),
	}
}

func startShell(t *testing.T, shards int, proc *actor.Props, log *slog.Logger, gossip bool, mods ...func(*Deps)) *shellEnv {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	store := lease.NewMemStore()
	var ids []string
	for i := range shards {
		id := fmt.Sprintf("shardId-%012d", i)
		ids = append(ids, id)
		if err := store.Create(context.Background(), lease.Lease{Key: id}); err != nil {
			t.Fatal(err)
		}
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))
	e := &shellEnv{sys: sys, store: store, deps: testDeps(store, ids, proc, log)}
	for _, mod := range mods {
		mod(e.deps)
	}
	cfg := CoordinatorConfig{Deps: e.deps, App: "app", SyncInterval: time.Hour, FollowerSyncInterval: time.Hour,
		LeaseExpiry: 5 * time.Second, StallTimeout: 5 * time.Second, TickInterval: 20 * time.Millisecond}
	if gossip {
		e.gs = &fakeGossip{me: "me"}
		cfg.Gossip = e.gs
	}
	e.coord = sys.Root.Spawn(NewCoordinatorProps(cfg))
	t.Cleanup(func() {
		sys.Root.Stop(e.coord)
		sys.Shutdown()
	})
	return e
}

func (e *shellEnv) status(t *testing.T) Status {
	t.Helper()
	reply := make(chan Status, 1)
	e.sys.Root.Send(e.coord, StatusRequest{Reply: reply})
	select {
	case s := <-reply:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no status")
		return Status{}
	}
}

// waitRunning polls until n shards are in Processing.
func (e *shellEnv) waitRunning(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := e.status(t)
		processing := 0
		for _, s := range st.Shards {
			if s.State == shardfsm.Processing.String() {
				processing++
			}
		}
		if processing == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d shards processing after %s: %+v", processing, n, within, st.Shards)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func funcProps() *actor.Props {
	return actors.FuncProcessor(func(context.Context, messages.Batch) error { return nil })
}

// A shard actor that crashes is taken again at once (it waited for the
// next sync of the table: up to a minute).
func TestCrashedShardActorIsTakenAgainAtOnce(t *testing.T) {
	var crashed atomic.Bool
	log := slog.New(panicOnce{msg: "shard state", done: &crashed})
	e := startShell(t, 1, funcProps(), log, false)
	deadline := time.Now().Add(10 * time.Second)
	for !crashed.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the shard actor never logged")
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.waitRunning(t, 1, 10*time.Second) // the table is read only hourly: only the crash path can do it
	if own := testutil.ToFloat64(e.deps.Metrics.LeaseTakes.WithLabelValues("own")); own < 1 {
		t.Fatalf("lease takes own = %v, want the crashed shard taken again", own)
	}
}

// A panic in the coordinator restarts it cleanly: the old instance's
// ticker stops (no doubled ticks), its shards are taken again, and a stop
// in progress is finished by the new instance (its waiters are told).
func TestCoordinatorPanicRestartsCleanly(t *testing.T) {
	// a processor that never acknowledges a shutdown, so that a stop lasts
	props := actor.PropsFromProducer(func() actor.Actor { return noAck{} })
	e := startShell(t, 3, props, nil, true)
	e.waitRunning(t, 3, 10*time.Second)
	rate := func() float64 {
		a := e.gs.calls.Load()
		time.Sleep(time.Second) // measuring a rate, not waiting for a condition
		return float64(e.gs.calls.Load() - a)
	}
	before := rate()
	e.gs.panicNext.Store(true)
	e.waitRunning(t, 3, 10*time.Second)
	if after := rate(); after > 1.5*before {
		t.Fatalf("view reads %v/s after the restart, %v/s before: the old ticker still runs", after, before)
	}
	done := make(chan []string, 1)
	e.sys.Root.Send(e.coord, StopAll{Done: done, Timeout: 3 * time.Second})
	e.gs.panicNext.Store(true) // dies during the stop
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the stop's waiter was never told: lost with the old instance")
	}
}

type noAck struct{}

func (noAck) Receive(ctx actor.Context) {
	if r, ok := ctx.Message().(messages.Batch); ok {
		ctx.Respond(messages.Processed{BatchID: r.BatchID})
	}
}

// A graceful stop releases every lease; one that runs out of time names
// what it left.
func TestStopReleasesOrNamesWhatIsLeft(t *testing.T) {
	e := startShell(t, 2, funcProps(), nil, false)
	e.waitRunning(t, 2, 10*time.Second)
	done := make(chan []string, 1)
	e.sys.Root.Send(e.coord, StopAll{Done: done, Timeout: 10 * time.Second})
	select {
	case left := <-done:
		if len(left) != 0 {
			t.Fatalf("left %v", left)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("stop never finished")
	}
	rows, _ := e.store.List(context.Background())
	for _, r := range rows {
		if r.Owner != "" {
			t.Fatalf("row %+v not released", r)
		}
	}

	e2 := startShell(t, 2, funcProps(), nil, false)
	e2.waitRunning(t, 2, 10*time.Second)
	e2.store.SetFail(func(op, key string) error { // DynamoDB gone
		return fmt.Errorf("%s %s: connection refused", op, key)
	})
	done = make(chan []string, 1)
	e2.sys.Root.Send(e2.coord, StopAll{Done: done, Timeout: 2 * time.Second})
	select {
	case left := <-done:
		if len(left) != 2 {
			t.Fatalf("left %v, want both shards", left)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("stop with the store failing never finished")
	}
}

func TestAppliedEarlier(t *testing.T) {
	held := lease.Lease{Key: "k", Owner: "me", Counter: 7}
	cases := []struct {
		row  lease.Lease
		want bool
	}{
		{lease.Lease{Key: "k", Owner: "me", Counter: 8}, true}, // our renew or checkpoint
		{lease.Lease{Key: "k", Owner: "", Counter: 8}, true},   // our release
		{lease.Lease{Key: "k", Owner: "other", Counter: 8}, false},
		{lease.Lease{Key: "k", Owner: "me", Counter: 9}, false},
		{lease.Lease{Key: "k", Owner: "me", Counter: 7}, false},
		{lease.Lease{Key: "j", Owner: "me", Counter: 8}, false},
	}
	for _, c := range cases {
		if _, ok := AppliedEarlier(held, c.row); ok != c.want {
			t.Errorf("row %+v: %v, want %v", c.row, ok, c.want)
		}
	}
}

// A node that learns another member declared it dead (gossip's
// SelfDeclaredDead) stops delivering at once: every shard verifies its
// lease with a write before it delivers more, rather than at its next
// renewal (an hour away here).
func TestDeclaredDeadVerifiesEveryLease(t *testing.T) {
	pw := NewPauseWatch(0)
	e := startShell(t, 2, funcProps(), nil, true, func(d *Deps) {
		d.Pauses = pw
		d.Machine.RenewInterval, d.Machine.CheckpointInterval = time.Hour, time.Hour
		d.Machine.LeaseExpiry, d.Machine.StallTimeout = 3*time.Hour, time.Hour
	})
	e.waitRunning(t, 2, 10*time.Second)
	ctx := context.Background()
	counters := func() map[string]int64 {
		out := map[string]int64{}
		for _, id := range []string{"shardId-000000000000", "shardId-000000000001"} {
			l, err := e.store.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			out[id] = l.Counter
		}
		return out
	}
	before := counters()
	e.sys.Root.Send(e.coord, MembershipChanged{Event: gossip.Event{Kind: gossip.SelfDeclaredDead, Member: cluster.Member{Name: "me"}, Accuser: "b"}})
	deadline := time.Now().Add(5 * time.Second)
	for {
		now := counters()
		if now["shardId-000000000000"] > before["shardId-000000000000"] && now["shardId-000000000001"] > before["shardId-000000000001"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lease write within 5s of being declared dead: counters %v, before %v", now, before)
		}
		time.Sleep(20 * time.Millisecond) // polling the store: nothing to wait on
	}
	if got := testutil.ToFloat64(e.deps.Metrics.DeclaredDead); got != 1 {
		t.Errorf("kinactor_declared_dead_total = %v, want 1", got)
	}
	if r := pw.Reason(); r != "declared dead by b" {
		t.Errorf("pause watch reason %q", r)
	}
}
