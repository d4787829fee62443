package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// effect is what one toxic does to a response it picked. Only the fields of its kind are set.
type effect struct {
	cutAfter     int           // close after this many events (-1: no cut)
	stallAfter   int           // wait stallDelay after this many events (-1: no stall)
	stallDelay   time.Duration // with stallAfter
	slowDelay    time.Duration // wait this long after every event
	corruptEvent int           // 1-based; 0: none
	corruptUTF8  bool          // else malformed JSON
	dropDone     bool          // the final event becomes comment lines
	status       int           // answer with this status instead (0: none)
	retryAfter   *int          // with status: a Retry-After header
	anyResponse  bool          // every response is a candidate, not only event streams
}

// op is one step of what the connection's output gets: bytes, a wait, or the end.
type op struct {
	data  []byte
	wait  time.Duration
	close bool
}

type phase int

const (
	phaseHead      phase = iota // reading a response head
	phaseUnsynced               // joined mid-response: pass bytes until a chunk starts a head
	phaseChunkSize              // chunked body: a size line
	phaseChunkData
	phaseChunkEnd // the CRLF after a chunk's data
	phaseTrailer  // after the last chunk: trailer lines up to an empty one
	phaseLength   // a Content-Length body
	phaseToEOF    // a body that ends with the connection
	phaseGone     // the connection was cut or answered: drop everything
)

type streamKind int

const (
	kindNone streamKind = iota
	kindSSE
	kindNDJSON
)

// conn is one connection's state: the response framing, the picked response's event count and
// what is held back. It survives interrupts (toxics added or removed on the same link), so a
// response is never judged twice or lost.
type conn struct {
	phase     phase
	line      []byte // a head line, a chunk-size line or a trailer line in progress
	head      []string
	left      int64 // bytes left in a chunk or a Content-Length body
	kind      streamKind
	picked    bool // this response gets the effect
	events    int  // events completed in the picked response
	inEvent   bool // an SSE event has begun (a non-empty line since the last blank one)
	isDone    bool // the SSE event in progress is the stream's final one
	corrupted bool
	headAt    int // where the head in progress starts in held

	// held: raw bytes not yet passed on; the current body line starts at held[lineAt] and its
	// content bytes lie at held[pos] for pos in linePos (chunk framing may sit between them).
	held    []byte
	linePos []int
	emitted int // held[:emitted] were already turned into ops

	pending   []op
	waitUntil time.Time // the wait in progress, when one was interrupted
}

func newConn() *conn { return &conn{phase: phaseHead} }

// feed takes the next bytes from the upstream and returns what to send on, in order.
func (c *conn) feed(e *effect, pick func() bool, data []byte) {
	if c.phase == phaseGone {
		return
	}
	if c.phase == phaseUnsynced && bytes.HasPrefix(data, []byte("HTTP/1.")) {
		c.phase = phaseHead
	}
	start := len(c.held)
	c.held = append(c.held, data...)
	for i := start; i < len(c.held) && c.phase != phaseGone; i++ {
		c.step(e, pick, i)
	}
	c.flush(e)
}

// eof: the upstream closed. A body that ends with the connection ends here; its last line,
// if it has no newline, is still a line.
func (c *conn) eof(e *effect) {
	if c.phase == phaseToEOF && c.picked && len(c.linePos) > 0 {
		c.endLine(e, len(c.held))
	}
	c.linePos = nil
	c.flush(e)
}

// flush turns every held byte that no later decision can change into an op: all of them,
// except the body line in progress of a picked response.
func (c *conn) flush(e *effect) {
	if c.phase == phaseGone {
		c.held = c.held[:0]
		c.emitted = 0
		return
	}
	keep := len(c.held)
	if c.picked && len(c.linePos) > 0 {
		keep = c.linePos[0]
	}
	headGoing := c.phase == phaseHead && (len(c.line) > 0 || len(c.head) > 0)
	if e.status != 0 && headGoing {
		keep = c.headAt // the head may yet be replaced
	}
	c.emitTo(keep)
	// Drop what was sent; keep the line in progress, its positions rebased.
	if c.emitted > 0 {
		c.held = append(c.held[:0], c.held[c.emitted:]...)
		for i := range c.linePos {
			c.linePos[i] -= c.emitted
		}
		c.headAt -= c.emitted
		c.emitted = 0
	}
}

func (c *conn) emitTo(end int) {
	if end > c.emitted {
		c.pending = append(c.pending, op{data: append([]byte(nil), c.held[c.emitted:end]...)})
		c.emitted = end
	}
}

