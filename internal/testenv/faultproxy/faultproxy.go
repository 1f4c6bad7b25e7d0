// Package faultproxy owns fault injection in front of a local AWS server: an
// HTTP reverse proxy that answers a chosen share of requests with the
// service's own throttling error, a 500, or after a delay; that blackholes
// every request (holds it unanswered, forwarding nothing); or that lets a
// share of DynamoDB writes be applied and still answers them with a 500 (an
// ambiguous outcome). No local server throttles or loses answers, so this is
// how tests and chaos runs show that kinactor backs off, recovers and fences
// itself. A DynamoDB proxy also keeps a log of the writes whose success it
// passed on to the client (Writes), which tells a verifier when a node last
// knew that a lease write had succeeded. It is for tests and chaos runs
// only, and imports nothing of kinactor.
package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Service selects the throttling error the proxy speaks.
type Service int

// Services.
const (
	Kinesis Service = iota + 1
	DynamoDB
)

// Faults is what the proxy injects; shares are in [0,1].
type Faults struct {
	Throttle float64       // share answered with the service's throttling error (HTTP 400)
	Errors   float64       // share answered with HTTP 500 InternalFailure
	Latency  time.Duration // added to every forwarded request
	// Blackhole holds every request unanswered and forwards nothing, and
	// holds the answers to requests forwarded before it began: a held
	// request ends only when its client gives up (its context ends) or
	// the proxy closes; the connection is then closed without an answer.
	// Requests that arrive after Blackhole is cleared pass again.
	Blackhole bool
	// Ambiguous is the share of write requests (UpdateItem, PutItem,
	// DeleteItem) that are forwarded and applied by the server, whose
	// real answer is then replaced by HTTP 500 InternalFailure.
	Ambiguous float64
	// Only, when set, limits Throttle, Errors, Latency and Ambiguous to
	// requests whose X-Amz-Target ends with one of these operations (e.g.
	// "GetRecords", "UpdateItem"). Blackhole holds every request.
	Only []string
}

// Counts says what the proxy did.
type Counts struct {
	Requests, Throttled, Errored, Delayed int64
	// Held counts requests blackholed (and answers held back); Ambiguous
	// the writes applied but answered with a 500.
	Held, Ambiguous int64
	ByOperation     map[string]int64 // requests by X-Amz-Target operation
}

// Write is a DynamoDB write whose 2xx answer the proxy passed on to the
// client: the client knows it succeeded.
type Write struct {
	At time.Time // when the answer was passed on
	Op string    // UpdateItem, PutItem or DeleteItem
	// Key is the item's hash key value: the only string attribute of the
	// request's Key, or the Item's "leaseKey" for PutItem ("" if neither).
	Key string
	// Sets lists the attribute names the write sets (the SET and ADD
	// actions of an UpdateExpression, every attribute of a PutItem's
	// Item); Removes those it removes (REMOVE).
	Sets, Removes []string
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	URL string // http://127.0.0.1:PORT, to use as the endpoint

	svc     Service
	srv     *http.Server
	ln      net.Listener
	rp      *httputil.ReverseProxy
	closing chan struct{}
	once    sync.Once

	mu     sync.Mutex
	faults Faults
	rng    *rand.Rand
	ops    map[string]int64
	writes []Write

	n struct{ req, thr, err, del, held, amb atomic.Int64 }
}

// infoKey keys the per-request bookkeeping in the forwarded request's
// context, for ModifyResponse.
type infoKey struct{}

type reqInfo struct {
	op        string
	body      []byte // DynamoDB writes only
	ambiguous bool
}

var (
	errHeld      = errors.New("faultproxy: answer held by a blackhole")
	errAmbiguous = errors.New("faultproxy: answer replaced by an ambiguous 500")
)

// Start listens on a free loopback port and forwards to target.
func Start(svc Service, target string, seed uint64) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("faultproxy: bad target %q: %v", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{URL: "http://" + ln.Addr().String(), svc: svc, ln: ln, closing: make(chan struct{}),
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), ops: map[string]int64{}}
	p.rp = httputil.NewSingleHostReverseProxy(u)
	// Clients giving up on held or slow requests are part of the faults,
	// not news: the reverse proxy would log each one.
	p.rp.ErrorLog = log.New(io.Discard, "", 0)
	p.rp.ModifyResponse = p.modifyResponse
	p.rp.ErrorHandler = p.errorHandler
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// Set replaces the faults in force.
func (p *Proxy) Set(f Faults) {
	p.mu.Lock()
	p.faults = f
	p.mu.Unlock()
}

