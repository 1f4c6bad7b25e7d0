package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/shardfsm"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

// Tests of the shard actor and the pause watch: a pause (or a death
// declared by gossip) makes the shard verify its lease with a write before
// it delivers more, whether it started before it or its take did.

// fakePauses is a pause watch on a clock of the test's: pause(d) makes the
// next mark see a gap of d.
func fakePauses() (w *PauseWatch, pause func(time.Duration)) {
	w = NewPauseWatch(500 * time.Millisecond)
	var mono atomic.Int64
	wall0 := w.start.UnixNano()
	w.clock = func() (time.Duration, int64) {
		m := mono.Load()
		return time.Duration(m), wall0 + m
	}
	return w, func(d time.Duration) { mono.Add(int64(d)) }
}

// eventLog is what the store and the processor did, in order.
type eventLog struct {
	mu  sync.Mutex
	evs []string
}

func (l *eventLog) add(format string, args ...any) {
	l.mu.Lock()
	l.evs = append(l.evs, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *eventLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

// index is the position of the first event with the prefix, or -1.
func (l *eventLog) index(prefix string) int {
	return slices.IndexFunc(l.all(), func(e string) bool { return strings.HasPrefix(e, prefix) })
}

// loggingStore logs the shard's lease writes and their outcomes; while
// gated, a renewal waits for the gate to open.
type loggingStore struct {
	*lease.MemStore
	log   *eventLog
	gated atomic.Bool
	gate  chan struct{}
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, lease.ErrLeaseLost):
		return "lost"
	}
	return "error"
}

func (s *loggingStore) Renew(ctx context.Context, held lease.Lease) (lease.Lease, error) {
	s.log.add("renew sent")
	if s.gated.Load() {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return lease.Lease{}, ctx.Err()
		}
	}
	l, err := s.MemStore.Renew(ctx, held)
	s.log.add("renew %s", outcome(err))
	return l, err
}

func (s *loggingStore) Checkpoint(ctx context.Context, held lease.Lease, cp lease.Checkpoint, children []string) (lease.Lease, error) {
	l, err := s.MemStore.Checkpoint(ctx, held, cp, children)
	s.log.add("checkpoint %s", outcome(err))
	return l, err
}

// pauseRig is a shard rig with a fake pause watch, a logging store and a
// processor that logs what it is given.
type pauseRig struct {
	*shardRig
	pauses *PauseWatch
	pause  func(time.Duration)
	log    *eventLog
	store  *loggingStore
	s      *sink
}

// newPauseRig: fn, if not nil, runs in the processor before a batch is
// taken as processed.
func newPauseRig(t *testing.T, fn func(context.Context, messages.Batch) error) *pauseRig {
	p := &pauseRig{log: &eventLog{}, s: &sink{}}
	p.shardRig = newShardRig(t, actors.FuncProcessor(func(ctx context.Context, b messages.Batch) error {
		p.log.add("deliver %s", b.Records[0].Data)
		if fn != nil {
			if err := fn(ctx, b); err != nil {
				return err
			}
		}
		p.s.add(b)
		return nil
	}))
	p.pauses, p.pause = fakePauses()
	p.deps.Pauses = p.pauses
	p.store = &loggingStore{MemStore: p.shardRig.store, log: p.log, gate: make(chan struct{})}
	p.deps.Store = p.store
	return p
}

// startAfter takes the lease for "me" as the coordinator does (the pause
// epoch, then the time, then the take), runs between, and spawns the
// shard actor.
func (p *pauseRig) startAfter(between func()) {
	p.t.Helper()
	taken := TakeSent{Epoch: p.pauses.Mark()}
	taken.At = time.Now()
	held := p.take("me")
	between()
	p.rec = &parentRec{props: NewShardProps(p.deps, held, taken)}
	p.parent = p.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &recordingParent{rec: p.rec} }))
}

// A pause right after a take (the coordinator sent it, the process was
// stopped, the shard actor's first step ran on waking): the shard delivered
// a whole lease's worth (400 of 400 records) on a lease another node had
// taken during the pause. Now its first delivery waits for a lease write
// sent after its start: here a renewal, refused, so nothing is delivered and
// the shard finishes LeaseLost; or accepted, and only then the records go.
func TestShardAfterAPauseOverlappingItsTake(t *testing.T) {
	t.Run("lease taken during the pause", func(t *testing.T) {
		p := newPauseRig(t, nil)
		p.put(names("a", 40)...)
		p.startAfter(func() {
			p.pause(15 * time.Second)
			p.take("other")
		})
		f := p.waitFinished()
		if f.Outcome != shardfsm.LeaseLost || !errors.Is(f.Err, lease.ErrLeaseLost) {
			t.Errorf("finished %+v, want lease-lost", f)
		}
		if got := p.s.got(); len(got) != 0 {
			t.Fatalf("delivered %d records on a lease taken during the pause: %v (log %v)", len(got), got, p.log.all())
		}
		if l := p.log.all(); len(l) == 0 || l[0] != "renew sent" {
			t.Errorf("log %v, want a renewal first", l)
		}
	})
	t.Run("lease still ours", func(t *testing.T) {
		p := newPauseRig(t, nil)
		p.put(names("a", 40)...)
		p.startAfter(func() { p.pause(15 * time.Second) })
		p.s.waitFor(t, names("a", 40))
		if r, d := p.log.index("renew ok"), p.log.index("deliver"); r < 0 || r > d {
			t.Fatalf("log %v: the first delivery before the renewal succeeded", p.log.all())
		}
	})
	t.Run("a pause longer than the self-fence", func(t *testing.T) {
		p := newPauseRig(t, nil)
		p.put(names("a", 5)...)
		taken := TakeSent{Epoch: p.pauses.Mark(), At: time.Now().Add(-25 * time.Second)} // LeaseExpiry 20 s
		held := p.take("me")
		p.pause(25 * time.Second)
		p.rec = &parentRec{props: NewShardProps(p.deps, held, taken)}
		p.parent = p.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &recordingParent{rec: p.rec} }))
		if f := p.waitFinished(); f.Outcome != shardfsm.Fenced {
			t.Errorf("finished %+v, want fenced", f)
		}
		if l := p.log.all(); len(l) != 0 {
			t.Fatalf("log %v: a fenced shard read, wrote or delivered", l)
		}
		if n := p.mem.Calls(stream.OpGetShardIterator); n != 0 {
			t.Errorf("%d iterators", n)
		}
	})
	t.Run("control: a pause before the take", func(t *testing.T) {
		p := newPauseRig(t, nil)
		p.put(names("a", 5)...)
		p.pause(15 * time.Second) // seen when the take's epoch is marked
		p.startAfter(func() {})
		p.s.waitFor(t, names("a", 5))
		if i := p.log.index("renew"); i >= 0 {
			t.Fatalf("log %v: a verification, though the take was sent after the pause", p.log.all())
		}
	})
}