func (c *conn) step(e *effect, pick func() bool, i int) {
	b := c.held[i]
	switch c.phase {
	case phaseUnsynced, phaseGone:
		return
	case phaseHead:
		if len(c.line) == 0 && len(c.head) == 0 {
			c.headAt = i
		}
		c.line = append(c.line, b)
		if len(c.head) == 0 && len(c.line) <= 5 && !bytes.HasPrefix([]byte("HTTP/"), c.line) {
			c.phase = phaseUnsynced // not the start of a response: joined mid-way
			c.line = c.line[:0]
			return
		}
		if b != '\n' {
			return
		}
		text := strings.TrimRight(string(c.line), "\r\n")
		c.line = c.line[:0]
		if text != "" {
			c.head = append(c.head, text)
			return
		}
		c.startBody(e, pick, i)
	case phaseChunkSize:
		c.line = append(c.line, b)
		if b != '\n' {
			return
		}
		size := strings.TrimSpace(strings.SplitN(string(c.line), ";", 2)[0])
		c.line = c.line[:0]
		n, err := strconv.ParseInt(size, 16, 64)
		switch {
		case err != nil || n < 0:
			c.phase = phaseUnsynced // not HTTP as we know it: pass it on untouched
		case n == 0:
			c.phase = phaseTrailer
		default:
			c.left, c.phase = n, phaseChunkData
		}
	case phaseChunkData:
		c.left--
		if c.bodyByte(e, i); c.left == 0 && c.phase == phaseChunkData {
			c.phase = phaseChunkEnd
		}
	case phaseChunkEnd:
		if b == '\n' {
			c.phase = phaseChunkSize
		}
	case phaseTrailer:
		c.line = append(c.line, b)
		if b != '\n' {
			return
		}
		empty := strings.TrimRight(string(c.line), "\r\n") == ""
		c.line = c.line[:0]
		if empty {
			c.endResponse(e, i+1)
		}
	case phaseLength:
		c.left--
		if c.bodyByte(e, i); c.left == 0 && c.phase == phaseLength {
			c.endResponse(e, i+1)
		}
	case phaseToEOF:
		c.bodyByte(e, i)
	}
}

// startBody: the head ended at held[i]. Decide whether this response is picked and how its
// body is framed.
func (c *conn) startBody(e *effect, pick func() bool, i int) {
	head := c.head
	c.head = nil
	status, headers := parseHead(head)
	if status >= 100 && status < 200 {
		return // an interim response; the real one follows
	}
	c.kind = kindOf(headers["content-type"])
	c.events, c.inEvent, c.isDone, c.corrupted = 0, false, false, false
	c.picked = (c.kind != kindNone || e.anyResponse) && status != 0 && pick()
	chunked := strings.Contains(strings.ToLower(headers["transfer-encoding"]), "chunked")
	length, hasLength := int64(-1), false
	if v, ok := headers["content-length"]; ok {
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n >= 0 {
			length, hasLength = n, true
		}
	}
	if c.picked && e.status != 0 {
		// The head is not sent: held[:headAt] is what came before it on this connection.
		c.emitTo(c.headAt)
		c.pending = append(c.pending, op{data: statusResponse(e.status, e.retryAfter)}, op{close: true})
		c.phase = phaseGone
		return
	}
	switch {
	case status == 204 || status == 304:
		c.endResponse(e, i+1)
	case chunked:
		c.phase = phaseChunkSize
	case hasLength && length == 0:
		c.endResponse(e, i+1)
	case hasLength:
		c.left, c.phase = length, phaseLength
	default:
		c.phase = phaseToEOF
	}
	if c.picked && c.phase != phaseHead && e.cutAfter == 0 {
		c.cut(i + 1)
	}
}

func (c *conn) endResponse(e *effect, end int) {
	if c.picked && len(c.linePos) > 0 { // a last line without a newline
		c.endLine(e, end)
	}
	c.picked, c.linePos, c.phase, c.kind = false, nil, phaseHead, kindNone
}

func (c *conn) bodyByte(e *effect, i int) {
	if !c.picked || c.kind == kindNone {
		return
	}
	c.linePos = append(c.linePos, i)
	if c.held[i] == '\n' {
		c.endLine(e, i+1)
	}
}

