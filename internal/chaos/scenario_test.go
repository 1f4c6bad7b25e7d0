package chaos

import (
	"path/filepath"
	"testing"
	"time"
)

// The scenario files make chaos and make chaos-long run must load and
// schedule what the README promises.
func TestScenarioFiles(t *testing.T) {
	for _, f := range []string{"short.json", "long.json"} {
		s, err := Load(filepath.Join("..", "..", "test", "chaos", f))
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
		if f != "short.json" {
			continue
		}
		kinds := map[Kind]int{}
		for _, x := range fs {
			kinds[x.Kind]++
		}
		if s.Nodes != 5 || s.Shards != 16 || kinds[Kill] < 2 || kinds[Restart] < 1 || kinds[Stop] < 1 ||
			kinds[Partition] < 1 || kinds[Throttle] < 1 || kinds[Split] != 1 || kinds[Merge] != 1 {
			t.Fatalf("short.json: %d nodes, %d shards, faults %v", s.Nodes, s.Shards, kinds)
		}
		if d := time.Duration(s.Duration); d > 3*time.Minute || s.Rate*d.Seconds() > 5000 {
			t.Fatalf("short.json: %s at %g/s is too long for kinesis-mock", d, s.Rate)
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
