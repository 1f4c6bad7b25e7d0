package actors_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/messages"
)

// Tests of the adapter actors (FromProcessor, FuncProcessor) on a real
// actor system, under a parent that restarts a panicking child as the
// shard actor does.

const shard = "shardId-000000000001"

// rig runs processor props as the child of a supervising parent.
type rig struct {
	t     *testing.T
	sys   *actor.ActorSystem
	child *actor.PID

	mu       sync.Mutex
	failures []any // the reasons of the child's panics
}

func newRig(t *testing.T, props *actor.Props) *rig {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := &rig{t: t, sys: actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))}
	t.Cleanup(r.sys.Shutdown)
	pids := make(chan *actor.PID, 1)
	strategy := actor.NewOneForOneStrategy(100, time.Minute, func(reason any) actor.Directive {
		r.mu.Lock()
		r.failures = append(r.failures, reason)
		r.mu.Unlock()
		return actor.RestartDirective
	})
	parent := actor.PropsFromFunc(func(c actor.Context) {
		if _, ok := c.Message().(*actor.Started); ok {
			pids <- c.Spawn(props)
		}
	}, actor.WithSupervisor(strategy))
	r.sys.Root.Spawn(parent)
	r.child = <-pids
	return r
}

// ask sends msg to the processor and returns its answer.
func (r *rig) ask(msg any) any {
	r.t.Helper()
	res, err := r.sys.Root.RequestFuture(r.child, msg, 5*time.Second).Result()
	if err != nil {
		r.t.Fatalf("%T: no answer: %v", msg, err)
	}
	return res
}

// processed sends a batch and returns the Processed it is answered with.
func (r *rig) processed(b messages.Batch) messages.Processed {
	r.t.Helper()
	res := r.ask(b)
	p, ok := res.(messages.Processed)
	if !ok {
		r.t.Fatalf("batch %d: answer %T %v, want messages.Processed", b.BatchID, res, res)
	}
	if p.BatchID != b.BatchID {
		r.t.Fatalf("batch %d: answered with BatchID %d", b.BatchID, p.BatchID)
	}
	return p
}

// sync returns once the processor has handled every message sent before.
func (r *rig) sync() {
	r.t.Helper()
	r.ask(&actor.Touch{})
}

func (r *rig) panics() []any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.failures)
}

func batch(id uint64, seqs ...string) messages.Batch {
	b := messages.Batch{ShardID: shard, BatchID: id, Attempt: 1}
	for _, s := range seqs {
		b.Records = append(b.Records, messages.Record{SequenceNumber: s, PartitionKey: "k"})
	}
	return b
}

// journal is what a test processor was called with, in order.
type journal struct {
	mu    sync.Mutex
	calls []string
	made  []string // the shard ids newProcessor was called with
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	j.calls = append(j.calls, fmt.Sprintf(format, args...))
	j.mu.Unlock()
}

func (j *journal) got() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.calls)
}

func (j *journal) factory(make func(n int) actors.Processor) func(string) actors.Processor {
	return func(shardID string) actors.Processor {
		j.mu.Lock()
		j.made = append(j.made, shardID)
		n := len(j.made)
		j.mu.Unlock()
		return make(n)
	}
}

func (j *journal) values() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.made)
}

// fn is a Processor that implements nothing optional.
type fn func(ctx context.Context, b messages.Batch) (actors.Result, error)

func (f fn) ProcessRecords(ctx context.Context, b messages.Batch) (actors.Result, error) {
	return f(ctx, b)
}

func TestEveryBatchIsAnsweredWithTheResultsCheckpoint(t *testing.T) {
	results := map[uint64]actors.Result{
		1: {Checkpoint: messages.CheckpointAt("11", 0)},
		2: {}, // acknowledged, no checkpoint
		3: {Checkpoint: messages.CheckpointBatchEnd()},
	}
	var j journal
	r := newRig(t, actors.FromProcessor(j.factory(func(int) actors.Processor {
		return fn(func(_ context.Context, b messages.Batch) (actors.Result, error) {
			j.add("batch %d %d records", b.BatchID, len(b.Records))
			return results[b.BatchID], nil
		})
	})))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, StartingCheckpoint: "TRIM_HORIZON"})
	for id := uint64(1); id <= 3; id++ {
		p := r.processed(batch(id, "1"+fmt.Sprint(id), "2"+fmt.Sprint(id)))
		if p.Err != nil || p.Checkpoint != results[id].Checkpoint {
			t.Errorf("batch %d: answered %+v, want checkpoint %v and no error", id, p, results[id].Checkpoint)
		}
	}
	if got, want := j.got(), []string{"batch 1 2 records", "batch 2 2 records", "batch 3 2 records"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	if got := j.values(); !slices.Equal(got, []string{shard}) {
		t.Errorf("newProcessor called for %q, want once for %s", got, shard)
	}
}

