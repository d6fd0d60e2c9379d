package submission

import (
	"bufio"
	"bytes"
	"io"
	"strings"
)

// MaxHeaderSize bounds the header section (and so any one header line):
// the header is the only part of a message held in memory.
const MaxHeaderSize = 1000 * 1000

// maxNameScan is how far into a line we look for "name:" before deciding
// that the line is not a header field (RFC 5322 lines are at most 998).
const maxNameScan = 998

// field is one header field as read: its name as written and all its raw
// lines (continuations included), each ending in LF.
type field struct {
	name string
	raw  []byte
}

func (f *field) is(name string) bool { return strings.EqualFold(f.name, name) }

// value returns the unfolded field body after the colon.
func (f *field) value() string {
	v := f.raw[bytes.IndexByte(f.raw, ':')+1:]
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	return string(bytes.TrimSpace(v))
}

// lineKind says what a line at the current position of the header section is.
type lineKind int

const (
	undecided    lineKind = iota
	blankLine             // ends the header section
	dotLine               // "." alone: ends the input (without -i)
	continuation          // folded part of the previous field
	fieldLine             // "Name: value"
	mboxFrom              // "From sender date" of an mbox, first line only
	bodyLine              // anything else: the body starts here
	endOfInput
)

// headerReader reads the header section leniently: whatever is not a
// header field starts the body (Postfix does the same), nothing is fatal
// but size.
type headerReader struct {
	br      *bufio.Reader
	dotEnds bool
}

// read returns the fields of the header section and whether the input
// ended inside it (EOF or the dot line), in which case there is no body.
// The blank line ending the section is consumed; a body line that ended it
// is not.
func (r *headerReader) read() (fields []field, ended bool, err error) {
	size := 0
	for first := true; ; first = false {
		kind, nameLen, err := r.classify(first, len(fields) > 0)
		if err != nil {
			return nil, false, err
		}
		switch kind {
		case endOfInput:
			return fields, true, nil
		case blankLine:
			_, err := r.discardLine()
			return fields, false, err
		case dotLine:
			_, err := r.discardLine()
			return fields, true, err
		case bodyLine:
			return fields, false, nil
		case mboxFrom:
			if _, err := r.discardLine(); err != nil {
				return nil, false, err
			}
		case fieldLine, continuation:
			line, err := r.readLine(MaxHeaderSize - size)
			if err != nil {
				return nil, false, err
			}
			size += len(line)
			if kind == fieldLine {
				fields = append(fields, field{name: string(bytes.TrimRight(line[:nameLen], " \t")), raw: line})
			} else {
				last := &fields[len(fields)-1]
				last.raw = append(last.raw, line...)
			}
		}
	}
}

// classify looks at the start of the next line without consuming it. It
// peeks only at what it needs: a caller that sends "." and keeps its end
// of the pipe open must not leave us waiting for bytes that never come.
func (r *headerReader) classify(first, haveField bool) (lineKind, int, error) {
	n := 1
	for {
		b, err := r.br.Peek(n)
		eof := false
		if err != nil {
			if err != io.EOF {
				return 0, 0, &ReadError{Err: err}
			}
			eof = true
		}
		kind, nameLen := classifyLine(b, eof, first, haveField, r.dotEnds)
		if kind != undecided {
			return kind, nameLen, nil
		}
		if len(b) >= maxNameScan {
			return bodyLine, 0, nil
		}
		n = max(len(b)+1, r.br.Buffered())
		n = min(n, maxNameScan)
	}
}

// classifyLine decides what the line starting with b is, or says undecided
// when b (not all of the line, not at EOF) is too short to tell.
func classifyLine(b []byte, eof, first, haveField, dotEnds bool) (lineKind, int) {
	if len(b) == 0 {
		if eof {
			return endOfInput, 0
		}
		return undecided, 0
	}
	switch {
	case b[0] == '\n':
		return blankLine, 0
	case b[0] == '\r':
		if len(b) == 1 && !eof {
			return undecided, 0
		}
		if len(b) == 1 || b[1] == '\n' {
			return blankLine, 0
		}
		return bodyLine, 0
	case b[0] == ' ' || b[0] == '\t':
		if haveField {
			return continuation, 0
		}
		return bodyLine, 0
	}
	if dotEnds && b[0] == '.' {
		switch {
		case bytes.HasPrefix(b, []byte(".\n")), bytes.HasPrefix(b, []byte(".\r\n")):
			return dotLine, 0
		case eof && (len(b) == 1 || string(b) == ".\r"):
			return dotLine, 0
		case !eof && (len(b) == 1 || string(b) == ".\r"):
			return undecided, 0
		}
	}
	// A field name is printable ASCII without ':' (RFC 5322 ftext); the
	// obsolete syntax allows white space before the colon.
	name := 0
	for name < len(b) && b[name] > ' ' && b[name] < 0x7f && b[name] != ':' {
		name++
	}
	i := name
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	switch {
	case i == len(b):
		if eof {
			return bodyLine, 0
		}
		return undecided, 0
	case b[i] == ':' && name > 0:
		return fieldLine, i
	case first && bytes.HasPrefix(b, []byte("From ")):
		return mboxFrom, 0 // "From sender date": not a field, so not "From :"
	}
	return bodyLine, 0
}

// readLine reads one whole line of at most limit bytes and returns it with
// its line end made LF (a missing one added at EOF).
func (r *headerReader) readLine(limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(line)+len(chunk) > limit {
			if limit == MaxHeaderSize || len(line)+len(chunk) > MaxHeaderSize {
				return nil, &Error{Kind: BadMessage, Msg: "a header line is longer than 1 MB; refusing the message"}
			}
			return nil, &Error{Kind: BadMessage, Msg: "the header section is larger than 1 MB; refusing the message"}
		}
		line = append(line, chunk...)
		switch err {
		case nil:
			if bytes.HasSuffix(line, []byte("\r\n")) {
				line = append(line[:len(line)-2], '\n')
			}
			return line, nil
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
			return append(line, '\n'), nil
		default:
			return nil, &ReadError{Err: err}
		}
	}
}

// discardLine consumes one line, however long, without keeping it.
func (r *headerReader) discardLine() (int, error) {
	n := 0
	for {
		chunk, err := r.br.ReadSlice('\n')
		n += len(chunk)
		switch err {
		case nil, io.EOF:
			return n, nil
		case bufio.ErrBufferFull:
			continue
		default:
			return n, &ReadError{Err: err}
		}
	}
}
