package backoff

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

func TestCeilingGrowsAndCaps(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Cap: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i, w := range want {
		if got := p.Ceiling(i + 1); got != w*time.Millisecond {
			t.Errorf("Ceiling(%d) = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	if got := p.Ceiling(1000); got != time.Second {
		t.Errorf("Ceiling(1000) = %v, want cap (no overflow)", got)
	}
	if got := p.Ceiling(0); got != 100*time.Millisecond {
		t.Errorf("Ceiling(0) = %v, want base", got)
	}
}

func TestDelayWithinBounds(t *testing.T) {
	p := Policy{Base: 50 * time.Millisecond, Cap: 2 * time.Second}
	r := rand.New(rand.NewPCG(1, 2))
	for n := 1; n < 40; n++ {
		for range 50 {
			d := p.Delay(n, r)
			c := p.Ceiling(n)
			if d < c/2 || d > c {
				t.Fatalf("Delay(%d) = %v outside [%v, %v]", n, d, c/2, c)
			}
		}
	}
}

func TestSleepHonoursContext(t *testing.T) {
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("Sleep: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := Sleep(ctx, time.Hour); err != context.Canceled {
		t.Fatalf("Sleep on a cancelled context = %v", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("Sleep did not return at once on a cancelled context")
	}
	if err := Sleep(ctx, 0); err != context.Canceled {
		t.Fatalf("Sleep(0) on a cancelled context = %v", err)
	}
}