func TestAnErrorAnswersTheBatchAsFailed(t *testing.T) {
	boom := errors.New("sink refused")
	r := newRig(t, actors.FromProcessor(func(string) actors.Processor {
		return fn(func(_ context.Context, b messages.Batch) (actors.Result, error) {
			if b.Attempt == 1 {
				// The Result beside an error is ignored.
				return actors.Result{Checkpoint: messages.CheckpointBatchEnd()}, boom
			}
			return actors.Result{Checkpoint: messages.CheckpointBatchEnd()}, nil
		})
	}))
	b := batch(4, "1")
	p := r.processed(b)
	if !errors.Is(p.Err, boom) || p.Checkpoint != (messages.Checkpoint{}) {
		t.Fatalf("failed batch answered %+v, want the error and no checkpoint", p)
	}
	b.Attempt++ // the shard delivers it again
	if p := r.processed(b); p.Err != nil || p.Checkpoint.Mode != messages.AtBatchEnd {
		t.Fatalf("redelivered batch answered %+v", p)
	}
	if n := len(r.panics()); n != 0 {
		t.Errorf("%d restarts for an error", n)
	}
}

func TestAPanicRestartsWithAFreshValue(t *testing.T) {
	var j journal
	r := newRig(t, actors.FromProcessor(j.factory(func(n int) actors.Processor {
		return &full{j: &j, n: n, panicOn: map[int]bool{1: true}}
	})))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, StartingCheckpoint: "TRIM_HORIZON"})
	b := batch(1, "1", "2")
	// The panic drops the message: no answer, the supervisor restarts.
	if _, err := r.sys.Root.RequestFuture(r.child, b, 200*time.Millisecond).Result(); err == nil {
		t.Fatal("a panicking processor answered")
	}
	waitFor(t, "the restart", func() bool { return len(r.panics()) == 1 })
	// What the shard actor does after ProcessorCrashed.
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, StartingCheckpoint: "TRIM_HORIZON", Restarted: true})
	b.Attempt++
	if p := r.processed(b); p.Err != nil || p.Checkpoint.Mode != messages.AtBatchEnd {
		t.Fatalf("redelivered batch answered %+v", p)
	}
	want := []string{
		"1 initialize TRIM_HORIZON restarted=false",
		"1 batch 1 attempt 1",
		"2 initialize TRIM_HORIZON restarted=true",
		"2 batch 1 attempt 2",
	}
	if got := j.got(); !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	if got := j.values(); len(got) != 2 {
		t.Errorf("newProcessor called %d times, want 2 (a fresh value after the panic)", len(got))
	}
}

// full implements every optional interface and notes each call, prefixed
// by which value (1 = the first newProcessor made) it was.
type full struct {
	j        *journal
	n        int
	panicOn  map[int]bool // attempts that panic
	failInit int          // Initialize calls that fail
	inits    int
	ctx      context.Context // the context of the last call
}

func (p *full) Initialize(ctx context.Context, in messages.Initialized) error {
	p.ctx = ctx
	p.inits++
	p.j.add("%d initialize %s restarted=%v", p.n, in.StartingCheckpoint, in.Restarted)
	if p.inits <= p.failInit {
		return fmt.Errorf("init %d failed", p.inits)
	}
	return nil
}

func (p *full) ProcessRecords(ctx context.Context, b messages.Batch) (actors.Result, error) {
	p.ctx = ctx
	p.j.add("%d batch %d attempt %d", p.n, b.BatchID, b.Attempt)
	if p.panicOn[b.Attempt] {
		panic("injected panic in ProcessRecords")
	}
	return actors.Result{Checkpoint: messages.CheckpointBatchEnd()}, nil
}

func (p *full) Shutdown(ctx context.Context, req messages.ShutdownRequested) messages.Checkpoint {
	p.ctx = ctx
	p.j.add("%d shutdown %s", p.n, req.ShardID)
	return messages.CheckpointAt("42", 3)
}

