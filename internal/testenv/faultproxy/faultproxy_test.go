package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestInjectsTheShareItIsTold(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer backend.Close()
	p, err := Start(Kinesis, backend.URL, 42)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Set(Faults{Throttle: 0.3, Errors: 0.1})
	const n = 2000
	var thr, errs, ok int
	for i := 0; i < n; i++ {
		resp, err := http.Post(p.URL, "application/x-amz-json-1.1", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == 400 && strings.Contains(string(body), "ProvisionedThroughputExceededException"):
			thr++
		case resp.StatusCode == 500:
			errs++
		case resp.StatusCode == 200 && string(body) == "ok":
			ok++
		default:
			t.Fatalf("unexpected answer %d %s", resp.StatusCode, body)
		}
	}
	if f := float64(thr) / n; f < 0.26 || f > 0.34 {
		t.Errorf("throttled %.3f of requests, want ≈0.3", f)
	}
	if f := float64(errs) / n; f < 0.07 || f > 0.13 {
		t.Errorf("errored %.3f of requests, want ≈0.1", f)
	}
	c := p.Counts()
	if c.Requests != n || c.Throttled != int64(thr) || c.Errored != int64(errs) {
		t.Errorf("counts %+v disagree with what was seen (%d throttled, %d errors)", c, thr, errs)
	}
	// cleared: everything passes
	p.Clear()
	for i := 0; i < 50; i++ {
		resp, err := http.Get(p.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("after Clear: %d", resp.StatusCode)
		}
	}
}

