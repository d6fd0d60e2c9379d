package submission

import (
	"bufio"
	"io"
	"strconv"
)

// sizeWriter counts what is stored, refuses to go past the size limit and
// notices 8-bit bytes on the way.
type sizeWriter struct {
	w        *bufio.Writer
	n, limit int64 // limit 0: none
	eightBit bool
}

func (s *sizeWriter) Write(p []byte) (int, error) {
	s.n += int64(len(p))
	if s.limit > 0 && s.n > s.limit {
		return 0, &Error{Kind: TooBig, Msg: "message exceeds max_message_size (" + formatSize(s.limit) + ")"}
	}
	if !s.eightBit {
		for _, c := range p {
			if c >= 0x80 {
				s.eightBit = true
				break
			}
		}
	}
	return s.w.Write(p)
}

var newline = []byte{'\n'}

// copyBody streams the body from br to w line by line in constant memory:
// CRLF becomes LF (a lone CR stays), a line holding only "." ends the input
// when dotEnds, a last line without a line end gets one. Lines of any
// length pass in pieces.
func copyBody(w io.Writer, br *bufio.Reader, dotEnds bool) error {
	atStart := true // at the beginning of a line
	heldCR := false // a CR ended the previous piece; an LF may follow
	for {
		piece, err := br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull && err != io.EOF {
			return &ReadError{Err: err}
		}
		if atStart && dotEnds && isDotLine(piece, err == io.EOF) {
			return nil
		}
		if n := len(piece); n > 0 && piece[n-1] == '\n' {
			content := piece[:n-1]
			switch {
			case len(content) > 0 && content[len(content)-1] == '\r':
				content = content[:len(content)-1]
			case len(content) == 0 && heldCR:
				heldCR = false // the held CR was the CR of this CRLF
			}
			if err := flushCR(w, &heldCR); err != nil {
				return err
			}
			if _, err := w.Write(content); err != nil {
				return err
			}
			if _, err := w.Write(newline); err != nil {
				return err
			}
			atStart = true
		} else if n > 0 {
			if err := flushCR(w, &heldCR); err != nil {
				return err
			}
			if piece[n-1] == '\r' {
				// Hold it: the LF of a CRLF may start the next piece. At
				// EOF it is the last line's end and is dropped below.
				piece, heldCR = piece[:n-1], true
			}
			if _, err := w.Write(piece); err != nil {
				return err
			}
			atStart = false
		}
		if err == io.EOF {
			if heldCR {
				atStart = false // a CR at EOF ends the last line
			}
			if !atStart {
				_, err := w.Write(newline)
				return err
			}
			return nil
		}
	}
}

func flushCR(w io.Writer, held *bool) error {
	if !*held {
		return nil
	}
	*held = false
	_, err := w.Write([]byte{'\r'})
	return err
}

// isDotLine reports whether a whole line (as ReadSlice returned it) is the
// end-of-input marker ".".
func isDotLine(line []byte, eof bool) bool {
	switch string(line) {
	case ".\n", ".\r\n":
		return true
	case ".", ".\r":
		return eof
	}
	return false
}

// formatSize writes a byte count the way the configuration takes it.
func formatSize(n int64) string {
	switch {
	case n%1000000 == 0:
		return strconv.FormatInt(n/1000000, 10) + " MB"
	case n%(1<<20) == 0:
		return strconv.FormatInt(n/(1<<20), 10) + " MiB"
	case n%1000 == 0:
		return strconv.FormatInt(n/1000, 10) + " kB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
