package ownership

import (
	"fmt"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/shardfsm"
)

// benchNode is node "a" of three (a, b, c) at S shards, owning its share,
// the others holding theirs.
func benchNode(b *testing.B, shards int) (*Machine, []lease.Lease, time.Time) {
	b.Helper()
	cfg := testConfig("a", true)
	cfg.LeaseExpiry = time.Hour // the others renew: nothing expires while the benchmark runs
	m := New(cfg)
	now := t0
	m.Step(now, Started{})
	m.Step(now, ViewChanged{Members: members("a", "b", "c")})
	ls := make([]lease.Lease, shards)
	for i := range ls {
		ls[i] = lease.Lease{Key: fmt.Sprintf("shardId-%012d", i), Counter: 5, Checkpoint: lease.Checkpoint{SequenceNumber: "49590338271490256608559692538361571095921575989136588898"}}
	}
	keys := make([]string, len(ls))
	for i := range ls {
		keys[i] = ls[i].Key
	}
	owner := Assign(keys, []Candidate{{Name: "a"}, {Name: "b"}, {Name: "c"}})
	for i := range ls {
		ls[i].Owner = owner[ls[i].Key]
	}
	m.Step(now, SyncDone{Seq: inFlight(m), Leases: ls})
	for _, l := range ls {
		if l.Owner == "a" {
			m.Step(now, TakeDone{Key: l.Key, Reason: TakeOwn, Lease: l}) // runs here
		}
	}
	now = now.Add(time.Second)
	m.Step(now, Tick{}) // the heartbeats of the takes go out
	return m, ls, now
}

// BenchmarkEvent measures one Step of the events a busy node sees, at 1k,
// 10k and 100k shards over 3 nodes. The old coordinator ran a full plan
// (0.64 / 6.4 / 82 ms) on each release, gossip message or read.
func BenchmarkEvent(b *testing.B) {
	for _, shards := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("released/shards=%d", shards), func(b *testing.B) {
			m, ls, now := benchNode(b, shards)
			i := 0
			for b.Loop() {
				// b releases one of its shards to c; a (not the assignee) looks at it
				l := ls[i%len(ls)]
				i++
				now = now.Add(time.Millisecond)
				m.Step(now, MessageReceived{From: "b", Msg: Message{App: app, Type: MsgReleased, Shard: l.Key, Counter: l.Counter + int64(i)}})
			}
		})
		b.Run(fmt.Sprintf("heartbeat/shards=%d", shards), func(b *testing.B) {
			m, ls, now := benchNode(b, shards)
			var theirs []lease.Lease
			for _, l := range ls {
				if l.Owner == "b" {
					theirs = append(theirs, l)
				}
			}
			i := 0
			for b.Loop() {
				l := theirs[i%len(theirs)]
				i++
				now = now.Add(time.Millisecond)
				m.Step(now, MessageReceived{From: "b", Msg: Message{App: app, Type: MsgHeartbeat, Leases: []Beat{{Shard: l.Key, Counter: l.Counter + int64(i)}}}})
			}
		})
		b.Run(fmt.Sprintf("shard-write/shards=%d", shards), func(b *testing.B) {
			m, ls, now := benchNode(b, shards)
			var mine []lease.Lease
			for _, l := range ls {
				if l.Owner == "a" {
					mine = append(mine, l)
				}
			}
			i := 0
			for b.Loop() {
				l := mine[i%len(mine)]
				i++
				l.Counter += int64(i)
				now = now.Add(time.Millisecond)
				m.Step(now, ShardWrote{Lease: l})
			}
		})
		b.Run(fmt.Sprintf("tick/shards=%d", shards), func(b *testing.B) {
			m, _, now := benchNode(b, shards)
			for b.Loop() {
				now = now.Add(250 * time.Millisecond)
				m.Step(now, Tick{})
			}
		})
		b.Run(fmt.Sprintf("drain-release/shards=%d", shards), func(b *testing.B) {
			// a drains: each of its shards finishes released, one event each
			m, ls, now := benchNode(b, shards)
			m.Step(now, StopAll{})
			var mine []lease.Lease
			for _, l := range ls {
				if l.Owner == "a" {
					mine = append(mine, l)
				}
			}
			i := 0
			for b.Loop() {
				if i == len(mine) {
					b.StopTimer()
					m, _, now = benchNode(b, shards)
					m.Step(now, StopAll{})
					i = 0
					b.StartTimer()
				}
				l := mine[i]
				i++
				m.Step(now, ShardFinished{Key: l.Key, Outcome: shardfsm.Released, Counter: l.Counter + 1})
			}
		})
		b.Run(fmt.Sprintf("view-change/shards=%d", shards), func(b *testing.B) {
			// a member joins or leaves: the whole assignment is recomputed
			m, _, now := benchNode(b, shards)
			views := [][]string{{"a", "b", "c", "d"}, {"a", "b", "c"}}
			i := 0
			for b.Loop() {
				i++
				m.Step(now, ViewChanged{Members: members(views[i%2]...)})
			}
		})
		b.Run(fmt.Sprintf("table-read/shards=%d", shards), func(b *testing.B) {
			// a read of the whole table with nothing changed
			m, ls, now := benchNode(b, shards)
			for b.Loop() {
				now = now.Add(time.Second)
				m.Step(now, SyncDone{Seq: inFlight(m), Leases: ls})
			}
		})
	}
}