// endLine: a body line of the picked response is complete (its last raw byte is held[end-1]).
func (c *conn) endLine(e *effect, end int) {
	pos := c.linePos
	c.linePos = nil
	text := make([]byte, len(pos))
	for k, p := range pos {
		text[k] = c.held[p]
	}
	content := bytes.TrimRight(text, "\r\n")
	eventEnded := false
	switch c.kind {
	case kindSSE:
		if len(content) == 0 {
			eventEnded, c.inEvent = c.inEvent, false
		} else {
			if !c.inEvent {
				c.inEvent, c.isDone = true, false
			}
			if bytes.Equal(content, []byte("event: done")) || bytes.Equal(content, []byte("event:done")) ||
				bytes.Equal(bytes.TrimSpace(bytes.TrimPrefix(content, []byte("data:"))), []byte("[DONE]")) {
				c.isDone = true
			}
		}
		if c.isDone && e.dropDone && len(content) > 0 {
			c.held[pos[0]] = ':' // a comment line: clients ignore it, so the event never happens
		}
		if !eventEnded && c.events+1 == e.corruptEvent && len(content) > 0 && bytes.HasPrefix(content, []byte("data:")) {
			at := len("data:")
			if len(content) > at && content[at] == ' ' {
				at++
			}
			if at < len(content) {
				c.corrupt(e, pos[at])
			}
		}
	case kindNDJSON:
		if len(bytes.TrimSpace(content)) == 0 {
			break
		}
		eventEnded = true
		if e.dropDone && ndjsonDone(content) {
			for k := range content {
				c.held[pos[k]] = ' ' // same length, so the framing holds; a blank line
			}
		}
		if c.events+1 == e.corruptEvent {
			c.corrupt(e, pos[0])
		}
	}
	if !eventEnded {
		return
	}
	c.events++
	switch {
	case c.events == e.cutAfter:
		c.cut(end)
	case c.events == e.stallAfter:
		c.emitTo(end)
		c.pending = append(c.pending, op{wait: e.stallDelay})
	case e.slowDelay > 0:
		c.emitTo(end)
		c.pending = append(c.pending, op{wait: e.slowDelay})
	}
}

// corrupt damages one byte, once per response (an event may have several data lines).
func (c *conn) corrupt(e *effect, at int) {
	if c.corrupted {
		return
	}
	c.corrupted = true
	if e.corruptUTF8 {
		c.held[at] = 0xff // never valid in UTF-8
	} else {
		c.held[at] = '}' // a JSON text never starts with a closing brace
	}
}

// cut: everything up to held[end] goes on, then the connection closes and the rest is dropped.
func (c *conn) cut(end int) {
	c.linePos = nil
	c.emitTo(end)
	c.pending = append(c.pending, op{close: true})
	c.phase = phaseGone
}

func parseHead(lines []string) (int, map[string]string) {
	headers := map[string]string{}
	if len(lines) == 0 {
		return 0, headers
	}
	parts := strings.Fields(lines[0])
	status := 0
	if len(parts) >= 2 && strings.HasPrefix(parts[0], "HTTP/1.") {
		status, _ = strconv.Atoi(parts[1])
	}
	for _, line := range lines[1:] {
		name, value, ok := strings.Cut(line, ":")
		if ok {
			headers[strings.ToLower(strings.TrimSpace(name))] = strings.TrimSpace(value)
		}
	}
	return status, headers
}

func kindOf(contentType string) streamKind {
	media := strings.ToLower(strings.TrimSpace(strings.SplitN(contentType, ";", 2)[0]))
	switch media {
	case "text/event-stream":
		return kindSSE
	case "application/x-ndjson", "application/jsonl", "application/jsonlines", "application/json-seq":
		return kindNDJSON
	}
	return kindNone
}

// ndjsonDone: Ollama's final line says {"done": true}.
func ndjsonDone(line []byte) bool {
	var data struct {
		Done bool `json:"done"`
	}
	return json.Unmarshal(line, &data) == nil && data.Done
}

func statusResponse(status int, retryAfter *int) []byte {
	body := fmt.Sprintf(`{"error":{"message":"injected by ichaos: HTTP %d","type":"ichaos_injected","code":%d}}`, status, status)
	var head strings.Builder
	fmt.Fprintf(&head, "HTTP/1.1 %d %s\r\n", status, reason(status))
	head.WriteString("Content-Type: application/json\r\n")
	fmt.Fprintf(&head, "Content-Length: %d\r\n", len(body))
	if retryAfter != nil {
		fmt.Fprintf(&head, "Retry-After: %d\r\n", *retryAfter)
	}
	head.WriteString("X-Ichaos-Injected: http_status\r\nConnection: close\r\n\r\n")
	return append([]byte(head.String()), body...)
}

func reason(status int) string {
	switch status {
	case 429:
		return "Too Many Requests"
	case 500:
		return "Internal Server Error"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	}
	return "Error"
}
