package ownership

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/lease"
)

// drive runs n for d in 250 ms ticks, answering every Sync: a listing
// with shards, a read with rows. It counts the reads and the listings.
func drive(n *x, d time.Duration, shards []Shard, ls []lease.Lease) (reads, lists int) {
	answer := func(effs []Effect) {
		for len(effs) > 0 {
			var next []Effect
			for _, e := range effs {
				s, ok := e.(Sync)
				if !ok {
					continue
				}
				done := SyncDone{Seq: s.Seq, Listed: s.List, Shards: shards}
				if s.ListOnly {
					done.Unread = true
					lists++
				} else {
					done.Leases = ls
					reads++
				}
				next = append(next, n.step(done)...)
			}
			effs = next
		}
	}
	for end := n.now.Add(d); n.now.Before(end); {
		n.now = n.now.Add(250 * time.Millisecond)
		answer(n.step(Tick{}))
	}
	return reads, lists
}

// The table's reads do not grow with the members: the discovering node
// lists every SyncInterval and reads every LeaderReadInterval; each other
// member reads every FollowerSyncInterval × (members − 1).
func TestReadsDoNotGrowWithMembers(t *testing.T) {
	ls := rows(12, "")
	var shards []Shard
	for _, l := range ls {
		shards = append(shards, Shard{ID: l.Key})
	}
	for _, size := range []int{3, 10} {
		var names []string
		for i := range size {
			names = append(names, string(rune('a'+i)))
		}
		total := 0
		for _, me := range names {
			n := newX(t, me, true)
			n.step(Started{})
			n.step(ViewChanged{Members: members(names...)})
			n.read(ls)
			// Settle, then count over an hour.
			drive(n, 10*time.Minute, shards, ls)
			reads, lists := drive(n, time.Hour, shards, ls)
			if me == "a" {
				// 3600/120 reads, 3600/10 listings (less the reads).
				if reads < 29 || reads > 31 || lists < 320 {
					t.Fatalf("%d members: the discovering node read %d times and listed %d times in an hour, want 30 and ~330", size, reads, lists)
				}
			} else if lists != 0 {
				t.Fatalf("%s listed", me)
			}
			total += reads
		}
		// 30 by the discovering node, 60 by the others together.
		if total < 80 || total > 95 { // each member reads a whole number of times in the hour
			t.Fatalf("%d members: %d reads of the table in an hour, want ~90 whatever the size", size, total)
		}
		t.Logf("%d members: %d reads an hour (%.1f per shard-hour)", size, total, float64(total)/12)
	}
}

// A listing that shows a shard without a row, or a row of ours without a
// shard, makes the discovering node read the table at once.
func TestListingShowingAChangeReads(t *testing.T) {
	ls := rows(2, "")
	cfg := testConfig("a", true)
	cfg.LeaseExpiry = time.Hour // no take falls due here: only the listing reads
	n := &x{t: t, m: New(cfg), now: t0}
	n.step(Started{})
	n.step(ViewChanged{Members: members("a", "b")})
	n.sync(SyncDone{Leases: ls, Listed: true, Shards: []Shard{{ID: ls[0].Key}, {ID: ls[1].Key}}})
	n.now = n.now.Add(11 * time.Second)
	effs := n.step(Tick{})
	s := must[Sync](t, effs)
	if !s.ListOnly {
		t.Fatalf("periodic sync between reads: %+v, want a listing only", s)
	}
	// Unchanged: no read.
	effs = n.step(SyncDone{Seq: s.Seq, Listed: true, Unread: true, Shards: []Shard{{ID: ls[0].Key}, {ID: ls[1].Key}}})
	if _, ok := find[Sync](effs); ok {
		t.Fatalf("an unchanged listing read the table: %v", effs)
	}
	for _, c := range []struct {
		name   string
		shards []Shard
	}{
		{"new shard", []Shard{{ID: ls[0].Key}, {ID: ls[1].Key}, {ID: "shardId-000000000099"}}},
		{"shard gone", []Shard{{ID: ls[0].Key}}},
	} {
		n.now = n.now.Add(11 * time.Second)
		s := must[Sync](t, n.step(Tick{}))
		effs := n.step(SyncDone{Seq: s.Seq, Listed: true, Unread: true, Shards: c.shards})
		r := must[Sync](t, effs)
		if r.ListOnly || !r.List {
			t.Fatalf("%s: %+v, want a read with a listing", c.name, r)
		}
		n.step(SyncDone{Seq: r.Seq, Listed: true, Leases: ls, Shards: []Shard{{ID: ls[0].Key}, {ID: ls[1].Key}}})
	}
}

