package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// chunked frames each event as one HTTP chunk, as a server that flushes per event does.
func chunked(contentType string, events ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n", contentType)
	for _, e := range events {
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(e), e)
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

var openai = []string{
	"data: {\"choices\":[{\"text\":\"a\"}]}\n\n",
	"data: {\"choices\":[{\"text\":\"b\"}]}\n\n",
	"data: {\"choices\":[{\"text\":\"c\",\"finish_reason\":\"length\"}]}\n\n",
	"data: [DONE]\n\n",
}

// drive feeds `input` in pieces of `size` bytes and returns the ops' bytes, with "|WAIT|"
// where a wait was and "|CLOSE|" where the connection closed.
func drive(e *effect, always bool, size int, inputs ...string) string {
	c := newConn()
	pick := func() bool { return always }
	var out strings.Builder
	for _, input := range inputs {
		for i := 0; i < len(input); i += size {
			end := min(i+size, len(input))
			c.feed(e, pick, []byte(input[i:end]))
		}
	}
	c.eof(e)
	for _, o := range c.pending {
		switch {
		case o.close:
			out.WriteString("|CLOSE|")
		case o.wait > 0:
			out.WriteString("|WAIT|")
		default:
			out.Write(o.data)
		}
	}
	return out.String()
}

func sizes(t *testing.T, check func(t *testing.T, size int)) {
	for _, size := range []int{1, 3, 7, 64, 100000} {
		t.Run(fmt.Sprintf("reads of %d bytes", size), func(t *testing.T) { check(t, size) })
	}
}

func TestNotPickedPassesEveryByte(t *testing.T) {
	input := chunked("text/event-stream", openai...) + chunked("text/event-stream", openai...)
	sizes(t, func(t *testing.T, size int) {
		e := &effect{cutAfter: 1, stallAfter: -1}
		if got := drive(e, false, size, input); got != input {
			t.Fatalf("changed:\n%q\n%q", got, input)
		}
	})
}

func TestCutAfterTwoEvents(t *testing.T) {
	input := chunked("text/event-stream", openai...)
	want := input[:strings.Index(input, openai[1])+len(openai[1])] + "|CLOSE|"
	sizes(t, func(t *testing.T, size int) {
		got := drive(&effect{cutAfter: 2, stallAfter: -1}, true, size, input)
		if got != want {
			t.Fatalf("got\n%q\nwant\n%q", got, want)
		}
	})
}

func TestCutAfterZeroEventsSendsTheHeadOnly(t *testing.T) {
	input := chunked("text/event-stream", openai...)
	head := input[:strings.Index(input, "\r\n\r\n")+4]
	if got := drive(&effect{cutAfter: 0, stallAfter: -1}, true, 5, input); got != head+"|CLOSE|" {
		t.Fatalf("got %q", got)
	}
}

func TestJSONResponsesAreNeverPickedByStreamToxics(t *testing.T) {
	body := `{"choices":[{"text":"abc"}]}`
	input := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	if got := drive(&effect{cutAfter: 0, stallAfter: -1}, true, 4, input+input); got != input+input {
		t.Fatalf("got %q", got)
	}
}

func TestStallWaitsAfterTheEvent(t *testing.T) {
	input := chunked("text/event-stream", openai...)
	at := strings.Index(input, openai[0]) + len(openai[0])
	want := input[:at] + "|WAIT|" + input[at:]
	sizes(t, func(t *testing.T, size int) {
		got := drive(&effect{cutAfter: -1, stallAfter: 1, stallDelay: time.Second}, true, size, input)
		if got != want {
			t.Fatalf("got\n%q\nwant\n%q", got, want)
		}
	})
}

func TestSlowWaitsAfterEveryEvent(t *testing.T) {
	input := chunked("text/event-stream", openai...)
	got := drive(&effect{cutAfter: -1, stallAfter: -1, slowDelay: time.Millisecond}, true, 9, input)
	if n := strings.Count(got, "|WAIT|"); n != len(openai) {
		t.Fatalf("%d waits, want %d: %q", n, len(openai), got)
	}
	if strings.ReplaceAll(got, "|WAIT|", "") != input {
		t.Fatalf("bytes changed: %q", got)
	}
}

func TestCorruptIsSameLengthAndHitsTheNamedEvent(t *testing.T) {
	input := chunked("text/event-stream", openai...)
	sizes(t, func(t *testing.T, size int) {
		for _, utf8 := range []bool{false, true} {
			got := drive(&effect{cutAfter: -1, stallAfter: -1, corruptEvent: 2, corruptUTF8: utf8}, true, size, input)
			if len(got) != len(input) {
				t.Fatalf("length %d, want %d", len(got), len(input))
			}
			at := strings.Index(input, openai[1]) + len("data: ")
			bad := byte('}')
			if utf8 {
				bad = 0xff
			}
			if got[at] != bad || got[:at] != input[:at] || got[at+1:] != input[at+1:] {
				t.Fatalf("got %q", got)
			}
		}
	})
}

func TestDropDoneMakesTheFinalEventComments(t *testing.T) {
	input := chunked("text/event-stream", openai...)
	want := strings.Replace(input, "data: [DONE]", ":ata: [DONE]", 1)
	sizes(t, func(t *testing.T, size int) {
		if got := drive(&effect{cutAfter: -1, stallAfter: -1, dropDone: true}, true, size, input); got != want {
			t.Fatalf("got %q", got)
		}
	})
	native := chunked("text/event-stream; charset=utf-8",
		"event: token\ndata: {\"text\": \"a\"}\n\n", "event: done\ndata: {\"tokens\": 1}\n\n")
	wantNative := strings.Replace(native, "event: done\ndata:", ":vent: done\n:ata:", 1)
	if got := drive(&effect{cutAfter: -1, stallAfter: -1, dropDone: true}, true, 2, native); got != wantNative {
		t.Fatalf("native: got %q", got)
	}
}

func TestDropDoneBlanksOllamasFinalLine(t *testing.T) {
	lines := []string{"{\"response\":\"a\",\"done\":false}\n", "{\"response\":\"\",\"done\":true}\n"}
	input := chunked("application/x-ndjson", lines...)
	want := strings.Replace(input, strings.TrimSuffix(lines[1], "\n"), strings.Repeat(" ", len(lines[1])-1), 1)
	if got := drive(&effect{cutAfter: -1, stallAfter: -1, dropDone: true}, true, 3, input); got != want {
		t.Fatalf("got %q", got)
	}
}

func TestStatusReplacesTheResponseAndCloses(t *testing.T) {
	first := chunked("text/event-stream", openai...)
	retry := 2
	e := &effect{cutAfter: -1, stallAfter: -1, status: 503, retryAfter: &retry, anyResponse: true}
	sizes(t, func(t *testing.T, size int) {
		c := newConn()
		n := 0
		pick := func() bool { n++; return n == 2 } // the second response on the connection
		input := first + first
		for i := 0; i < len(input); i += size {
			c.feed(e, pick, []byte(input[i:min(i+size, len(input))]))
		}
		var out bytes.Buffer
		closed := false
		for _, o := range c.pending {
			if o.close {
				closed = true
				break
			}
			out.Write(o.data)
		}
		got := out.String()
		if !closed || !strings.HasPrefix(got, first) {
			t.Fatalf("got %q", got)
		}
		answer := got[len(first):]
		if !strings.HasPrefix(answer, "HTTP/1.1 503 Service Unavailable\r\n") || !strings.Contains(answer, "Retry-After: 2\r\n") {
			t.Fatalf("answer %q", answer)
		}
	})
}

func TestJoinedMidResponseWaitsForTheNextHead(t *testing.T) {
	input := chunked("text/event-stream", openai...)
	mid := input[len(input)/2:]
	got := drive(&effect{cutAfter: 1, stallAfter: -1}, true, 100000, mid, input)
	want := mid + input[:strings.Index(input, openai[0])+len(openai[0])] + "|CLOSE|"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestBodyToEOFAndContentLength(t *testing.T) {
	body := strings.Join(openai, "")
	eof := "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + body
	if got := drive(&effect{cutAfter: 1, stallAfter: -1}, true, 4, eof); got != eof[:strings.Index(eof, openai[1])]+"|CLOSE|" {
		t.Fatalf("eof: got %q", got)
	}
	length := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	got := drive(&effect{cutAfter: -1, stallAfter: -1, dropDone: true}, true, 6, length+length)
	if want := strings.ReplaceAll(length+length, "data: [DONE]", ":ata: [DONE]"); got != want {
		t.Fatalf("length: got %q", got)
	}
}
