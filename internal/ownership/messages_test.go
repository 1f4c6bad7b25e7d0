package ownership

import (
	"fmt"
	"testing"
	"time"

	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/lease"
)

// takenAt is a take the table accepted, and when.
type takenAt struct {
	lease.Lease
	Reason string
	At     time.Time
}

// against drives n for d, in ticks of 250 ms, against a table that holds
// table: every read is answered with it, a take succeeds only when it is
// conditional on a row's owner and counter (a lost race otherwise). It
// returns the takes that succeeded.
func (n *x) against(table []lease.Lease, d time.Duration) []takenAt {
	n.t.Helper()
	byKey := map[string]lease.Lease{}
	for _, l := range table {
		byKey[l.Key] = l
	}
	var got []takenAt
	var handle func(effs []Effect)
	handle = func(effs []Effect) {
		for _, e := range effs {
			switch e := e.(type) {
			case Sync:
				handle(n.step(SyncDone{Seq: e.Seq, Leases: table}))
			case WriteRows:
				handle(n.step(RowsDone{Seq: e.Seq}))
			case Take:
				row, ok := byKey[e.Lease.Key]
				if !ok || row.Owner != e.Lease.Owner || row.Counter != e.Lease.Counter {
					handle(n.step(TakeDone{Key: e.Lease.Key, Reason: e.Reason, Err: lease.ErrLeaseLost, LostRace: true}))
					continue
				}
				l := row
				l.Owner, l.Counter = n.m.cfg.Me, row.Counter+1
				got = append(got, takenAt{Lease: e.Lease, Reason: e.Reason, At: n.now})
				handle(n.step(TakeDone{Key: l.Key, Reason: e.Reason, Lease: l}))
			}
		}
	}
	for end := n.now.Add(d); n.now.Before(end); {
		n.now = n.now.Add(250 * time.Millisecond)
		handle(n.step(Tick{}))
	}
	return got
}

func refusals(effs []Effect) []Refused {
	var out []Refused
	for _, e := range effs {
		if r, ok := e.(Refused); ok {
			out = append(out, r)
		}
	}
	return out
}

const shard3 = "shardId-000000000003"

// A node of another application on the same seeds and label broadcasts
// its release of its own shardId-000000000003 at counter 500 (its direct
// send failed). Taken as ours, it made our copy of the row ("", 500), the
// expiry tracker kept 500, and every later read of the real row (h, 5)
// was dropped as older: h, silent but still in the view (cut from
// DynamoDB, hung), was never taken from by expiry. Every such message is
// now refused, counted, and h's lease expires at the normal time.
func TestStrangersMessagesAreRefusedAndExpiryIsUntouched(t *testing.T) {
	release := func(app string, counter int64) Message {
		return Message{App: app, Type: MsgReleased, Shard: shard3, Counter: counter}
	}
	cases := []struct {
		name   string
		from   string
		msg    Message
		reason string
	}{
		{"a node of another application, its own release", "other-1", release("other-app", 500), RefusedApp},
		{"a node of another application, saying it is ours", "other-1", release(app, 500), RefusedStranger},
		{"a node nobody sees", "ghost", release(app, 500), RefusedStranger},
		{"a message without an application", "h", release("", 500), RefusedApp},
		{"a member, for another application", "h", release("other-app", 500), RefusedApp},
		{"a member, a foreign key", "h", Message{App: app, Type: MsgReleased, Shard: "111122223333:orders:1:" + shard3, Counter: 500}, RefusedKey},
		{"a member, a heartbeat with a key that is no shard id", "h", Message{App: app, Type: MsgHeartbeat, Leases: []Beat{{Shard: shard3, Counter: 500}, {Shard: "../etc", Counter: 500}}}, RefusedKey},
		{"a member, an unknown type", "h", Message{App: app, Type: "take-it", Shard: shard3, Counter: 500}, RefusedType},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newX(t, "a", true)
			n.step(Started{})
			view := append(members("a", "h"), cluster.Member{Name: "other-1", Meta: cluster.Meta{App: "other-app"}})
			n.step(ViewChanged{Members: view})
			row := lease.Lease{Key: shard3, Owner: "h", Counter: 5, Checkpoint: lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon}}
			n.read([]lease.Lease{row})
			start := n.now
			n.tick(time.Second)
			effs := n.step(MessageReceived{From: c.from, Msg: c.msg})
			if r := refusals(effs); len(r) != 1 || r[0].Reason != c.reason || r[0].From != c.from {
				t.Errorf("refusals %+v, want one for %q", r, c.reason)
			}
			if l, _ := n.m.Lease(shard3); l.Owner != "h" || l.Counter != 5 {
				t.Errorf("row %+v after a refused message, want h at 5", l)
			}
			for _, e := range effs { // the table says h at 5
				if tk, ok := e.(Take); ok {
					t.Errorf("took on a refused message: %+v", tk)
					n.step(TakeDone{Key: tk.Lease.Key, Reason: tk.Reason, Err: lease.ErrLeaseLost, LostRace: true})
				}
			}
			got := n.against([]lease.Lease{row}, 20*time.Second)
			if len(got) == 0 {
				t.Fatal("h's lease never taken by expiry")
			}
			tk := got[0]
			if tk.Reason != TakeExpired || tk.Owner != "h" || tk.Counter != 5 {
				t.Fatalf("first take %+v, want by expiry from h at 5", tk)
			}
			if d := tk.At.Sub(start); d < 9*time.Second || d > 9250*time.Millisecond {
				t.Fatalf("taken %v after the read, want at LeaseExpiry (9s)", d)
			}
		})
	}
}

