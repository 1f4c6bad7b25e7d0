package chaos

import (
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// The scenario files make chaos and make chaos-long run must load and
// schedule what the README promises.
func TestScenarioFiles(t *testing.T) {
	for _, f := range []string{"short.json", "long.json"} {
		s, err := Load(filepath.Join("..", "..", "..", "test", "chaos", f))
		if err != nil {
			t.Fatal(err)
		}
		if s, err = s.WithDefaults(); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		fs := Schedule(s.Seed, s)
		if len(fs) == 0 {
			t.Fatalf("%s: no faults", f)
		}
		for _, x := range fs {
			if time.Duration(x.At) >= time.Duration(s.Duration) {
				t.Fatalf("%s: fault %+v after the producer stops (%s)", f, x, time.Duration(s.Duration))
			}
		}
		kinds := map[Kind]int{}
		cuts := map[string]int{}
		shortPauses := 0
		for i, x := range fs {
			kinds[x.Kind]++
			if x.Kind == Cut {
				cuts[x.Target]++
			}
			// A pause must outlast LeaseExpiry + StallTimeout to reach the
			// self-fence, or else be shorter than LeaseExpiry and long
			// enough for gossip to declare the node dead (3 s), to reach
			// the verification of a woken node's leases; a cut or hang must
			// outlast max_stall, so that a node whose shards never move
			// fails the run.
			tm, _ := s.Timings()
			short := x.Kind == Pause && time.Duration(x.For) >= 3*time.Second && time.Duration(x.For) < tm.LeaseExpiry
			if short {
				shortPauses++
			}
			// A pause right after a take must outlast LeaseExpiry (its
			// shards are taken meanwhile), and need not reach the stall bound.
			if x.Kind == PauseAfterTake && time.Duration(x.For) <= tm.LeaseExpiry {
				t.Errorf("%s: %+v is not longer than lease expiry %s", f, x, tm.LeaseExpiry)
			}
			if x.Kind.impairs() && x.Kind != PauseAfterTake && !short && time.Duration(x.For) <= tm.LeaseExpiry+tm.StallTimeout ||
				(x.Kind == Cut || x.Kind == Hang) && time.Duration(x.For) <= time.Duration(s.MaxStall) {
				t.Errorf("%s: %+v is too short (lease expiry %s, stall timeout %s, max_stall %s)", f, x, tm.LeaseExpiry, tm.StallTimeout, time.Duration(s.MaxStall))
			}
			if i > 0 && fs[i-1].Kind.timed() && !fs[i-1].Kind.background() && x.At < fs[i-1].At+fs[i-1].For {
				t.Errorf("%s: %+v begins before %+v ends", f, x, fs[i-1])
			}
		}
		if f == "long.json" {
			for _, k := range Kinds {
				if kinds[k] == 0 {
					t.Errorf("long.json: no %s among %v", k, kinds)
				}
			}
			continue
		}
		if s.Nodes != 5 || s.Shards != 16 || kinds[Kill] < 2 || kinds[Restart] < 1 || kinds[Stop] < 1 ||
			kinds[Partition] < 1 || kinds[Throttle] < 1 || kinds[Split] != 1 || kinds[Merge] != 1 ||
			cuts["dynamodb"] < 1 || cuts["kinesis"] < 1 || kinds[Pause]-shortPauses < 1 || shortPauses < 1 ||
			kinds[Stranger] < 1 || kinds[PauseAfterTake] < 1 || kinds[Refuse] < 1 || kinds[Churn] < 1 {
			t.Fatalf("short.json: %d nodes, %d shards, faults %v (%d pauses shorter than LeaseExpiry), cuts %v", s.Nodes, s.Shards, kinds, shortPauses, cuts)
		}
		// CI runs it: under 6 minutes of producing, and few enough records
		// for kinesis-mock.
		if d := time.Duration(s.Duration); d > 6*time.Minute || s.Rate*d.Seconds() > 5000 {
			t.Fatalf("short.json: %s at %g/s is too long for CI or kinesis-mock", d, s.Rate)
		}
	}
}

func TestLoadRejectsUnknown(t *testing.T) {
	if _, err := (Scenario{Mix: []Kind{"explode"}}).WithDefaults(); err == nil {
		t.Fatal("unknown kind accepted")
	}
	if _, err := ParseKinds("kill,nope"); err == nil {
		t.Fatal("unknown kind in --faults accepted")
	}
	ks, err := ParseKinds("kill, split,merge")
	if err != nil || len(ks) != 3 || ks[1] != Split {
		t.Fatalf("%v %v", ks, err)
	}
}

func TestTimingsFromNodeArgs(t *testing.T) {
	tm, err := Scenario{}.Timings() // DefaultNodeArgs
	if err != nil || tm != (Timings{RenewInterval: 3 * time.Second, LeaseExpiry: 9 * time.Second, StallTimeout: 10 * time.Second, ProcessTimeout: 5 * time.Second}) {
		t.Fatalf("default node args: %+v %v", tm, err)
	}
	tm, err = Scenario{NodeArgs: []string{"--renew-interval=4s", "-lease-expiry", "20s", "--stall-timeout", "7s", "--stall-timeout=8s"}}.Timings()
	if err != nil || tm.RenewInterval != 4*time.Second || tm.LeaseExpiry != 20*time.Second || tm.StallTimeout != 8*time.Second || tm.ProcessTimeout != 5*time.Minute {
		t.Fatalf("%+v %v", tm, err)
	}
	tm, err = Scenario{NodeArgs: []string{"--sync-interval", "1s"}}.Timings()
	if err != nil || tm.RenewInterval != 30*time.Second || tm.LeaseExpiry != 90*time.Second || tm.StallTimeout != 30*time.Second {
		t.Fatalf("node defaults: %+v %v", tm, err)
	}
	if _, err := (Scenario{NodeArgs: []string{"--renew-interval", "soon"}}).WithDefaults(); err == nil {
		t.Fatal("bad --renew-interval accepted")
	}
	s, err := Scenario{}.WithDefaults()
	if err != nil || time.Duration(s.MaxStall) != 29*time.Second {
		t.Fatalf("max_stall %s (%v), want LeaseExpiry 9s + StallTimeout 10s + 10s", time.Duration(s.MaxStall), err)
	}
	s, err = Scenario{MaxStall: Duration(time.Minute), NodeArgs: []string{"--stall-timeout", "1s"}}.WithDefaults()
	if err != nil || time.Duration(s.MaxStall) != time.Minute {
		t.Fatalf("max_stall %s (%v), want the scenario's", time.Duration(s.MaxStall), err)
	}
}

func TestNewKindsValidatedAndDefaulted(t *testing.T) {
	for _, bad := range []Fault{
		{Kind: Ambiguous, Target: "kinesis"},
		{Kind: Cut, Target: "s3"},
		{Kind: Pause, For: Duration(-time.Second)},
	} {
		if _, err := (Scenario{Faults: []Fault{bad}}).WithDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	s, err := Scenario{Faults: []Fault{
		{At: Duration(10 * time.Second), Kind: Cut},
		{At: Duration(20 * time.Second), Kind: Cut, Target: "kinesis", For: Duration(25 * time.Second)},
		{At: Duration(30 * time.Second), Kind: Pause, Node: "n2"},
		{At: Duration(40 * time.Second), Kind: Hang},
		{At: Duration(50 * time.Second), Kind: Ambiguous},
	}}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	fs := Schedule(s.Seed, s)
	long := Duration(34 * time.Second) // max_stall 29s + 5s
	want := []Fault{
		{At: Duration(10 * time.Second), Kind: Cut, For: long, Target: "both"},
		{At: Duration(20 * time.Second), Kind: Cut, For: Duration(25 * time.Second), Target: "kinesis"},
		{At: Duration(30 * time.Second), Kind: Pause, Node: "n2", For: long},
		{At: Duration(40 * time.Second), Kind: Hang, For: long},
		{At: Duration(50 * time.Second), Kind: Ambiguous, For: Duration(10 * time.Second), Share: 0.2, Target: "dynamodb"},
	}
	if !reflect.DeepEqual(fs, want) {
		t.Fatalf("schedule\n%+v\nwant\n%+v", fs, want)
	}
	for _, k := range []Kind{Cut, Pause, Hang, Ambiguous} {
		if !k.timed() {
			t.Errorf("%s not timed", k)
		}
	}
	if ks, err := ParseKinds("cut,pause,hang,ambiguous"); err != nil || len(ks) != 4 {
		t.Fatalf("--faults with the new kinds: %v %v", ks, err)
	}
}

// A random schedule with the long partial faults keeps timed faults apart
// and every fault inside the run.
func TestRandomScheduleWithPartialFaults(t *testing.T) {
	s := Scenario{Nodes: 3, Duration: Duration(5 * time.Minute), Mix: []Kind{Cut, Pause, Hang, Ambiguous, Kill, Restart}, Count: 12}
	fs := Schedule(3, s)
	if len(fs) < 6 {
		t.Fatalf("only %d faults: %+v", len(fs), fs)
	}
	targets := map[string]bool{}
	for i, f := range fs {
		if time.Duration(f.At) >= time.Duration(s.Duration) {
			t.Fatalf("fault %+v after the run", f)
		}
		if f.Kind.impairs() && time.Duration(f.For) != 34*time.Second {
			t.Fatalf("fault %+v: want 34s", f)
		}
		if f.Kind == Cut {
			targets[f.Target] = true
		}
		if i > 0 && fs[i-1].Kind.timed() && f.At < fs[i-1].At+fs[i-1].For {
			t.Fatalf("fault %+v begins before %+v ends", f, fs[i-1])
		}
	}
	if !reflect.DeepEqual(fs, Schedule(3, s)) {
		t.Fatal("not deterministic")
	}
	t.Logf("%d faults; cut targets %v", len(fs), targets)
}
