package ownership

import (
	"slices"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/shardfsm"
)

func newLoadX(t *testing.T, me string) *x {
	cfg := testConfig(me, true)
	cfg.LoadAware, cfg.RebalanceInterval, cfg.LoadCoolDown = true, 5*time.Second, time.Minute
	return &x{t: t, m: New(cfg), now: t0}
}

func loadHandoffs(effs []Effect) map[string]string {
	out := map[string]string{}
	for _, e := range effs {
		if h, ok := e.(Handoff); ok && h.Reason == "load" {
			out[h.Key] = h.To
		}
	}
	return out
}

// A node that holds everything when two others join sheds shards for
// load only at rebalances, at most LoadMaxMoves each; its release names the
// new owner to every member, the new owner takes it at once and the third
// member does not.
func TestLoadAwareMovesAreGradualAndAgreed(t *testing.T) {
	a := newLoadX(t, "a")
	a.step(Started{})
	a.step(ViewChanged{Members: members("a")})
	ls := rows(12, "")
	a.takeAll(a.read(ls))
	if got := len(a.m.Running()); got != 12 {
		t.Fatalf("a runs %d", got)
	}
	effs := a.step(ViewChanged{Members: members("a", "b", "c"), Joined: []string{"b", "c"}})
	effs = append(effs, a.tick(250*time.Millisecond)...)
	if h := handoffs(effs); len(h) > 2 {
		t.Fatalf("a hands off %d shards at once when two members join (want at most LoadMaxMoves 2): %v", len(h), h)
	}
	// Within the next rebalance interval nothing more moves.
	var moved map[string]string
	for range 3 {
		effs = append(effs, a.tick(5*time.Second)...)
	}
	moved = loadHandoffs(effs)
	if len(moved) < 2 || len(moved) > 8 {
		t.Fatalf("after 3 rebalances a handed off %d shards for load (want 2 to 8: at most 2 per interval, some): %v", len(moved), moved)
	}
	var k, to string
	for k, to = range moved {
		break
	}
	if to != "b" && to != "c" {
		t.Fatalf("moved %s to %q", k, to)
	}
	// a releases it: every other member hears who takes it.
	effs = a.step(ShardFinished{Key: k, Outcome: shardfsm.Released, Counter: 3})
	var sent []string
	var rel Message
	for _, e := range effs {
		if s, ok := e.(Send); ok && s.Msg.Type == MsgReleased && s.Msg.Shard == k {
			sent = append(sent, s.To)
			rel = s.Msg
		}
	}
	slices.Sort(sent)
	if !slices.Equal(sent, []string{"b", "c"}) || rel.To != to {
		t.Fatalf("release of %s sent to %v naming %q; want b and c naming %s", k, sent, rel.To, to)
	}
	held := slices.Clone(ls)
	for i := range held {
		held[i].Owner, held[i].Counter = "a", 2
	}
	for _, name := range []string{"b", "c"} {
		n := newLoadX(t, name)
		n.step(Started{})
		n.step(ViewChanged{Members: members("a", "b", "c")})
		n.read(held)
		got := takes(n.step(MessageReceived{From: "a", Msg: rel}))
		if name == to && got[k] != TakeReleased {
			t.Errorf("%s, the new owner, takes %v on the release, want %s", name, got, k)
		}
		if name != to && len(got) > 0 {
			t.Errorf("%s, not the new owner, takes %v on the release", name, got)
		}
	}
}

// Loads measured here are sent to every other member; a load message is
// used only from the holder of the shard, and one naming a key that is no
// shard id is refused whole.
func TestLoadsAreSharedAndChecked(t *testing.T) {
	a := newLoadX(t, "a")
	a.step(Started{})
	a.step(ViewChanged{Members: members("a", "b", "c")})
	ls := rows(3, "")
	a.takeAll(a.read(ls))
	mine := a.m.Running()
	if len(mine) == 0 {
		t.Fatal("a runs nothing")
	}
	loads := map[string]float64{}
	for _, k := range mine {
		loads[k] = 0.25
	}
	effs := a.step(LoadSampled{Loads: loads})
	var to []string
	for _, e := range effs {
		if s, ok := e.(Send); ok && s.Msg.Type == MsgLoad {
			to = append(to, s.To)
			if len(s.Msg.Loads) != len(mine) || s.Msg.Loads[0].W != 250000 {
				t.Fatalf("load message %+v", s.Msg)
			}
		}
	}
	slices.Sort(to)
	if !slices.Equal(to, []string{"b", "c"}) {
		t.Fatalf("loads sent to %v, want b and c", to)
	}

	b := newLoadX(t, "b")
	b.step(Started{})
	b.step(ViewChanged{Members: members("a", "b", "c")})
	held := rows(3, "a")
	b.read(held)
	b.step(MessageReceived{From: "a", Msg: Message{App: app, Type: MsgLoad, Loads: []ShardWeight{{Shard: held[0].Key, W: 7}}}})
	if got := b.m.loads[held[0].Key]; got != 7 {
		t.Fatalf("load of the holder's shard: %d, want 7", got)
	}
	b.step(MessageReceived{From: "c", Msg: Message{App: app, Type: MsgLoad, Loads: []ShardWeight{{Shard: held[0].Key, W: 9}}}})
	if got := b.m.loads[held[0].Key]; got != 7 {
		t.Fatalf("a non-holder's load was taken: %d", got)
	}
	effs = b.step(MessageReceived{From: "a", Msg: Message{App: app, Type: MsgLoad, Loads: []ShardWeight{{Shard: "x:y", W: 9}}}})
	if r, ok := find[Refused](effs); !ok || r.Reason != RefusedKey {
		t.Fatalf("a load message naming a foreign key: %v", effs)
	}
	if sz := b.m.Sizes()["loads"]; sz != 1 {
		t.Fatalf("loads kept: %d, want 1", sz)
	}
	// The rows go: so do their loads.
	b.read(nil)
	if sz := b.m.Sizes()["loads"]; sz != 0 {
		t.Fatalf("loads kept after the rows were deleted: %d", sz)
	}
}