// The expiry tracker never goes backwards on gossip, but a read of the
// table that began after the last gossip news of a row is the authority,
// even with a lower counter: a wrong word (here a member's release at 500
// of a row held at 5) must not stick.
func TestReadBegunAfterAWrongWordResetsTheExpiry(t *testing.T) {
	n := newX(t, "a", true)
	n.step(Started{})
	n.step(ViewChanged{Members: members("a", "h")})
	row := lease.Lease{Key: shard3, Owner: "h", Counter: 5, Checkpoint: lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon}}
	n.read([]lease.Lease{row})
	n.tick(time.Second)
	// a read begins (h says rows changed); the wrong word arrives while
	// it runs; its answer, older than the word, does not undo it
	rd := must[Sync](t, n.step(MessageReceived{From: "h", Msg: Message{App: app, Type: MsgShards}}))
	n.now = n.now.Add(5 * time.Millisecond)
	effs := n.step(MessageReceived{From: "h", Msg: Message{App: app, Type: MsgReleased, Shard: shard3, Counter: 500}})
	n.now = n.now.Add(5 * time.Millisecond)
	effs = append(effs, n.step(SyncDone{Seq: rd.Seq, Leases: []lease.Lease{row}})...)
	if l, _ := n.m.Lease(shard3); l.Owner != "" || l.Counter != 500 {
		t.Fatalf("row %+v: a read begun before the release undid it", l)
	}
	// a later heartbeat of h at 5 is older than what is held: dropped
	n.step(MessageReceived{From: "h", Msg: Message{App: app, Type: MsgHeartbeat, Leases: []Beat{{Shard: shard3, Counter: 5}}}})
	if l, _ := n.m.Lease(shard3); l.Counter != 500 {
		t.Fatalf("row %+v: gossip went backwards", l)
	}
	if o := n.m.expiry.obs[shard3]; o.counter != 500 {
		t.Fatalf("tracker %+v: gossip went backwards", o)
	}
	// a take of the released row loses its race (the table says h at 5);
	// the next read began after the word: it is the authority
	for _, e := range effs {
		if tk, ok := e.(Take); ok {
			n.step(TakeDone{Key: shard3, Reason: tk.Reason, Err: lease.ErrLeaseLost, LostRace: true})
		}
	}
	if !n.m.syncing {
		must[Sync](t, n.step(MessageReceived{From: "h", Msg: Message{App: app, Type: MsgShards}}))
	}
	n.now = n.now.Add(5 * time.Millisecond)
	n.read([]lease.Lease{row})
	reset := n.now
	if l, _ := n.m.Lease(shard3); l.Owner != "h" || l.Counter != 5 {
		t.Fatalf("row %+v after a read begun after the word, want h at 5", l)
	}
	if o := n.m.expiry.obs[shard3]; o.owner != "h" || o.counter != 5 || !o.since.Equal(reset) {
		t.Fatalf("tracker %+v after a read begun after the word, want h at 5 since the read", o)
	}
	got := n.against([]lease.Lease{row}, 20*time.Second)
	if len(got) == 0 {
		t.Fatal("h's lease never taken by expiry: the wrong word stuck")
	}
	if tk := got[0]; tk.Reason != TakeExpired || tk.Owner != "h" || tk.Counter != 5 || tk.At.Sub(reset) < 9*time.Second || tk.At.Sub(reset) > 9250*time.Millisecond {
		t.Fatalf("take %+v at %v after the read, want by expiry from h at 5 after 9s", tk, tk.At.Sub(reset))
	}
}

func TestIsShardID(t *testing.T) {
	for k, want := range map[string]bool{
		"shardId-000000000003": true, "p1": true, "a.b_c-d": true,
		"": false, "acct:stream:1:shardId-000000000003": false, "../etc": false, "shard id": false,
		fmt.Sprintf("%0129d", 1): false, fmt.Sprintf("%0128d", 1): true,
	} {
		if IsShardID(k) != want {
			t.Errorf("IsShardID(%q) = %v, want %v", k, !want, want)
		}
	}
}

