// Package kinesismock owns the test-side workaround that lets the Go SDK
// subscribe to shards on kinesis-mock (enhanced fan-out). It is imported by
// tests only, never by the production path.
//
// kinesis-mock and SubscribeToShard
//
// kinesis-mock answers SubscribeToShard with an event stream that starts
// directly with SubscribeToShardEvent messages. The Go SDK (awsjson 1.1,
// an RPC protocol) expects the first message to be an event with
// :event-type "initial-response" carrying the operation output, and fails
// with "expected initial-response" otherwise. Real AWS sends it.
//
// Transport is an http.RoundTripper given to the test's Kinesis client
// (kinesis.Options.HTTPClient). For a successful SubscribeToShard response
// it wraps the body in a reader that first yields one encoded event-stream
// message (:message-type event, :event-type initial-response, no payload,
// encoded with smithy-go's eventstream encoder, CRCs included) and then
// the server's bytes. The SDK reads the inserted message as the (empty)
// operation output and the server's events as usual.
//
// The same transport can end an event stream after N SubscribeToShardEvent
// messages (cutAfter): the reader decodes the server's messages one by one,
// re-encodes them, and returns io.EOF after the Nth, as if AWS had ended
// the subscription. FanOut must then resubscribe from the continuation
// without losing or repeating records.

package kinesismock

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/smithy-go/eventstream"

	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// Transport inserts the initial-response event kinesis-mock omits and
// optionally ends event streams after CutAfter events.
type Transport struct {
	Base     http.RoundTripper
	CutAfter int // 0: never cut

	Subscribes atomic.Int64 // SubscribeToShard calls answered 200
	Cuts       atomic.Int64 // event streams ended by the transport
}

func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.Base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.HasSuffix(req.Header.Get("X-Amz-Target"), ".SubscribeToShard") {
		return resp, err
	}
	t.Subscribes.Add(1)
	var head bytes.Buffer
	var msg eventstream.Message
	msg.Headers.Set(eventstream.MessageTypeHeader, eventstream.StringValue(eventstream.EventMessageType))
	msg.Headers.Set(eventstream.EventTypeHeader, eventstream.StringValue("initial-response"))
	if err := eventstream.NewEncoder().Encode(&head, msg); err != nil {
		resp.Body.Close()
		return nil, err
	}
	resp.Body = &eventBody{t: t, head: head.Bytes(), body: resp.Body}
	resp.ContentLength = -1
	return resp, nil
}

// eventBody yields head, then the server's event stream (re-framed message
// by message when it must be cut).
type eventBody struct {
	t    *Transport
	head []byte
	body io.ReadCloser

	buf    bytes.Buffer
	events int
	dec    *eventstream.Decoder
	enc    *eventstream.Encoder
	eof    bool
}

func (b *eventBody) Read(p []byte) (int, error) {
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		return n, nil
	}
	if b.t.CutAfter <= 0 {
		return b.body.Read(p)
	}
	for b.buf.Len() == 0 {
		if b.eof {
			return 0, io.EOF
		}
		if b.dec == nil {
			b.dec, b.enc = eventstream.NewDecoder(), eventstream.NewEncoder()
		}
		msg, err := b.dec.Decode(b.body, nil)
		if err != nil {
			return 0, err
		}
		if err := b.enc.Encode(&b.buf, msg); err != nil {
			return 0, err
		}
		if v := msg.Headers.Get(eventstream.EventTypeHeader); v != nil && v.String() == "SubscribeToShardEvent" {
			b.events++
			if b.events >= b.t.CutAfter {
				b.eof = true
				b.t.Cuts.Add(1)
				b.body.Close()
			}
		}
	}
	return b.buf.Read(p)
}

func (b *eventBody) Close() error { return b.body.Close() }

// Client returns a Kinesis client for env's kinesis-mock whose
// HTTP transport is t (t.Base set to a fresh default transport).
func Client(env *localaws.Env, t *Transport) *kinesis.Client {
	t.Base = http.DefaultTransport.(*http.Transport).Clone()
	return kinesis.NewFromConfig(env.AWSConfig(), func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String(env.Kinesis.Endpoint)
		o.HTTPClient = &http.Client{Transport: t}
	})
}