// Clear stops injecting faults.
func (p *Proxy) Clear() { p.Set(Faults{}) }

// Faults returns the faults in force.
func (p *Proxy) Faults() Faults {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

// Counts returns what the proxy did so far.
func (p *Proxy) Counts() Counts {
	p.mu.Lock()
	ops := make(map[string]int64, len(p.ops))
	for k, v := range p.ops {
		ops[k] = v
	}
	p.mu.Unlock()
	return Counts{Requests: p.n.req.Load(), Throttled: p.n.thr.Load(), Errored: p.n.err.Load(), Delayed: p.n.del.Load(),
		Held: p.n.held.Load(), Ambiguous: p.n.amb.Load(), ByOperation: ops}
}

// Writes returns the successful writes passed on so far, in order (DynamoDB
// proxies only; empty for Kinesis).
func (p *Proxy) Writes() []Write {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Write(nil), p.writes...)
}

// LastWrite returns when the last successful write before t was passed on
// (zero if none).
func (p *Proxy) LastWrite(before time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.writes) - 1; i >= 0; i-- {
		if p.writes[i].At.Before(before) {
			return p.writes[i].At
		}
	}
	return time.Time{}
}

// Close stops the proxy; held requests end without an answer.
func (p *Proxy) Close() error {
	p.once.Do(func() { close(p.closing) })
	return p.srv.Close()
}

func isWrite(op string) bool { return op == "UpdateItem" || op == "PutItem" || op == "DeleteItem" }

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.n.req.Add(1)
	target := r.Header.Get("X-Amz-Target")
	op := target
	if i := strings.LastIndexByte(op, '.'); i >= 0 {
		op = op[i+1:]
	}
	info := &reqInfo{op: op}
	if p.svc == DynamoDB && isWrite(op) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return // the client went away
		}
		info.body = b
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	p.mu.Lock()
	f := p.faults
	p.ops[op]++
	applies := len(f.Only) == 0
	for _, o := range f.Only {
		if strings.HasSuffix(target, o) {
			applies = true
		}
	}
	roll := p.rng.Float64()
	p.mu.Unlock()
	if f.Blackhole {
		p.n.held.Add(1)
		// Read the whole body, so that the server notices the client
		// hanging up (it watches the connection only after the body).
		_, _ = io.Copy(io.Discard, r.Body)
		p.hold(r.Context())
		panic(http.ErrAbortHandler) // close the connection, answer nothing
	}
	if applies {
		switch {
		case roll < f.Throttle:
			p.n.thr.Add(1)
			p.throttle(w)
			return
		case roll < f.Throttle+f.Errors:
			p.n.err.Add(1)
			writeError(w, http.StatusInternalServerError, "InternalFailure", "injected by faultproxy")
			return
		case p.svc == DynamoDB && isWrite(op) && roll < f.Throttle+f.Errors+f.Ambiguous:
			info.ambiguous = true
		}
		if f.Latency > 0 {
			p.n.del.Add(1)
			select {
			case <-time.After(f.Latency):
			case <-r.Context().Done():
				return
			}
		}
	}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), infoKey{}, info)))
}

// hold waits until ctx ends or the proxy closes.
func (p *Proxy) hold(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-p.closing:
	}
}

// modifyResponse holds answers while a blackhole is in force, replaces an
// ambiguous write's answer, and logs successful writes.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	info, _ := resp.Request.Context().Value(infoKey{}).(*reqInfo)
	p.mu.Lock()
	if p.faults.Blackhole {
		p.mu.Unlock()
		p.n.held.Add(1)
		p.hold(resp.Request.Context())
		return errHeld
	}
	if info != nil && info.ambiguous {
		p.mu.Unlock()
		p.n.amb.Add(1)
		_, _ = io.Copy(io.Discard, resp.Body)
		return errAmbiguous
	}
	if info != nil && info.body != nil && resp.StatusCode/100 == 2 {
		// Under the lock with the blackhole check: a write logged here was
		// passed on before any blackhole that follows began.
		wr := parseWrite(info.op, info.body)
		wr.At = time.Now()
		p.writes = append(p.writes, wr)
	}
	p.mu.Unlock()
	return nil
}

