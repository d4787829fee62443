package main

// ichaos's stream toxics: faults inside HTTP/1.1 responses that carry token streams
// (text/event-stream, NDJSON), on the downstream stream of a proxy.
//
// Toxiproxy draws a toxic's toxicity once per connection, and clients keep connections alive
// across many requests, so these toxics pick *responses* themselves: each response is picked
// with probability `share` (from the toxic's own seeded generator), and the proxy's toxicity
// stays 1. Bytes keep their HTTP framing: changes are same-length (a corrupted byte, a final
// event turned into SSE comment lines), so a Content-Length or chunk size stays true.
//
// A connection that was already open when a toxic was added is judged from its next response:
// mid-response there is no way to know where the framing is, so bytes pass on untouched until a
// read starts with a status line (a server writes a response's head at the start of a write).

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Shopify/toxiproxy/v2/stream"
	"github.com/Shopify/toxiproxy/v2/toxics"
)

// upstreamVersion is the Toxiproxy release in go.mod (./dev pins the same tag for the CLI).
const (
	upstreamVersion = "2.12.0"
	toxicsVersion   = "1"
)

// picker is shared by every connection of one toxic: the share of responses it picks, and
// the counts it reports back through the API (`seen`, `affected`) as evidence that it acted.
type picker struct {
	Share float64 `json:"share"`
	Seed  int64   `json:"seed"`

	once     sync.Once
	mu       sync.Mutex
	rng      *rand.Rand
	seen     atomic.Int64
	affected atomic.Int64
}

func (p *picker) pick() bool {
	p.once.Do(func() {
		seed := p.Seed
		if seed == 0 {
			seed = time.Now().UnixNano()
		}
		p.rng = rand.New(rand.NewSource(seed)) // #nosec G404 -- a fault's dice, not a secret
	})
	p.seen.Add(1)
	p.mu.Lock()
	hit := p.rng.Float64() < p.Share
	p.mu.Unlock()
	if hit {
		p.affected.Add(1)
	}
	return hit
}

func (p *picker) check() error {
	if p.Share < 0 || p.Share > 1 {
		return fmt.Errorf("share must be between 0 and 1, not %g", p.Share)
	}
	return nil
}

// run is every stream toxic's Pipe: feed what arrives through the connection's state and
// carry out its ops, returning at an interrupt with whatever is left kept in the state.
func run(stub *toxics.ToxicStub, e *effect, p *picker) {
	c, ok := stub.State.(*conn)
	if !ok {
		c = newConn()
		stub.State = c
	}
	for {
		if !c.perform(stub) {
			return
		}
		select {
		case <-stub.Interrupt:
			return
		case chunk := <-stub.Input:
			if chunk == nil {
				c.eof(e)
				if c.perform(stub) && !stub.Closed() {
					stub.Close()
				}
				return
			}
			if stub.Closed() {
				continue // cut or answered: the rest of the upstream's bytes are dropped
			}
			c.feed(e, p.pick, chunk.Data)
		}
	}
}

// perform carries out the pending ops; false when interrupted (the rest stays pending).
func (c *conn) perform(stub *toxics.ToxicStub) bool {
	for len(c.pending) > 0 {
		next := c.pending[0]
		switch {
		case next.close:
			stub.Close()
			c.pending = nil
			return true
		case next.wait > 0:
			if c.waitUntil.IsZero() {
				c.waitUntil = time.Now().Add(next.wait)
			}
			timer := time.NewTimer(time.Until(c.waitUntil))
			select {
			case <-timer.C:
				c.waitUntil = time.Time{}
			case <-stub.Interrupt:
				timer.Stop()
				return false
			}
		default:
			if stub.Closed() {
				c.pending = nil
				return true
			}
			select {
			case stub.Output <- &stream.StreamChunk{Data: next.data, Timestamp: time.Now()}:
			case <-stub.Interrupt:
				return false
			}
		}
		c.pending = c.pending[1:]
	}
	return true
}

// cleanup, when the toxic is removed: what it held goes on at once (a stall ends, nothing is
// lost); a connection it closed stays closed.
func cleanup(stub *toxics.ToxicStub) {
	c, ok := stub.State.(*conn)
	if !ok {
		return
	}
	c.flushAll()
	for _, next := range c.pending {
		if next.close {
			stub.Close()
			break
		}
		if len(next.data) > 0 && !stub.Closed() {
			_ = stub.WriteOutput(&stream.StreamChunk{Data: next.data, Timestamp: time.Now()}, 5*time.Second)
		}
	}
	c.pending = nil
}

// flushAll releases the line held back for a decision that will now never be made.
func (c *conn) flushAll() {
	if c.phase != phaseGone {
		c.emitTo(len(c.held))
		c.held, c.linePos, c.emitted = c.held[:0], nil, 0
	}
}