func TestOnlyAndLatency(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	p, err := Start(DynamoDB, backend.URL, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Set(Faults{Throttle: 1, Only: []string{"UpdateItem"}})
	do := func(target string) *http.Response {
		req, _ := http.NewRequest("POST", p.URL, strings.NewReader("{}"))
		req.Header.Set("X-Amz-Target", target)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := do("DynamoDB_20120810.UpdateItem"); r.StatusCode != 400 || !strings.Contains(r.Header.Get("X-Amzn-Errortype"), "ProvisionedThroughputExceeded") {
		t.Fatalf("UpdateItem not throttled: %d %s", r.StatusCode, r.Header.Get("X-Amzn-Errortype"))
	}
	if r := do("DynamoDB_20120810.GetItem"); r.StatusCode != 200 {
		t.Fatalf("GetItem throttled though Only is UpdateItem: %d", r.StatusCode)
	}
	p.Set(Faults{Latency: 80 * time.Millisecond})
	start := time.Now()
	do("DynamoDB_20120810.GetItem")
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Fatalf("latency not added: %v", d)
	}
}

// post sends a DynamoDB-style request to the proxy with ctx.
func post(ctx context.Context, url, target, body string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Amz-Target", target)
	return http.DefaultClient.Do(req)
}

// A blackhole forwards nothing and answers nothing: a request ends when its
// client gives up, or when the proxy closes; once cleared, new requests
// pass. An answer still on its way when the blackhole begins is held too.
func TestBlackhole(t *testing.T) {
	var forwarded atomic.Int64
	release := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forwarded.Add(1)
		if r.Header.Get("X-Amz-Target") == "DynamoDB_20120810.Slow" {
			<-release
		}
		_, _ = io.WriteString(w, "{}")
	}))
	defer backend.Close()
	p, err := Start(DynamoDB, backend.URL, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// A request forwarded before the blackhole whose answer comes during it.
	slow := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		resp, err := post(ctx, p.URL, "DynamoDB_20120810.Slow", "{}")
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("answered %d", resp.StatusCode)
		}
		slow <- err
	}()
	waitFor(t, func() bool { return forwarded.Load() == 1 })
	p.Set(Faults{Blackhole: true})
	close(release)
	if err := <-slow; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the answer that came during the blackhole: %v, want the client's deadline", err)
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = post(ctx, p.URL, "DynamoDB_20120810.UpdateItem", `{"Key":{"leaseKey":{"S":"s1"}}}`)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("blackholed request: %v after %v, want the client's deadline", err, time.Since(start))
	}
	if n := forwarded.Load(); n != 1 {
		t.Fatalf("%d requests reached the server, want only the one before the blackhole", n)
	}
	// Held until the proxy closes: the client sees the connection close.
	held := make(chan error, 1)
	go func() {
		_, err := post(context.Background(), p.URL, "Kinesis_20131202.GetRecords", "{}")
		held <- err
	}()
	waitFor(t, func() bool { return p.Counts().Held == 3 })
	select {
	case err := <-held:
		t.Fatalf("held request ended before the proxy closed: %v", err)
	case <-time.After(100 * time.Millisecond):
	}

	p.Clear()
	resp, err := post(context.Background(), p.URL, "DynamoDB_20120810.GetItem", "{}")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the blackhole: %v %v", resp, err)
	}
	resp.Body.Close()
	if len(p.Writes()) != 0 {
		t.Fatalf("writes logged: %+v", p.Writes())
	}
	select {
	case err := <-held:
		t.Fatalf("held request ended when the blackhole was cleared: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	p.Close()
	select {
	case err := <-held:
		if err == nil {
			t.Fatal("held request answered at close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held request not ended by Close")
	}
	if c := p.Counts(); c.Held != 3 {
		t.Fatalf("held %d, want 3", c.Held)
	}
}

// Ambiguous writes reach the server and are applied, and the client gets a
// 500; reads are never ambiguous. Writes whose 2xx answer was passed on
// are logged with their key and attributes.
func TestAmbiguousWritesAndWriteLog(t *testing.T) {
	var applied atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.Header.Get("X-Amz-Target"), "Item") && !strings.HasSuffix(r.Header.Get("X-Amz-Target"), "GetItem") {
			applied.Add(1)
		}
		_, _ = io.WriteString(w, "{}")
	}))
	defer backend.Close()
	p, err := Start(DynamoDB, backend.URL, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Set(Faults{Ambiguous: 1})
	const upd = `{"TableName":"t","Key":{"leaseKey":{"S":"shard-1"}},"UpdateExpression":"SET #c = #c + :one, #cp = :cp, #sw = if_not_exists(#sw, :zero) + :one","ExpressionAttributeNames":{"#c":"leaseCounter","#cp":"checkpoint","#sw":"ownerSwitchesSinceCheckpoint"}}`
	for _, target := range []string{"DynamoDB_20120810.UpdateItem", "DynamoDB_20120810.PutItem", "DynamoDB_20120810.DeleteItem"} {
		resp, err := post(context.Background(), p.URL, target, upd)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 500 || !strings.Contains(string(b), "InternalFailure") {
			t.Fatalf("%s: %d %s, want 500 InternalFailure", target, resp.StatusCode, b)
		}
	}
	if n := applied.Load(); n != 3 {
		t.Fatalf("%d writes applied, want 3", n)
	}
	resp, err := post(context.Background(), p.URL, "DynamoDB_20120810.GetItem", "{}")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GetItem with ambiguous writes: %v %v", resp, err)
	}
	resp.Body.Close()
	if c := p.Counts(); c.Ambiguous != 3 || len(p.Writes()) != 0 {
		t.Fatalf("ambiguous %d, writes %v", c.Ambiguous, p.Writes())
	}

	p.Clear()
	before := time.Now()
	resp, err = post(context.Background(), p.URL, "DynamoDB_20120810.UpdateItem", upd)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("UpdateItem: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = post(context.Background(), p.URL, "DynamoDB_20120810.PutItem", `{"Item":{"leaseKey":{"S":"shard-2"},"checkpoint":{"S":"TRIM_HORIZON"}}}`)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("PutItem: %v %v", resp, err)
	}
	resp.Body.Close()
	ws := p.Writes()
	if len(ws) != 2 || ws[0].Key != "shard-1" || ws[0].Op != "UpdateItem" || ws[1].Key != "shard-2" || ws[1].Op != "PutItem" {
		t.Fatalf("writes %+v", ws)
	}
	if want := []string{"leaseCounter", "checkpoint", "ownerSwitchesSinceCheckpoint"}; !slices.Equal(ws[0].Sets, want) {
		t.Fatalf("sets %v, want %v", ws[0].Sets, want)
	}
	if want := []string{"checkpoint", "leaseKey"}; !slices.Equal(ws[1].Sets, want) {
		t.Fatalf("PutItem sets %v, want %v", ws[1].Sets, want)
	}
	if ws[0].At.Before(before) || p.LastWrite(time.Now().Add(time.Second)) != ws[1].At || !p.LastWrite(ws[0].At.Add(time.Nanosecond)).Equal(ws[0].At) {
		t.Fatalf("write times %v, LastWrite %v", ws, p.LastWrite(time.Now()))
	}
}

func TestUpdatedAttributes(t *testing.T) {
	names := map[string]string{"#o": "leaseOwner", "#c": "leaseCounter", "#cp": "checkpoint", "#ch": "childShardIds"}
	for _, c := range []struct {
		expr          string
		sets, removes []string
	}{
		{"SET #o = :owner, #c = #c + :one", []string{"leaseOwner", "leaseCounter"}, nil},
		{"REMOVE #o SET #c = #c + :one", []string{"leaseCounter"}, []string{"leaseOwner"}},
		{"set #cp = :cp, #sw = if_not_exists(#sw, :zero) + :one remove #ch", []string{"checkpoint", "#sw"}, []string{"childShardIds"}},
		{"ADD #c :one DELETE tags :t", []string{"leaseCounter", "tags"}, nil},
		{"SET a.b[1] = :x, settings = :y", []string{"a", "settings"}, nil},
	} {
		s, r := UpdatedAttributes(c.expr, names)
		if !slices.Equal(s, c.sets) || !slices.Equal(r, c.removes) {
			t.Errorf("%q: sets %v removes %v, want %v %v", c.expr, s, r, c.sets, c.removes)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		<-tick.C
	}
}