func (p *full) ShardEnded(ctx context.Context, e messages.ShardEnded) {
	p.ctx = ctx
	p.j.add("%d shard ended %v", p.n, e.Children)
}

func (p *full) LeaseLost(ctx context.Context, l messages.LeaseLost) {
	p.ctx = ctx
	p.j.add("%d lease lost %s", p.n, l.ShardID)
}

func (p *full) CheckpointRefused(ctx context.Context, c messages.CheckpointRefused) {
	p.ctx = ctx
	p.j.add("%d refused %d: %v", p.n, c.BatchID, c.Err)
}

func TestOptionalInterfacesAreCalledWhenImplemented(t *testing.T) {
	var j journal
	var value *full
	r := newRig(t, actors.FromProcessor(j.factory(func(n int) actors.Processor {
		value = &full{j: &j, n: n}
		return value
	})))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, StartingCheckpoint: "7"})
	r.processed(batch(1, "8"))
	r.sys.Root.Send(r.child, messages.CheckpointRefused{ShardID: shard, BatchID: 1, Err: errors.New("backwards")})
	r.sys.Root.Send(r.child, messages.ShardEnded{ShardID: shard, Children: []string{"c1", "c2"}})
	ack, ok := r.ask(messages.ShutdownRequested{ShardID: shard}).(messages.ShutdownAck)
	if !ok || ack.Checkpoint != messages.CheckpointAt("42", 3) {
		t.Fatalf("ShutdownRequested answered %T %+v, want the handler's checkpoint 42/3", ack, ack)
	}
	r.sys.Root.Send(r.child, messages.LeaseLost{ShardID: shard})
	r.sync()
	want := []string{
		"1 initialize 7 restarted=false",
		"1 batch 1 attempt 1",
		"1 refused 1: backwards",
		"1 shard ended [c1 c2]",
		"1 shutdown " + shard,
		"1 lease lost " + shard,
	}
	if got := j.got(); !slices.Equal(got, want) {
		t.Errorf("calls\n%q\nwant\n%q", got, want)
	}
	if value.ctx.Err() == nil {
		t.Error("the processor's context did not end after LeaseLost")
	}
}

func TestOptionalInterfacesAreSkippedWhenNotImplemented(t *testing.T) {
	var j journal
	r := newRig(t, actors.FromProcessor(j.factory(func(int) actors.Processor {
		return fn(func(_ context.Context, b messages.Batch) (actors.Result, error) {
			j.add("batch %d", b.BatchID)
			return actors.Result{}, nil
		})
	})))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard})
	if p := r.processed(batch(1, "1")); p.Err != nil || p.Checkpoint != (messages.Checkpoint{}) {
		t.Errorf("zero Result answered %+v, want no checkpoint", p)
	}
	r.sys.Root.Send(r.child, messages.CheckpointRefused{ShardID: shard, BatchID: 1})
	r.sys.Root.Send(r.child, messages.ShardEnded{ShardID: shard})
	r.sys.Root.Send(r.child, messages.LeaseLost{ShardID: shard})
	ack, ok := r.ask(messages.ShutdownRequested{ShardID: shard}).(messages.ShutdownAck)
	if !ok || ack.Checkpoint != (messages.Checkpoint{}) {
		t.Errorf("ShutdownRequested answered %T %+v, want ShutdownAck with no checkpoint", ack, ack)
	}
	if got := j.got(); !slices.Equal(got, []string{"batch 1"}) {
		t.Errorf("calls %q", got)
	}
	if n := len(r.panics()); n != 0 {
		t.Errorf("%d panics", n)
	}
}

// A ShutdownRequested that reaches a processor before anything else (a
// replacement during a stop) is answered without making a value.
func TestShutdownBeforeAnythingIsAnswered(t *testing.T) {
	var j journal
	r := newRig(t, actors.FromProcessor(j.factory(func(n int) actors.Processor { return &full{j: &j, n: n} })))
	ack, ok := r.ask(messages.ShutdownRequested{ShardID: shard}).(messages.ShutdownAck)
	if !ok || ack.Checkpoint != (messages.Checkpoint{}) {
		t.Errorf("ShutdownRequested answered %T %+v, want ShutdownAck with no checkpoint", ack, ack)
	}
	if got := j.values(); len(got) != 0 {
		t.Errorf("newProcessor called for %q", got)
	}
}