// A node that gossip declared dead while it is alive (its shards are being
// taken) starts a new pause epoch (PauseWatch.NewEpoch): every shard
// verifies its lease at once, even one whose processor holds a batch and
// that would not step for seconds, and delivers nothing more until the
// write succeeds; on a lease taken meanwhile it delivers nothing more at
// all and finishes LeaseLost.
func TestShardVerifiesAtOnceOnANewEpoch(t *testing.T) {
	// setup: batch a is with the processor, which holds it until release;
	// batch b is read and held.
	setup := func(t *testing.T) (p *pauseRig, release func()) {
		hold, entered := make(chan struct{}), make(chan struct{}, 1)
		var once sync.Once
		release = func() { once.Do(func() { close(hold) }) }
		t.Cleanup(release)
		var first atomic.Bool
		p = newPauseRig(t, func(ctx context.Context, b messages.Batch) error {
			if first.CompareAndSwap(false, true) {
				entered <- struct{}{}
				select {
				case <-hold:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
		// No timer of the shard's is due for 10 s: only the pause watch's
		// notice makes it step within the 3 s the test waits.
		p.deps.Machine.RenewInterval = 10 * time.Second
		p.deps.Machine.ProcessTimeout = 10 * time.Second
		p.deps.Machine.StallTimeout = 10 * time.Second
		p.put(names("a", 3)...)
		p.startAfter(func() {})
		select {
		case <-entered:
		case <-time.After(2 * time.Second):
			t.Fatal("the processor was not given the first batch")
		}
		// Batch b (records 10 s old, so the read shows a lag) is read and
		// held while the processor works: the shard has nothing to do.
		old := time.Now().Add(-10 * time.Second)
		p.mem.SetClock(func() time.Time { return old })
		p.put(names("b", 12)...)
		p.mem.SetClock(time.Now)
		eventually(t, 2*time.Second, "batch b read", func() bool {
			v := p.deps.Board.Shards()
			return len(v) == 1 && v[0].MillisBehindLatest >= 9000
		})
		if err := p.touch(time.Second); err != nil {
			t.Fatal(err)
		}
		return p, release
	}
	t.Run("lease taken meanwhile", func(t *testing.T) {
		p, release := setup(t)
		p.take("other")
		p.pauses.NewEpoch("declared dead by other")
		eventually(t, 3*time.Second, "a renewal, refused", func() bool { return p.log.index("renew lost") >= 0 })
		// The shard ends once its processor read LeaseLost, or after
		// NotifyGrace: this one is busy with batch a.
		eventually(t, NotifyGrace+3*time.Second, "the shard to finish", func() bool { _, ok := p.finished(); return ok })
		release()
		if f := p.waitFinished(); f.Outcome != shardfsm.LeaseLost {
			t.Errorf("finished %+v, want lease-lost", f)
		}
		for _, e := range p.log.all() {
			if strings.HasPrefix(e, "deliver b") {
				t.Fatalf("log %v: delivered after the lease was lost", p.log.all())
			}
		}
	})
	t.Run("lease still ours", func(t *testing.T) {
		p, release := setup(t)
		p.store.gated.Store(true)
		p.pauses.NewEpoch("declared dead by other")
		eventually(t, 3*time.Second, "a renewal while the processor holds a batch", func() bool { return p.log.index("renew sent") >= 0 })
		release() // batch a is done; batch b is held while the renewal waits
		m := p.deps.Metrics
		eventually(t, time.Second, "the processor's answer", func() bool {
			return testutil.ToFloat64(m.RecordsProcessed.WithLabelValues("test", testShard)) == 3
		})
		if err := p.touch(time.Second); err != nil {
			t.Fatal(err)
		}
		if i := p.log.index("deliver b"); i >= 0 {
			t.Fatalf("log %v: delivered before the renewal succeeded", p.log.all())
		}
		close(p.store.gate)
		p.s.waitFor(t, append(names("a", 3), names("b", 12)...))
		if r, d := p.log.index("renew ok"), p.log.index("deliver b"); r < 0 || r > d {
			t.Fatalf("log %v: delivered before the renewal succeeded", p.log.all())
		}
		if _, ok := p.finished(); ok {
			t.Fatal("the shard finished")
		}
	})
}