// report adds the picker's counts to a toxic's attributes as the API shows them.
func report(attributes any, p *picker) ([]byte, error) {
	raw, err := json.Marshal(attributes)
	if err != nil {
		return nil, err
	}
	fields := map[string]any{}
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	fields["share"], fields["seed"] = p.Share, p.Seed
	fields["seen"], fields["affected"] = p.seen.Load(), p.affected.Load()
	return json.Marshal(fields)
}

// decode reads a toxic's attributes and checks them, so that the API refuses a bad one (400)
// instead of running it. `seen` and `affected` are the toxic's to count, never set.
func decode(data []byte, attributes any, p *picker, check func() error) error {
	var counts struct {
		Share *float64 `json:"share"`
		Seed  *int64   `json:"seed"`
	}
	if err := json.Unmarshal(data, &counts); err != nil {
		return err
	}
	if counts.Share != nil {
		p.Share = *counts.Share
	}
	if counts.Seed != nil {
		p.Seed = *counts.Seed
	}
	if err := json.Unmarshal(data, attributes); err != nil {
		return err
	}
	return errors.Join(p.check(), check())
}

func nonNegative(name string, value int64) error {
	if value < 0 {
		return fmt.Errorf("%s must be 0 or more, not %d", name, value)
	}
	return nil
}

// StreamCut closes the connection after `after` events of a picked response (0: right after
// its head). With a stock reset_peer toxic on the same proxy the close is a reset (RST).
type StreamCut struct {
	picker
	After int64 `json:"after"`
}

type cutAttributes struct {
	After int64 `json:"after"`
}

func (t *StreamCut) effect() *effect {
	return &effect{cutAfter: int(t.After), stallAfter: -1}
}
func (t *StreamCut) Pipe(stub *toxics.ToxicStub)    { run(stub, t.effect(), &t.picker) }
func (t *StreamCut) Cleanup(stub *toxics.ToxicStub) { cleanup(stub) }
func (t *StreamCut) NewState() any                  { return newConn() }
func (t *StreamCut) MarshalJSON() ([]byte, error) {
	return report(cutAttributes{t.After}, &t.picker)
}
func (t *StreamCut) UnmarshalJSON(data []byte) error {
	var a cutAttributes
	err := decode(data, &a, &t.picker, func() error { return nonNegative("after", a.After) })
	t.After = a.After
	return err
}

// StreamStall holds a picked response for `delay` ms after `after` events.
type StreamStall struct {
	picker
	After int64 `json:"after"`
	Delay int64 `json:"delay"`
}

type stallAttributes struct {
	After int64 `json:"after"`
	Delay int64 `json:"delay"`
}

func (t *StreamStall) effect() *effect {
	return &effect{cutAfter: -1, stallAfter: int(t.After), stallDelay: time.Duration(t.Delay) * time.Millisecond}
}
func (t *StreamStall) Pipe(stub *toxics.ToxicStub)    { run(stub, t.effect(), &t.picker) }
func (t *StreamStall) Cleanup(stub *toxics.ToxicStub) { cleanup(stub) }
func (t *StreamStall) NewState() any                  { return newConn() }
func (t *StreamStall) MarshalJSON() ([]byte, error) {
	return report(stallAttributes{t.After, t.Delay}, &t.picker)
}
func (t *StreamStall) UnmarshalJSON(data []byte) error {
	var a stallAttributes
	err := decode(data, &a, &t.picker, func() error {
		if a.After < 1 {
			return fmt.Errorf("after must be 1 or more (a stall before the first event is a latency toxic), not %d", a.After)
		}
		return nonNegative("delay", a.Delay)
	})
	t.After, t.Delay = a.After, a.Delay
	return err
}

// StreamSlow adds `delay` ms after every event of a picked response.
type StreamSlow struct {
	picker
	Delay int64 `json:"delay"`
}

type slowAttributes struct {
	Delay int64 `json:"delay"`
}

func (t *StreamSlow) effect() *effect {
	return &effect{cutAfter: -1, stallAfter: -1, slowDelay: time.Duration(t.Delay) * time.Millisecond}
}
func (t *StreamSlow) Pipe(stub *toxics.ToxicStub)    { run(stub, t.effect(), &t.picker) }
func (t *StreamSlow) Cleanup(stub *toxics.ToxicStub) { cleanup(stub) }
func (t *StreamSlow) NewState() any                  { return newConn() }
func (t *StreamSlow) MarshalJSON() ([]byte, error) {
	return report(slowAttributes{t.Delay}, &t.picker)
}
func (t *StreamSlow) UnmarshalJSON(data []byte) error {
	var a slowAttributes
	err := decode(data, &a, &t.picker, func() error { return nonNegative("delay", a.Delay) })
	t.Delay = a.Delay
	return err
}