// The progress store never goes backwards: news is ordered by counter,
// then by position; a late or repeated beat is dropped, and news from
// another sender replaces the stored news only with a higher counter.
// Before, a beat from the same sender at the same counter replaced the
// stored position even when older, and one from another sender replaced
// it whatever its counter.
func TestProgressNeverGoesBackwards(t *testing.T) {
	seq := func(n int) string { return fmt.Sprintf("%056d", n) }
	stored := heardProgress{from: "b", counter: 5, cp: lease.Checkpoint{SequenceNumber: seq(200), SubSequenceNumber: 1}, at: t0}
	cases := []struct {
		name    string
		from    string
		counter int64
		seq     string
		sub     int64
		kept    bool
	}{
		{"same sender, same counter, older position (a late beat)", "b", 5, seq(100), 0, false},
		{"same sender, same counter, older subsequence", "b", 5, seq(200), 0, false},
		{"same sender, same counter, same position (a repeat)", "b", 5, seq(200), 1, false},
		{"same sender, same counter, later position", "b", 5, seq(300), 0, true},
		{"same sender, same counter, later subsequence", "b", 5, seq(200), 2, true},
		{"same sender, higher counter, older position (it wrote since)", "b", 6, seq(100), 0, true},
		{"same sender, lower counter", "b", 4, seq(300), 0, false},
		{"other sender, lower counter (a former holder's late beat)", "c", 4, seq(300), 0, false},
		{"other sender, same counter", "c", 5, seq(300), 0, false},
		{"other sender, higher counter (a new holder)", "c", 6, seq(100), 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newX(t, "a", true)
			n.step(Started{}) // no read yet: only the store's rule decides
			n.step(ViewChanged{Members: members("a", "b", "c")})
			n.step(MessageReceived{From: "b", Msg: Message{App: app, Type: MsgHeartbeat, Leases: []Beat{{Shard: shard3, Counter: stored.counter, Seq: stored.cp.SequenceNumber, Sub: stored.cp.SubSequenceNumber}}}})
			if got := n.m.progress[shard3]; got != stored {
				t.Fatalf("stored %+v, want %+v", got, stored)
			}
			n.step(MessageReceived{From: c.from, Msg: Message{App: app, Type: MsgHeartbeat, Leases: []Beat{{Shard: shard3, Counter: c.counter, Seq: c.seq, Sub: c.sub}}}})
			want := stored
			if c.kept {
				want = heardProgress{from: c.from, counter: c.counter, cp: lease.Checkpoint{SequenceNumber: c.seq, SubSequenceNumber: c.sub}, at: t0}
			}
			if got := n.m.progress[shard3]; got != want {
				t.Fatalf("stored %+v, want %+v", got, want)
			}
		})
	}
}

// A take from a dead holder resumes from the latest position it said,
// however its beats arrived: it resumed at …100 when …200 had been heard.
func TestResumeAfterATakeUsesTheLatestProgressHeard(t *testing.T) {
	seq := func(n int) string { return fmt.Sprintf("%056d", n) }
	a := newX(t, "a", true)
	a.step(Started{})
	// c is a member (its word counts) that takes nothing: it drains
	ms := withMeta(members("a", "b", "c"), "c", cluster.Meta{Draining: true})
	a.step(ViewChanged{Members: ms})
	row := lease.Lease{Key: shard3, Owner: "b", Counter: 5, Checkpoint: lease.Checkpoint{SequenceNumber: seq(10)}}
	a.read([]lease.Lease{row})
	hb := func(from string, counter int64, pos int) MessageReceived {
		return MessageReceived{From: from, Msg: Message{App: app, Type: MsgHeartbeat, Leases: []Beat{{Shard: shard3, Counter: counter, Seq: seq(pos)}}}}
	}
	a.step(hb("b", 5, 200))
	a.step(hb("b", 5, 100)) // an earlier flush, overtaken
	a.step(hb("b", 4, 300)) // a beat from before b's last write
	a.step(hb("c", 4, 400)) // c held it before b
	var tk Take
	for _, e := range a.step(ViewChanged{Members: withMeta(members("a", "c"), "c", cluster.Meta{Draining: true}), Gone: []string{"b"}}) {
		if t, ok := e.(Take); ok && t.Lease.Key == shard3 {
			tk = t
		}
	}
	if tk.Lease.Key == "" {
		t.Fatal("a did not take b's shard at b's death")
	}
	if tk.Lease.Counter != 5 || tk.Resume == nil || tk.Resume.SequenceNumber != seq(200) {
		t.Fatalf("take %+v resumes at %+v, want at counter 5 from %s", tk.Lease, tk.Resume, seq(200))
	}
}