func TestInitializeErrorFailsBatchesUntilItSucceeds(t *testing.T) {
	var j journal
	r := newRig(t, actors.FromProcessor(j.factory(func(n int) actors.Processor {
		return &full{j: &j, n: n, failInit: 2}
	})))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard, StartingCheckpoint: "TRIM_HORIZON"})
	b := batch(1, "1")
	if p := r.processed(b); p.Err == nil {
		t.Fatalf("batch after two failed Initialize answered %+v, want an error", p)
	}
	// Initialize still failing: no shutdown handler for it either.
	if ack := r.ask(messages.ShutdownRequested{ShardID: shard}).(messages.ShutdownAck); ack.Checkpoint != (messages.Checkpoint{}) {
		t.Errorf("uninitialized processor's ShutdownAck %+v, want no checkpoint", ack)
	}
	b.Attempt++
	if p := r.processed(b); p.Err != nil {
		t.Fatalf("batch after Initialize succeeded answered %+v", p)
	}
	want := []string{
		"1 initialize TRIM_HORIZON restarted=false", // fails
		"1 initialize TRIM_HORIZON restarted=false", // fails, before attempt 1
		"1 initialize TRIM_HORIZON restarted=false", // succeeds, before attempt 2
		"1 batch 1 attempt 2",
	}
	if got := j.got(); !slices.Equal(got, want) {
		t.Errorf("calls\n%q\nwant\n%q", got, want)
	}
}

func TestTheBatchDeadlineEndsTheContext(t *testing.T) {
	deadlines := make(chan time.Time, 1)
	r := newRig(t, actors.FromProcessor(func(string) actors.Processor {
		return fn(func(ctx context.Context, _ messages.Batch) (actors.Result, error) {
			d, _ := ctx.Deadline()
			deadlines <- d
			select {
			case <-ctx.Done():
				return actors.Result{}, ctx.Err()
			case <-time.After(5 * time.Second):
				return actors.Result{}, errors.New("the context outlived the deadline")
			}
		})
	}))
	b := batch(1, "1")
	b.Deadline = time.Now().Add(100 * time.Millisecond)
	p := r.processed(b)
	if !errors.Is(p.Err, context.DeadlineExceeded) {
		t.Errorf("answered %+v, want context.DeadlineExceeded", p)
	}
	if d := <-deadlines; !d.Equal(b.Deadline) {
		t.Errorf("context deadline %v, want the batch's %v", d, b.Deadline)
	}
}

func TestFactoryReturningNilFailsEveryBatch(t *testing.T) {
	if actors.FromProcessor(nil) != nil {
		t.Error("FromProcessor(nil) returned props")
	}
	r := newRig(t, actors.FromProcessor(func(string) actors.Processor { return nil }))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard})
	if p := r.processed(batch(1, "1")); !errors.Is(p.Err, actors.ErrNoProcessor) {
		t.Errorf("answered %+v, want ErrNoProcessor", p)
	}
	if ack, ok := r.ask(messages.ShutdownRequested{ShardID: shard}).(messages.ShutdownAck); !ok || ack.Checkpoint != (messages.Checkpoint{}) {
		t.Errorf("ShutdownRequested answered %+v", ack)
	}
}

func TestFuncProcessor(t *testing.T) {
	boom := errors.New("boom")
	r := newRig(t, actors.FuncProcessor(func(_ context.Context, b messages.Batch) error {
		switch b.Attempt {
		case 1:
			return boom
		case 2:
			panic("injected panic in a ProcessorFunc")
		}
		return nil
	}))
	r.sys.Root.Send(r.child, messages.Initialized{ShardID: shard})
	b := batch(1, "1")
	if p := r.processed(b); !errors.Is(p.Err, boom) {
		t.Errorf("error answered %+v", p)
	}
	b.Attempt++
	if _, err := r.sys.Root.RequestFuture(r.child, b, 200*time.Millisecond).Result(); err == nil {
		t.Fatal("a panicking function answered")
	}
	waitFor(t, "the restart", func() bool { return len(r.panics()) == 1 })
	b.Attempt++
	if p := r.processed(b); p.Err != nil || p.Checkpoint.Mode != messages.AtBatchEnd {
		t.Errorf("nil answered %+v, want a checkpoint at batch end", p)
	}
	if ack, ok := r.ask(messages.ShutdownRequested{ShardID: shard}).(messages.ShutdownAck); !ok || ack.Checkpoint.Mode != messages.AtBatchEnd {
		t.Errorf("ShutdownRequested answered %+v, want a checkpoint at batch end", ack)
	}
}

// waitFor polls cond until it holds, for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