// A standstill known only from an old read is confirmed by a read before
// the take: unchanged, the lease is taken at once; renewed meanwhile, it
// is not (no write that would lose its race).
func TestStaleStandstillIsConfirmedByARead(t *testing.T) {
	for _, renewed := range []bool{false, true} {
		n := newX(t, "a", true)
		n.step(Started{})
		n.step(ViewChanged{Members: members("a", "b", "c")})
		ls := rows(6, "b")
		n.read(ls)
		// No heartbeat, no read: past LeaseExpiry (9 s) the first
		// successor's standstill is only what the first read showed.
		var effs []Effect
		for range 40 {
			n.now = n.now.Add(250 * time.Millisecond)
			effs = append(effs, n.step(Tick{})...)
			if _, ok := find[Sync](effs); ok {
				break
			}
		}
		if len(takes(effs)) != 0 {
			t.Fatalf("took on an old read: %v", takes(effs))
		}
		s := must[Sync](t, effs)
		again := rows(6, "b")
		if renewed {
			for i := range again {
				again[i].Counter++
			}
		}
		got := takes(n.step(SyncDone{Seq: s.Seq, Listed: s.List, Leases: again}))
		mine := 0
		for _, l := range ls {
			if n.m.successors(l.Key, "b")[0] == "a" {
				mine++
			}
		}
		switch {
		case renewed && len(got) != 0:
			t.Fatalf("took %v although the read shows them renewed", got)
		case !renewed && (len(got) != mine || mine == 0):
			t.Fatalf("took %d after the confirming read, want the %d a succeeds", len(got), mine)
		}
	}
}

// TestFarSuccessorWaitsForItsOwnRead: a successor beyond the first two
// gets no heartbeats, so its copy of a row is as old as its last read and
// shows a standstill (pos+1) LeaseExpiry later. It must not ask for a
// read each time (that doubled a 10-node cluster's reads): it waits for
// its next regular read and takes if that shows the row still.
func TestFarSuccessorWaitsForItsOwnRead(t *testing.T) {
	names := []string{"b", "c", "d", "e", "f", "g", "h", "i", "j", "x"}
	n := newX(t, "x", true)
	n.step(Started{})
	n.step(ViewChanged{Members: members(names...)})
	var ls []lease.Lease
	for i := 0; len(ls) < 4 && i < 1000; i++ {
		l := lease.Lease{Key: fmt.Sprintf("shardId-%012d", i), Owner: "b", Counter: 1, Checkpoint: lease.Checkpoint{SequenceNumber: "TRIM_HORIZON"}}
		if slices.Index(n.m.successors(l.Key, "b"), "x") >= beatSuccessors {
			ls = append(ls, l)
		}
	}
	n.read(ls)
	if n.m.leader() {
		t.Fatal("x leads: the test wants a follower")
	}
	effs := n.tick(5 * time.Minute) // well past (pos+1) × LeaseExpiry, before its next read
	if _, ok := find[Sync](effs); ok {
		t.Fatalf("a far successor asked for a read to confirm a standstill its old copy shows")
	}
	if got := takes(effs); len(got) != 0 {
		t.Fatalf("took on an old copy: %v", got)
	}
	var s Sync
	for range 4 * 60 * 10 { // its regular read comes within FollowerSyncInterval × 9
		effs = n.tick(250 * time.Millisecond)
		if v, ok := find[Sync](effs); ok {
			s = v
			break
		}
	}
	if s.Seq == 0 {
		t.Fatal("no regular read within 10 minutes")
	}
	got := takes(n.step(SyncDone{Seq: s.Seq, Listed: s.List, Leases: ls}))
	if len(got) != len(ls) {
		t.Fatalf("took %v after its read showed the rows still, want all %d", got, len(ls))
	}
}

