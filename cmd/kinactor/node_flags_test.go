package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kinactor/kinactor"
)

// TestProcessingFlags: --max-attempts, --parallelization, --bisect-on-error
// and --max-record-age land in the Config; a bad value is an error naming
// the flag and the value, and leaves the Config alone.
func TestProcessingFlags(t *testing.T) {
	def := processingFlags{maxAttempts: 5, parallelization: 1} // the flags' defaults
	with := func(f func(*processingFlags)) processingFlags { p := def; f(&p); return p }
	for _, c := range []struct {
		name  string
		flags processingFlags
		want  kinactor.Config // the four fields
		err   []string        // substrings of the error; nil: no error
	}{
		{"defaults", def, kinactor.Config{MaxProcessorAttempts: 5, ParallelizationFactor: 1}, nil},
		{"all set", processingFlags{maxAttempts: 2, parallelization: 4, bisect: true, maxRecordAge: time.Minute, onFailure: true},
			kinactor.Config{MaxProcessorAttempts: 2, ParallelizationFactor: 4, BisectOnError: true, MaxRecordAge: time.Minute}, nil},
		{"one attempt", with(func(p *processingFlags) { p.maxAttempts = 1 }), kinactor.Config{MaxProcessorAttempts: 1, ParallelizationFactor: 1}, nil},
		{"parallelization max", with(func(p *processingFlags) { p.parallelization = kinactor.MaxParallelizationFactor }),
			kinactor.Config{MaxProcessorAttempts: 5, ParallelizationFactor: kinactor.MaxParallelizationFactor}, nil},
		{"max-record-age 0 without on-failure", with(func(p *processingFlags) { p.maxRecordAge = 0 }), kinactor.Config{MaxProcessorAttempts: 5, ParallelizationFactor: 1}, nil},
		{"max-attempts 0", with(func(p *processingFlags) { p.maxAttempts = 0 }), kinactor.Config{}, []string{"--max-attempts 0", "at least 1"}},
		{"max-attempts -3", with(func(p *processingFlags) { p.maxAttempts = -3 }), kinactor.Config{}, []string{"--max-attempts -3"}},
		{"parallelization 0", with(func(p *processingFlags) { p.parallelization = 0 }), kinactor.Config{}, []string{"--parallelization 0", "1 to 100"}},
		{"parallelization 101", with(func(p *processingFlags) { p.parallelization = 101 }), kinactor.Config{}, []string{"--parallelization 101", "1 to 100"}},
		{"max-record-age negative", with(func(p *processingFlags) { p.maxRecordAge = -time.Second; p.onFailure = true }), kinactor.Config{}, []string{"--max-record-age -1s", "negative"}},
		{"max-record-age without on-failure", with(func(p *processingFlags) { p.maxRecordAge = time.Minute }), kinactor.Config{},
			[]string{"--max-record-age 1m0s needs --on-failure", "written there"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cfg kinactor.Config
			err := c.flags.apply(&cfg)
			if c.err != nil {
				if err == nil {
					t.Fatalf("no error, want one naming %q", c.err)
				}
				for _, w := range c.err {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %q", err, w)
					}
				}
			} else if err != nil {
				t.Fatal(err)
			}
			got := cfg
			if got.MaxProcessorAttempts != c.want.MaxProcessorAttempts || got.ParallelizationFactor != c.want.ParallelizationFactor ||
				got.BisectOnError != c.want.BisectOnError || got.MaxRecordAge != c.want.MaxRecordAge {
				t.Errorf("Config attempts %d, parallelization %d, bisect %v, max age %s; want %d, %d, %v, %s",
					got.MaxProcessorAttempts, got.ParallelizationFactor, got.BisectOnError, got.MaxRecordAge,
					c.want.MaxProcessorAttempts, c.want.ParallelizationFactor, c.want.BisectOnError, c.want.MaxRecordAge)
			}
		})
	}
}

