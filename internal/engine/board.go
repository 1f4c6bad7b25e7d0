package engine

import (
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Board is what each shard running on a node shows to status, health and
// metrics, written by the shard actors as they go (no message per fetch)
// and read at any time from any goroutine.
type Board struct {
	mu     sync.Mutex
	shards map[string]*shardLive
}

// Load is a shard's measured load: what its reads carry and how busy its
// processor is, smoothed (an exponentially weighted moving average with
// LoadHalfLife). Measured is false until the shard has run for two
// sampling intervals (the first, its start, is not counted).
type Load struct {
	RecordsPerSec float64 `json:"records_per_second"`
	BytesPerSec   float64 `json:"bytes_per_second"`
	// Busy is the fraction of wall time the shard's processor spent on its
	// batches (from each delivery to its answer): 0.5 is busy half the
	// time; more than 1 with ParallelizationFactor > 1.
	Busy     float64 `json:"busy"`
	Measured bool    `json:"measured"`
	weight   float64 // see Weight
}

// ShardReadLimit is what one Kinesis shard can give a reader per second
// (2 MiB/s, AWS's shared-throughput read limit per shard).
const ShardReadLimit = 2 << 20

// Weight is the load as one number for the assignment: the shard's share
// of its read limit (bytes/s ÷ 2 MiB/s) plus its processor's busy
// fraction, averaged with WeightHalfLife. Both terms are "fractions of
// one shard's worth", so a shard at its read limit and a shard whose
// processor never rests weigh the same.
func (l Load) Weight() float64 { return l.weight }

// weightOf is the weight of one interval's rates.
func weightOf(bytesPerSec, busy float64) float64 { return bytesPerSec/ShardReadLimit + busy }

// LoadHalfLife is the half-life of the load averages shown (records/s,
// bytes/s, busy).
const LoadHalfLife = 30 * time.Second

// WeightHalfLife is the half-life of the weight the assignment balances.
// It is longer than LoadHalfLife because the busy fraction is wall time,
// which a starved CPU inflates: with 30 s, the wander of the busy part
// pushed members across the threshold and moved shards at steady load (a
// simulation of the rule with such noise, TestSteadyLoadMovesWithNoise,
// gives 11.9 moves per hour with 30 s and 0.1 with 2 minutes). It does not
// slow convergence after a move: a shard's first measurement on its new
// node is taken as it is, not averaged up from zero.
const WeightHalfLife = 2 * time.Minute

// NewBoard returns an empty board.
func NewBoard() *Board { return &Board{shards: map[string]*shardLive{}} }

// shardLive is one running shard's entry.
type shardLive struct {
	lastProgress atomic.Int64 // unix nanoseconds
	behind       atomic.Int64 // MillisBehindLatest of the last fetch
	stalled      atomic.Pointer[string]
	// Cumulative, written by the shard actor: records and bytes read,
	// nanoseconds its processor was busy.
	records, bytes, busy atomic.Int64
	// Sampled by Board.Sample, under Board.mu.
	load       Load
	sampledAt  time.Time
	lastCounts [3]int64
	warm       bool // the first whole interval has passed (see Sample)
}

// read counts one fetch's records and bytes.
func (l *shardLive) read(records, bytes int) {
	l.records.Add(int64(records))
	l.bytes.Add(int64(bytes))
}

// worked counts processor time.
func (l *shardLive) worked(d time.Duration) {
	if d > 0 {
		l.busy.Add(int64(d))
	}
}

// ShardView is one shard as the board shows it.
type ShardView struct {
	ShardID            string
	LastProgress       time.Time
	MillisBehindLatest int64
	StalledOn          string // "" unless stalled
	Load               Load
}

func (b *Board) add(key string) *shardLive {
	l := &shardLive{}
	l.lastProgress.Store(time.Now().UnixNano())
	b.mu.Lock()
	b.shards[key] = l
	b.mu.Unlock()
	return l
}

// remove drops the entry of key if it is still l (a newer actor may have
// replaced it).
func (b *Board) remove(key string, l *shardLive) {
	b.mu.Lock()
	if b.shards[key] == l {
		delete(b.shards, key)
	}
	b.mu.Unlock()
}

func (l *shardLive) setStalled(cause string) {
	if cause == "" {
		l.stalled.Store(nil)
		return
	}
	l.stalled.Store(&cause)
}

// Shards returns every running shard's view, by shard id.
func (b *Board) Shards() []ShardView {
	b.mu.Lock()
	out := make([]ShardView, 0, len(b.shards))
	for k, l := range b.shards {
		v := ShardView{ShardID: k, LastProgress: time.Unix(0, l.lastProgress.Load()), MillisBehindLatest: l.behind.Load(), Load: l.load}
		if c := l.stalled.Load(); c != nil {
			v.StalledOn = *c
		}
		out = append(out, v)
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(a, b ShardView) int { return strings.Compare(a.ShardID, b.ShardID) })
	return out
}

// Stalled lists the running shards that are stalled, as "shard (service)".
func (b *Board) Stalled() []string {
	var out []string
	for _, v := range b.Shards() {
		if v.StalledOn != "" {
			out = append(out, v.ShardID+" ("+v.StalledOn+")")
		}
	}
	return out
}

// Sample folds what every running shard read and processed since the last
// sample into its load averages. The first call for a shard only starts
// its clock, the second starts it again (the interval between them holds
// the shard's start, not its load); the third makes it Measured. Call it at a steady interval
// (the coordinator does, every LoadSampleInterval).
func (b *Board) Sample(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.shards {
		c := [3]int64{l.records.Load(), l.bytes.Load(), l.busy.Load()}
		if l.sampledAt.IsZero() {
			l.sampledAt, l.lastCounts = now, c
			continue
		}
		dt := now.Sub(l.sampledAt)
		if dt <= 0 {
			continue
		}
		if !l.warm {
			// The shard's first whole interval holds its start: the
			// backlog since the last checkpoint read at once, or the
			// take and first fetch. Measured from it, a shard just
			// handed over looked up to a third heavier (or lighter)
			// than it is, and the others moved load to or from its new
			// owner for it. It is left out; until the next sample the
			// assignment keeps the weight the previous holder sent.
			l.warm = true
			l.sampledAt, l.lastCounts = now, c
			continue
		}
		sec := dt.Seconds()
		cur := Load{
			RecordsPerSec: float64(c[0]-l.lastCounts[0]) / sec,
			BytesPerSec:   float64(c[1]-l.lastCounts[1]) / sec,
			Busy:          float64(c[2]-l.lastCounts[2]) / float64(dt),
			Measured:      true,
		}
		cur.weight = weightOf(cur.BytesPerSec, cur.Busy)
		if !l.load.Measured {
			l.load = cur
		} else {
			a := 1 - math.Exp2(-sec/LoadHalfLife.Seconds())
			l.load.RecordsPerSec += a * (cur.RecordsPerSec - l.load.RecordsPerSec)
			l.load.BytesPerSec += a * (cur.BytesPerSec - l.load.BytesPerSec)
			l.load.Busy += a * (cur.Busy - l.load.Busy)
			aw := 1 - math.Exp2(-sec/WeightHalfLife.Seconds())
			l.load.weight += aw * (cur.weight - l.load.weight)
		}
		l.sampledAt, l.lastCounts = now, c
	}
}