// TestReadsWithHoldersDoNotGrowWithMembers: as above, with every row held
// by its assigned member, which writes it every third of a LeaseExpiry
// (3 s here, 30 s with the defaults) and sends its
// heartbeats to its first two successors only (as queueBeat does): the
// successors beyond them see the rows only in their reads, and must not
// read more for it.
func TestReadsWithHoldersDoNotGrowWithMembers(t *testing.T) {
	const nShards = 12
	for _, size := range []int{3, 10} {
		var names []string
		var cands []Candidate
		for i := range size {
			names = append(names, string(rune('a'+i)))
			cands = append(cands, Candidate{Name: names[i], Weight: 1})
		}
		var keys []string
		var shards []Shard
		for i := range nShards {
			keys = append(keys, fmt.Sprintf("shardId-%012d", i))
			shards = append(shards, Shard{ID: keys[i]})
		}
		owner := Assign(keys, cands)
		total := 0
		for _, me := range names {
			n := newX(t, me, true)
			n.step(Started{})
			n.step(ViewChanged{Members: members(names...)})
			counter := int64(1)
			table := func() []lease.Lease {
				var ls []lease.Lease
				for _, k := range keys {
					ls = append(ls, lease.Lease{Key: k, Owner: owner[k], Counter: counter, Checkpoint: lease.Checkpoint{SequenceNumber: "TRIM_HORIZON"}})
				}
				return ls
			}
			n.read(table())
			reads, taken := 0, 0
			answer := func(effs []Effect, count bool) {
				for len(effs) > 0 {
					var next []Effect
					for _, e := range effs {
						if tk, ok := e.(Take); ok && tk.Lease.Owner != me {
							taken++
						}
						s, ok := e.(Sync)
						if !ok {
							continue
						}
						done := SyncDone{Seq: s.Seq, Listed: s.List, Shards: shards}
						if s.ListOnly {
							done.Unread = true
						} else {
							done.Leases = table()
							if count {
								reads++
							}
						}
						next = append(next, n.step(done)...)
					}
					effs = next
				}
			}
			start := n.now
			for end := n.now.Add(70 * time.Minute); n.now.Before(end); {
				n.now = n.now.Add(250 * time.Millisecond)
				count := n.now.Sub(start) > 10*time.Minute
				if n.now.Sub(start)%(3*time.Second) == 0 {
					counter++ // every holder writes its rows
					for _, k := range keys {
						h := owner[k]
						if h == me || !slices.Contains(firstN(rendezvous(k, n.m.cands, h), beatSuccessors), me) {
							continue
						}
						answer(n.step(MessageReceived{From: h, Msg: Message{App: app, Type: MsgHeartbeat, Leases: []Beat{{Shard: k, Counter: counter}}}}), count)
					}
				}
				answer(n.step(Tick{}), count)
			}
			if taken > 0 {
				t.Fatalf("%d members: %s took %d live leases", size, me, taken)
			}
			total += reads
		}
		t.Logf("%d members, rows held: %d reads an hour (%.1f per shard-hour)", size, total, float64(total)/nShards)
		if total < 80 || total > 95 {
			t.Fatalf("%d members, rows held: %d reads of the table in an hour, want ~90 whatever the size", size, total)
		}
	}
}