// StreamCorrupt damages event `event` (1-based) of a picked response: its data's first byte
// becomes `}` (malformed JSON, `json`) or 0xFF (invalid UTF-8, `utf8`). Same length.
type StreamCorrupt struct {
	picker
	Event int64  `json:"event"`
	Mode  string `json:"mode"`
}

type corruptAttributes struct {
	Event int64  `json:"event"`
	Mode  string `json:"mode"`
}

func (t *StreamCorrupt) effect() *effect {
	return &effect{cutAfter: -1, stallAfter: -1, corruptEvent: int(t.Event), corruptUTF8: t.Mode == "utf8"}
}
func (t *StreamCorrupt) Pipe(stub *toxics.ToxicStub)    { run(stub, t.effect(), &t.picker) }
func (t *StreamCorrupt) Cleanup(stub *toxics.ToxicStub) { cleanup(stub) }
func (t *StreamCorrupt) NewState() any                  { return newConn() }
func (t *StreamCorrupt) MarshalJSON() ([]byte, error) {
	return report(corruptAttributes{t.Event, t.Mode}, &t.picker)
}
func (t *StreamCorrupt) UnmarshalJSON(data []byte) error {
	a := corruptAttributes{Mode: "json"}
	err := decode(data, &a, &t.picker, func() error {
		if a.Event < 1 {
			return fmt.Errorf("event must be 1 or more, not %d", a.Event)
		}
		if a.Mode != "json" && a.Mode != "utf8" {
			return fmt.Errorf(`mode must be "json" or "utf8", not %q`, a.Mode)
		}
		return nil
	})
	t.Event, t.Mode = a.Event, a.Mode
	return err
}

// StreamDropDone removes the final event of a picked response: SSE `data: [DONE]` (OpenAI) or
// an `event: done` event (ichaos's native API) becomes comment lines; Ollama's NDJSON line
// with "done": true becomes a blank line.
type StreamDropDone struct {
	picker
}

func (t *StreamDropDone) effect() *effect {
	return &effect{cutAfter: -1, stallAfter: -1, dropDone: true}
}
func (t *StreamDropDone) Pipe(stub *toxics.ToxicStub)    { run(stub, t.effect(), &t.picker) }
func (t *StreamDropDone) Cleanup(stub *toxics.ToxicStub) { cleanup(stub) }
func (t *StreamDropDone) NewState() any                  { return newConn() }
func (t *StreamDropDone) MarshalJSON() ([]byte, error) {
	return report(struct{}{}, &t.picker)
}
func (t *StreamDropDone) UnmarshalJSON(data []byte) error {
	return decode(data, &struct{}{}, &t.picker, func() error { return nil })
}

// HTTPStatus answers a picked response with `status` (and `Retry-After: retry_after` seconds
// when given) and closes the connection. Any response is a candidate, streamed or not.
//
// The request has reached the upstream by then: a toxic sees one direction of one connection,
// and the upstream's response head is the first sign of a response there is to replace.
type HTTPStatus struct {
	picker
	Status     int64  `json:"status"`
	RetryAfter *int64 `json:"retry_after"`
}

type statusAttributes struct {
	Status     int64  `json:"status"`
	RetryAfter *int64 `json:"retry_after"`
}

func (t *HTTPStatus) effect() *effect {
	e := &effect{cutAfter: -1, stallAfter: -1, status: int(t.Status), anyResponse: true}
	if t.RetryAfter != nil {
		seconds := int(*t.RetryAfter)
		e.retryAfter = &seconds
	}
	return e
}
func (t *HTTPStatus) Pipe(stub *toxics.ToxicStub)    { run(stub, t.effect(), &t.picker) }
func (t *HTTPStatus) Cleanup(stub *toxics.ToxicStub) { cleanup(stub) }
func (t *HTTPStatus) NewState() any                  { return newConn() }
func (t *HTTPStatus) MarshalJSON() ([]byte, error) {
	return report(statusAttributes{t.Status, t.RetryAfter}, &t.picker)
}
func (t *HTTPStatus) UnmarshalJSON(data []byte) error {
	var a statusAttributes
	err := decode(data, &a, &t.picker, func() error {
		if a.Status < 400 || a.Status > 599 {
			return fmt.Errorf("status must be an error status (400-599), not %d", a.Status)
		}
		if a.RetryAfter != nil {
			return nonNegative("retry_after", *a.RetryAfter)
		}
		return nil
	})
	t.Status, t.RetryAfter = a.Status, a.RetryAfter
	return err
}

func init() {
	toxics.Register("stream_cut", new(StreamCut))
	toxics.Register("stream_stall", new(StreamStall))
	toxics.Register("stream_slow", new(StreamSlow))
	toxics.Register("stream_corrupt", new(StreamCorrupt))
	toxics.Register("stream_drop_done", new(StreamDropDone))
	toxics.Register("http_status", new(HTTPStatus))
}
