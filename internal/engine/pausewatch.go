package engine

import (
	"sync"
	"sync/atomic"
	"time"
)

// PauseWatch notices that this process was stopped for a while (SIGSTOP, a
// frozen or suspended VM, a stop-the-world pause): long enough for gossip
// to have declared it dead and another node to have taken its leases,
// though not long enough for its own leases to have lapsed (the self-fence
// covers that). Its ticker marks the time every PauseTick; whoever next
// finds the last mark older than the threshold (the ticker itself, or a
// shard actor about to step, whichever runs first on waking) starts a new
// pause epoch. A shard actor that sees a new epoch verifies its lease
// before delivering more (shardfsm.Paused).
//
// NewEpoch starts an epoch at once, as if a pause had been seen: for a node
// that learns that another member declared it dead while it is alive (its
// shards are being taken), which must stop delivering now, not at its next
// lease write. Gap is then 0 and Reason says why.
//
// Every new epoch is told to the subscribers at once (Subscribe): a shard
// actor sends itself a message and verifies its lease in the step that
// handles it, so an idle shard, or one whose processor holds a batch,
// verifies with a write right away instead of at its next step (a timer
// seconds away, or the processor's answer). A shard also compares the epoch
// at every step, before anything it does in it, so nothing is delivered in
// a new epoch without a verification; the only window is the step already
// running when the epoch starts. The coordinator marks the epoch just before
// it sends a take: a shard started in another epoch verifies before its
// first delivery (shardfsm.Start.VerifyFirst), since a pause or a death
// declared between the take and the start makes the take prove nothing.
//
// The gap is measured on both clocks, monotonic and wall: Linux's monotonic
// clock stops while a VM is suspended. A wall-clock step (NTP) may start an
// epoch by mistake; that costs each shard one extra lease write.
//
// A nil *PauseWatch sees no pauses: Mark returns 0, NewEpoch and Subscribe
// do nothing.
type PauseWatch struct {
	threshold time.Duration
	start     time.Time
	mono      atomic.Int64 // nanoseconds since start of the last mark
	wall      atomic.Int64 // unix nanoseconds of the last mark
	epoch     atomic.Uint64
	cause     atomic.Pointer[pauseCause] // what started the current epoch
	stop      chan struct{}
	// clock reads both clocks: time since start (monotonic) and the unix
	// time in nanoseconds (wall); tests replace it before use.
	clock func() (time.Duration, int64)

	mu     sync.Mutex
	nextID uint64
	subs   map[uint64]func()
}

// pauseCause is what started an epoch: a gap seen on the clocks, or a
// reason given to NewEpoch.
type pauseCause struct {
	gap    time.Duration
	reason string
}

// PauseTick is how often the watch marks the time.
const PauseTick = 100 * time.Millisecond

// DefaultPauseThreshold: a gap this long is taken for a pause. Gossip
// needs about 1.2 s of silence to declare a member dead.
const DefaultPauseThreshold = 500 * time.Millisecond

// NewPauseWatch returns a watch with the given threshold (≤ 0: the
// default) and no ticker (Start starts it; tests call Mark themselves).
func NewPauseWatch(threshold time.Duration) *PauseWatch {
	if threshold <= 0 {
		threshold = DefaultPauseThreshold
	}
	w := &PauseWatch{threshold: threshold, start: time.Now(), stop: make(chan struct{}), subs: map[uint64]func(){}}
	w.clock = func() (time.Duration, int64) {
		now := time.Now()
		return now.Sub(w.start), now.UnixNano()
	}
	w.wall.Store(w.start.UnixNano())
	return w
}

// Start runs the ticker until Stop.
func (w *PauseWatch) Start() {
	go func() {
		t := time.NewTicker(PauseTick)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.Mark()
			}
		}
	}()
}

// Stop ends the ticker.
func (w *PauseWatch) Stop() { close(w.stop) }

// Mark records now and returns the current epoch, starting a new one (and
// telling the subscribers) if the last mark is older than the threshold.
func (w *PauseWatch) Mark() uint64 {
	if w == nil {
		return 0
	}
	m, wall := w.clock()
	mono := int64(m)
	for {
		last := w.mono.Load()
		if mono <= last {
			return w.epoch.Load() // another goroutine marked later
		}
		if !w.mono.CompareAndSwap(last, mono) {
			continue
		}
		lastWall := w.wall.Swap(wall)
		gap := max(time.Duration(mono-last), time.Duration(wall-lastWall))
		if gap > w.threshold {
			return w.begin(pauseCause{gap: gap})
		}
		return w.epoch.Load()
	}
}

// NewEpoch starts a new epoch at once, as if a pause had been seen (Gap 0,
// Reason reason), tells the subscribers and returns it: every shard
// verifies its lease with a write before it delivers more.
func (w *PauseWatch) NewEpoch(reason string) uint64 {
	if w == nil {
		return 0
	}
	return w.begin(pauseCause{reason: reason})
}

func (w *PauseWatch) begin(c pauseCause) uint64 {
	w.cause.Store(&c) // before the epoch: whoever sees the epoch sees this cause or a later one
	e := w.epoch.Add(1)
	w.mu.Lock()
	fs := make([]func(), 0, len(w.subs))
	for _, f := range w.subs {
		fs = append(fs, f)
	}
	w.mu.Unlock()
	for _, f := range fs {
		f()
	}
	return e
}

// Subscribe has f called on every new epoch, until the returned cancel is
// called. f runs on the goroutine that started the epoch (the ticker, a
// shard actor, NewEpoch's caller): it must not block (a shard actor sends
// itself a message).
func (w *PauseWatch) Subscribe(f func()) (cancel func()) {
	if w == nil {
		return func() {}
	}
	w.mu.Lock()
	w.nextID++
	id := w.nextID
	w.subs[id] = f
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		delete(w.subs, id)
		w.mu.Unlock()
	}
}

// Gap is the gap that started the current epoch (0 for one NewEpoch
// started).
func (w *PauseWatch) Gap() time.Duration {
	if c := w.current(); c != nil {
		return c.gap
	}
	return 0
}

// Reason is the reason given to NewEpoch for the current epoch, "" for a
// pause seen on the clocks.
func (w *PauseWatch) Reason() string {
	if c := w.current(); c != nil {
		return c.reason
	}
	return ""
}

func (w *PauseWatch) current() *pauseCause {
	if w == nil {
		return nil
	}
	return w.cause.Load()
}
