package engine

import (
	"sync/atomic"
	"time"
)

// PauseWatch notices that this process was stopped for a while (SIGSTOP, a
// frozen or suspended VM, a stop-the-world pause): long enough for gossip
// to have declared it dead and another node to have taken its leases,
// though not long enough for its own leases to have lapsed (the self-fence
// covers that). Its ticker marks the time every PauseTick; whoever next
// finds the last mark older than the threshold (the ticker itself, or a
// shard actor about to deliver, whichever runs first on waking) starts a
// new pause epoch. A shard actor that sees a new epoch verifies its lease
// before delivering more (shardfsm.Paused).
//
// The gap is measured on both clocks, monotonic and wall: Linux's monotonic
// clock stops while a VM is suspended. A wall-clock step (NTP) may start an
// epoch by mistake; that costs each shard one extra lease write.
type PauseWatch struct {
	threshold time.Duration
	start     time.Time
	mono      atomic.Int64 // nanoseconds since start of the last mark
	wall      atomic.Int64 // unix nanoseconds of the last mark
	epoch     atomic.Uint64
	lastGap   atomic.Int64 // the gap that started the current epoch
	stop      chan struct{}
	// clock reads both clocks: time since start (monotonic) and the unix
	// time in nanoseconds (wall); tests replace it before use.
	clock func() (time.Duration, int64)
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
	w := &PauseWatch{threshold: threshold, start: time.Now(), stop: make(chan struct{})}
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

// Mark records now and returns the current epoch, starting a new one if
// the last mark is older than the threshold.
func (w *PauseWatch) Mark() uint64 {
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
			w.lastGap.Store(int64(gap))
			return w.epoch.Add(1)
		}
		return w.epoch.Load()
	}
}

// Gap is the gap that started the current epoch.
func (w *PauseWatch) Gap() time.Duration { return time.Duration(w.lastGap.Load()) }