// TestMaxRecordAgeWithOnFailure: --max-record-age with --on-failure and no
// --failure-policy runs under the dead-letter policy; with another policy
// --on-failure itself is refused, as before.
func TestMaxRecordAgeWithOnFailure(t *testing.T) {
	spec, policy, err := failureFlags("dir:/tmp/failed", "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := kinactor.Config{FailurePolicy: policy}
	if err := (processingFlags{maxAttempts: 5, parallelization: 1, maxRecordAge: time.Hour, onFailure: spec != nil}).apply(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxRecordAge != time.Hour || cfg.FailurePolicy != kinactor.PolicyDeadLetter {
		t.Fatalf("MaxRecordAge %s, policy %q; want 1h, dead-letter", cfg.MaxRecordAge, cfg.FailurePolicy)
	}
	for _, p := range []string{"retry", "stop-shard"} {
		if _, _, err := failureFlags("dir:/tmp/failed", p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("--on-failure with --failure-policy %s: %v, want an error naming it", p, err)
		}
	}
}

// TestNodeHelpProcessingFlags: `kinactor node --help` shows the flags, and
// --failure-policy's help refers to --max-attempts (not a fixed count).
func TestNodeHelpProcessingFlags(t *testing.T) {
	var out bytes.Buffer
	err := runNode(context.Background(), []string{"--help"}, &out, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err %v, want flag.ErrHelp", err)
	}
	help := out.String()
	for _, w := range []string{"-parallelization", "ParallelizationFactor", "-bisect-on-error", "-max-record-age", "-max-attempts",
		"after --max-attempts failed deliveries", "-fail-keys", "-record-delay"} {
		if !strings.Contains(help, w) {
			t.Errorf("help does not show %q", w)
		}
	}
	if strings.Contains(help, "after 5 failed deliveries") {
		t.Error("--failure-policy's help names a fixed 5 attempts")
	}
}

// TestBalanceFlags: --balance and the load knobs land in the Config; a bad
// value is an error naming the flag and the value.
func TestBalanceFlags(t *testing.T) {
	def := balanceFlags{balance: "count", threshold: 0.10, interval: 10 * time.Second, coolDown: 5 * time.Minute, maxMoves: 2}
	with := func(f func(*balanceFlags)) balanceFlags { b := def; f(&b); return b }
	for _, c := range []struct {
		name  string
		flags balanceFlags
		err   []string
	}{
		{"defaults", def, nil},
		{"load", with(func(b *balanceFlags) {
			b.balance = "load"
			b.threshold = 0.2
			b.interval = time.Second
			b.coolDown = 0
			b.maxMoves = 5
		}), nil},
		{"balance bad", with(func(b *balanceFlags) { b.balance = "bytes" }), []string{`--balance "bytes"`, "count or load"}},
		{"threshold 0", with(func(b *balanceFlags) { b.threshold = 0 }), []string{"--load-threshold 0"}},
		{"threshold 11", with(func(b *balanceFlags) { b.threshold = 11 }), []string{"--load-threshold 11"}},
		{"interval 0", with(func(b *balanceFlags) { b.interval = 0 }), []string{"--rebalance-interval 0s", "positive"}},
		{"cooldown negative", with(func(b *balanceFlags) { b.coolDown = -time.Second }), []string{"--load-cooldown -1s"}},
		{"moves 0", with(func(b *balanceFlags) { b.maxMoves = 0 }), []string{"--max-load-moves 0"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cfg kinactor.Config
			err := c.flags.apply(&cfg)
			if c.err != nil {
				if err == nil {
					t.Fatalf("no error, want one naming %q", c.err)
				}
				for _, w := range c.err {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %q", err, w)
					}
				}
				if cfg.Balance != "" {
					t.Errorf("Config changed by a refused flag: %+v", cfg.Balance)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(cfg.Balance) != c.flags.balance || cfg.LoadThreshold != c.flags.threshold || cfg.RebalanceInterval != c.flags.interval ||
				cfg.LoadCoolDown != c.flags.coolDown || cfg.MaxLoadMoves != c.flags.maxMoves {
				t.Errorf("Config %v %v %v %v %v from %+v", cfg.Balance, cfg.LoadThreshold, cfg.RebalanceInterval, cfg.LoadCoolDown, cfg.MaxLoadMoves, c.flags)
			}
		})
	}
}

func TestStreamFlags(t *testing.T) {
	dir := t.TempDir()
	good := dir + "/streams.txt"
	if err := os.WriteFile(good, []byte("# the set\norders\n\nclicks LATEST\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badPos := dir + "/bad.txt"
	if err := os.WriteFile(badPos, []byte("orders SOMEWHERE\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		flags  streamFlags
		single string
		multi  []kinactor.StreamConfig
		file   bool
		err    []string
	}{
		{"one", streamFlags{stream: "orders"}, "orders", nil, false, nil},
		{"one forced multi", streamFlags{stream: "orders", multi: true}, "", []kinactor.StreamConfig{{Name: "orders"}}, false, nil},
		{"many", streamFlags{stream: "a, b,c"}, "", []kinactor.StreamConfig{{Name: "a"}, {Name: "b"}, {Name: "c"}}, false, nil},
		{"file", streamFlags{stream: "", file: good}, "", nil, true, nil},
		{"none", streamFlags{}, "", nil, false, []string{"--stream", "required"}},
		{"both", streamFlags{stream: "a", file: good}, "", nil, false, []string{`--stream "a"`, "--stream-file"}},
		{"empty name", streamFlags{stream: "a,,b"}, "", nil, false, []string{`--stream "a,,b"`, "empty"}},
		{"missing file", streamFlags{file: dir + "/nope"}, "", nil, false, []string{"--stream-file", "nope"}},
		{"bad position", streamFlags{file: badPos}, "", nil, false, []string{"line 1", `"SOMEWHERE"`}},
		{"negative interval", streamFlags{stream: "a", syncInterval: -time.Second}, "", nil, false, []string{"--stream-sync-interval -1s"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cfg kinactor.Config
			err := c.flags.apply(&cfg)
			if c.err != nil {
				if err == nil {
					t.Fatalf("no error, want one naming %q", c.err)
				}
				for _, w := range c.err {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.StreamName != c.single || !slices.Equal(cfg.Streams, c.multi) || (cfg.StreamsFunc != nil) != c.file {
				t.Fatalf("config %q %v func=%v", cfg.StreamName, cfg.Streams, cfg.StreamsFunc != nil)
			}
			if c.file {
				got, err := cfg.StreamsFunc(context.Background())
				if err != nil || !slices.Equal(got, []kinactor.StreamConfig{{Name: "orders"}, {Name: "clicks", InitialPosition: kinactor.Latest}}) {
					t.Fatalf("StreamsFunc = %v, %v", got, err)
				}
			}
		})
	}
}