func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, errHeld):
		panic(http.ErrAbortHandler)
	case errors.Is(err, errAmbiguous):
		writeError(w, http.StatusInternalServerError, "InternalFailure", "injected by faultproxy: the write was applied")
	default:
		w.WriteHeader(http.StatusBadGateway)
	}
}

func (p *Proxy) throttle(w http.ResponseWriter) {
	switch p.svc {
	case DynamoDB:
		writeError(w, http.StatusBadRequest, "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException", "injected by faultproxy: throughput exceeded")
	default:
		writeError(w, http.StatusBadRequest, "ProvisionedThroughputExceededException", "injected by faultproxy: rate exceeded for shard")
	}
}

// writeError answers in the AWS JSON 1.1 protocol's error shape.
func writeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Errortype", typ)
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"__type":%q,"message":%q}`, typ, msg)
}

// parseWrite reads what a DynamoDB write request does (best effort: what
// it cannot parse stays empty).
func parseWrite(op string, body []byte) Write {
	wr := Write{Op: op}
	var req struct {
		Key                      map[string]map[string]json.RawMessage
		Item                     map[string]map[string]json.RawMessage
		UpdateExpression         string
		ExpressionAttributeNames map[string]string
	}
	if json.Unmarshal(body, &req) != nil {
		return wr
	}
	str := func(av map[string]json.RawMessage) string {
		var s string
		if raw, ok := av["S"]; ok && json.Unmarshal(raw, &s) == nil {
			return s
		}
		return ""
	}
	if len(req.Key) == 1 {
		for _, av := range req.Key {
			wr.Key = str(av)
		}
	} else if av, ok := req.Key["leaseKey"]; ok {
		wr.Key = str(av)
	}
	if op == "PutItem" {
		if av, ok := req.Item["leaseKey"]; ok && wr.Key == "" {
			wr.Key = str(av)
		}
		for name := range req.Item {
			wr.Sets = append(wr.Sets, name)
		}
		slices.Sort(wr.Sets)
	}
	if req.UpdateExpression != "" {
		wr.Sets, wr.Removes = UpdatedAttributes(req.UpdateExpression, req.ExpressionAttributeNames)
	}
	return wr
}

// UpdatedAttributes parses a DynamoDB UpdateExpression and returns the
// top-level attribute names its SET and ADD actions write and those its
// REMOVE actions remove (DELETE, which takes elements from a set, counts
// as a write), with #placeholders resolved through names.
func UpdatedAttributes(expr string, names map[string]string) (sets, removes []string) {
	type clause struct {
		kw   string
		body string
	}
	// Split at the clause keywords, outside parentheses.
	var cs []clause
	depth, start, kw := 0, 0, ""
	isWord := func(c byte) bool {
		return c == '_' || c == '#' || c == ':' || c == '.' || c == '[' || c == ']' ||
			(c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
	}
	for i := 0; i < len(expr); i++ {
		switch expr[i] {
		case '(':
			depth++
			continue
		case ')':
			depth--
			continue
		}
		if depth != 0 || (i > 0 && isWord(expr[i-1])) {
			continue
		}
		for _, k := range []string{"SET", "REMOVE", "ADD", "DELETE"} {
			end := i + len(k)
			if end <= len(expr) && strings.EqualFold(expr[i:end], k) && (end == len(expr) || !isWord(expr[end])) {
				if kw != "" {
					cs = append(cs, clause{kw, expr[start:i]})
				}
				kw, start = k, end
				i = end - 1
				break
			}
		}
	}
	if kw != "" {
		cs = append(cs, clause{kw, expr[start:]})
	}
	resolve := func(path string) string {
		path = strings.TrimSpace(path)
		if i := strings.IndexAny(path, ".["); i >= 0 {
			path = path[:i]
		}
		if n, ok := names[path]; ok {
			return n
		}
		return path
	}
	for _, c := range cs {
		for _, action := range splitTopLevel(c.body) {
			action = strings.TrimSpace(action)
			if action == "" {
				continue
			}
			var path string
			switch c.kw {
			case "SET":
				path, _, _ = strings.Cut(action, "=")
			default: // REMOVE path; ADD path value; DELETE path value
				path = strings.Fields(action)[0]
			}
			if name := resolve(path); name != "" {
				if c.kw == "REMOVE" {
					removes = append(removes, name)
				} else {
					sets = append(sets, name)
				}
			}
		}
	}
	return sets, removes
}

// splitTopLevel splits s at the commas outside parentheses.
func splitTopLevel(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}
