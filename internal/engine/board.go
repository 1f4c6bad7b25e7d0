package engine

import (
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

// NewBoard returns an empty board.
func NewBoard() *Board { return &Board{shards: map[string]*shardLive{}} }

// shardLive is one running shard's entry.
type shardLive struct {
	lastProgress atomic.Int64 // unix nanoseconds
	behind       atomic.Int64 // MillisBehindLatest of the last fetch
	stalled      atomic.Pointer[string]
}

// ShardView is one shard as the board shows it.
type ShardView struct {
	ShardID            string
	LastProgress       time.Time
	MillisBehindLatest int64
	StalledOn          string // "" unless stalled
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
		v := ShardView{ShardID: k, LastProgress: time.Unix(0, l.lastProgress.Load()), MillisBehindLatest: l.behind.Load()}
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
